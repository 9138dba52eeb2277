-- Ferry shared mode: Kafka transactions. A transactional id's state is a row written by
-- the node holding the lease ('transaction', id); the partitions a transaction added,
-- and where its records begin in each, are rows the sequencer (ferry_commit_object)
-- reads and changes in the same transaction as the appends, so that no batch of a
-- transaction is appended once its end was decided, and every partition's last stable
-- offset and aborted transactions are exact.

-- The first offset of the partition's earliest open transaction, NULL when none is
-- open: the last stable offset is coalesce(first_open, next_offset).
ALTER TABLE ferry_partitions ADD COLUMN first_open bigint
    CHECK (first_open IS NULL OR (first_open >= 0 AND first_open <= next_offset));

-- One row per transactional id: the producer it names, the epoch and status the
-- sequencer checks, and the whole state (JSON) the coordinator reads back.
CREATE TABLE ferry_transactions (
    txn_id      text     PRIMARY KEY,
    producer_id bigint   NOT NULL UNIQUE,
    epoch       smallint NOT NULL,
    status      text     NOT NULL,
    state       jsonb    NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ferry_transactions_unfinished ON ferry_transactions (txn_id)
    WHERE status IN ('ongoing', 'prepare_commit', 'prepare_abort');

-- The partitions an ongoing (or ending) transaction added, with the offset of its first
-- batch there (NULL before it wrote one). A marker takes the row away.
CREATE TABLE ferry_txn_partitions (
    topic_id     text    NOT NULL,
    partition    integer NOT NULL,
    producer_id  bigint  NOT NULL,
    first_offset bigint  CHECK (first_offset IS NULL OR first_offset >= 0),
    PRIMARY KEY (topic_id, partition, producer_id),
    FOREIGN KEY (topic_id, partition) REFERENCES ferry_partitions ON DELETE CASCADE
);
CREATE INDEX ferry_txn_partitions_by_producer ON ferry_txn_partitions (producer_id);

-- Aborted transactions per partition: a read_committed reader skips the producer's
-- transactional records from first_offset up to the ABORT marker at last_offset.
CREATE TABLE ferry_txn_aborted (
    topic_id     text    NOT NULL,
    partition    integer NOT NULL,
    producer_id  bigint  NOT NULL,
    first_offset bigint  NOT NULL,
    last_offset  bigint  NOT NULL CHECK (last_offset >= first_offset),
    PRIMARY KEY (topic_id, partition, last_offset),
    FOREIGN KEY (topic_id, partition) REFERENCES ferry_partitions ON DELETE CASCADE
);

-- Offsets a transaction commits for consumer groups (TxnOffsetCommit, taken by the
-- group's coordinator), moved into ferry_group_offsets when the transaction commits
-- and dropped when it aborts.
CREATE TABLE ferry_txn_offsets (
    producer_id      bigint  NOT NULL,
    group_id         text    NOT NULL,
    topic            text    NOT NULL,
    partition        integer NOT NULL CHECK (partition >= 0),
    committed_offset bigint  NOT NULL,
    metadata         text,
    leader_epoch     integer,
    PRIMARY KEY (producer_id, group_id, topic, partition)
);

-- Stores a transactional id's state under the lease (p_node, p_epoch); false, with
-- nothing written, once that lease is no longer held. While the transaction is
-- ongoing, the partitions it added (p_topics, p_partitions; those that no longer exist
-- are skipped) become rows the sequencer admits its batches to. When it completes, the
-- offsets it staged are committed (complete_commit) or dropped (complete_abort), in the
-- same transaction. When the id moves to a new producer id, what the old one left
-- goes.
CREATE FUNCTION ferry_save_transaction(
    p_txn text, p_node integer, p_epoch bigint,
    p_producer bigint, p_producer_epoch smallint, p_status text, p_state text,
    p_topics text[], p_partitions integer[]
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    old_producer bigint;
BEGIN
    IF NOT ferry_holds_lease('transaction', p_txn, p_node, p_epoch) THEN
        RETURN false;
    END IF;
    SELECT t.producer_id INTO old_producer FROM ferry_transactions t
     WHERE t.txn_id = p_txn FOR UPDATE;
    IF old_producer IS NOT NULL AND old_producer <> p_producer THEN
        DELETE FROM ferry_txn_partitions WHERE producer_id = old_producer;
        DELETE FROM ferry_txn_offsets WHERE producer_id = old_producer;
    END IF;
    INSERT INTO ferry_transactions AS t (txn_id, producer_id, epoch, status, state)
    VALUES (p_txn, p_producer, p_producer_epoch, p_status, p_state::jsonb)
    ON CONFLICT (txn_id) DO UPDATE
       SET producer_id = EXCLUDED.producer_id, epoch = EXCLUDED.epoch,
           status = EXCLUDED.status, state = EXCLUDED.state, updated_at = now();
    IF p_status = 'ongoing' THEN
        INSERT INTO ferry_txn_partitions (topic_id, partition, producer_id)
        SELECT u.t, u.p, p_producer
          FROM unnest(p_topics, p_partitions) AS u(t, p)
          JOIN ferry_partitions fp ON fp.topic_id = u.t AND fp.partition = u.p
        ON CONFLICT DO NOTHING;
    ELSIF p_status = 'complete_commit' THEN
        INSERT INTO ferry_group_offsets
            (group_id, topic, partition, committed_offset, metadata, leader_epoch)
        SELECT o.group_id, o.topic, o.partition, o.committed_offset, o.metadata, o.leader_epoch
          FROM ferry_txn_offsets o WHERE o.producer_id = p_producer
        ON CONFLICT (group_id, topic, partition) DO UPDATE
           SET committed_offset = EXCLUDED.committed_offset,
               metadata = EXCLUDED.metadata,
               leader_epoch = EXCLUDED.leader_epoch;
        DELETE FROM ferry_txn_offsets WHERE producer_id = p_producer;
    ELSIF p_status IN ('complete_abort', 'empty') THEN
        DELETE FROM ferry_txn_offsets WHERE producer_id = p_producer;
    END IF;
    RETURN true;
END $$;

-- Stages offsets of group p_group for the ongoing transaction of producer p_producer at
-- p_producer_epoch (TxnOffsetCommit), which must have added the group. Answers
-- 0 staged, 3 stale epoch (a fenced producer), 5 no such ongoing transaction or group.
CREATE FUNCTION ferry_stage_txn_offsets(
    p_producer bigint, p_producer_epoch smallint, p_group text,
    p_topics text[], p_partitions integer[], p_offsets bigint[],
    p_metadata text[], p_leader_epochs integer[]
) RETURNS smallint LANGUAGE plpgsql AS $$
DECLARE
    txn record;
BEGIN
    SELECT t.epoch, t.status, t.state INTO txn FROM ferry_transactions t
     WHERE t.producer_id = p_producer FOR SHARE;
    IF NOT FOUND THEN
        RETURN 5;
    END IF;
    IF p_producer_epoch < txn.epoch THEN
        RETURN 3;
    END IF;
    IF p_producer_epoch <> txn.epoch OR txn.status <> 'ongoing'
       OR NOT coalesce(txn.state -> 'offsets' ? p_group, false) THEN
        RETURN 5;
    END IF;
    INSERT INTO ferry_txn_offsets
        (producer_id, group_id, topic, partition, committed_offset, metadata, leader_epoch)
    SELECT p_producer, p_group, t, p, o, m, e
      FROM unnest(p_topics, p_partitions, p_offsets, p_metadata, p_leader_epochs)
           AS u(t, p, o, m, e)
    ON CONFLICT (producer_id, group_id, topic, partition) DO UPDATE
       SET committed_offset = EXCLUDED.committed_offset,
           metadata = EXCLUDED.metadata,
           leader_epoch = EXCLUDED.leader_epoch;
    RETURN 0;
END $$;

-- ferry_commit_object, now with each batch's kind (p_kind): 0 plain, 1 a transaction's
-- records, 2 a COMMIT marker, 3 an ABORT marker. Outcomes as before, and
--   5 a transaction's batch refused: its producer has no ongoing transaction at this
--     epoch holding the partition (base_offset -1)
--   6 a marker with no transaction of its producer open in the partition, or not of
--     the end decided for it at its epoch: nothing is appended (base_offset -1)
-- A transaction's first batch in a partition opens it there; a marker closes it (an
-- ABORT marker records the aborted range), and first_open follows.
DROP FUNCTION ferry_commit_object(text, bigint, text[], integer[], bigint[], integer[],
                                  integer[], bigint[], bigint[], smallint[], integer[]);
CREATE FUNCTION ferry_commit_object(
    p_object    text,
    p_deadline_ms bigint,
    p_topic     text[],
    p_partition integer[],
    p_position  bigint[],
    p_length    integer[],
    p_records   integer[],
    p_max_ts    bigint[],
    p_producer  bigint[],
    p_epoch     smallint[],
    p_first_seq integer[],
    p_kind      smallint[]
) RETURNS TABLE (item integer, base_offset bigint, outcome smallint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i          integer;
    cur_topic  text := NULL;
    cur_part   integer := NULL;
    next_off   bigint;
    start_off  bigint;
    open_first bigint;
    prod       record;
    txn        record;
    open_at    bigint;
    last_seq   integer;
    expected   integer;
    k          integer;
    found_at   bigint;
    n          integer := coalesce(array_length(p_topic, 1), 0);
BEGIN
    IF coalesce(array_length(p_partition, 1), 0) <> n OR coalesce(array_length(p_position, 1), 0) <> n
       OR coalesce(array_length(p_length, 1), 0) <> n OR coalesce(array_length(p_records, 1), 0) <> n
       OR coalesce(array_length(p_max_ts, 1), 0) <> n OR coalesce(array_length(p_producer, 1), 0) <> n
       OR coalesce(array_length(p_epoch, 1), 0) <> n OR coalesce(array_length(p_first_seq, 1), 0) <> n
       OR coalesce(array_length(p_kind, 1), 0) <> n THEN
        RAISE EXCEPTION 'ferry_commit_object: arrays of different lengths';
    END IF;
    DELETE FROM ferry_objects o
     WHERE o.object_key = p_object
       AND o.created_at > now() - make_interval(secs => p_deadline_ms / 1000.0);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'object % was not registered, or its commit deadline passed', p_object
              USING ERRCODE = 'P0001';
    END IF;
    FOR i IN SELECT s.i FROM generate_subscripts(p_topic, 1) AS s(i)
             ORDER BY p_topic[s.i], p_partition[s.i], s.i LOOP
        IF p_records[i] < 1 THEN
            RAISE EXCEPTION 'ferry_commit_object: item % has % records', i, p_records[i];
        END IF;
        IF p_kind[i] NOT BETWEEN 0 AND 3 THEN
            RAISE EXCEPTION 'ferry_commit_object: item % has kind %', i, p_kind[i];
        END IF;
        IF cur_topic IS DISTINCT FROM p_topic[i] OR cur_part IS DISTINCT FROM p_partition[i] THEN
            IF next_off IS NOT NULL AND next_off > start_off THEN
                UPDATE ferry_partitions SET next_offset = next_off, first_open = open_first
                 WHERE topic_id = cur_topic AND partition = cur_part;
                PERFORM pg_notify('ferry_appended', next_off || ' ' || cur_part || ' ' || cur_topic);
            END IF;
            cur_topic := p_topic[i];
            cur_part := p_partition[i];
            -- FOR NO KEY UPDATE: it orders appends as FOR UPDATE did, and lets a
            -- coordinator that holds a transaction's row add this partition to it
            -- (its reference takes a key-share lock here) instead of deadlocking with
            -- a commit that waits for that transaction's row.
            SELECT fp.next_offset, fp.first_open INTO next_off, open_first FROM ferry_partitions fp
             WHERE fp.topic_id = cur_topic AND fp.partition = cur_part FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                next_off := NULL;
            END IF;
            start_off := next_off;
        END IF;
        IF next_off IS NULL THEN
            item := i; base_offset := -1; outcome := 2; RETURN NEXT;
            CONTINUE;
        END IF;
        open_at := NULL;
        IF p_kind[i] = 1 THEN
            -- Read FOR SHARE: a coordinator ending the transaction waits for this commit,
            -- and a batch committed after the end was decided sees it.
            SELECT t.epoch, t.status INTO txn FROM ferry_transactions t
             WHERE t.producer_id = p_producer[i] FOR SHARE;
            IF NOT FOUND THEN
                item := i; base_offset := -1; outcome := 5; RETURN NEXT;
                CONTINUE;
            END IF;
            IF p_epoch[i] < txn.epoch THEN
                item := i; base_offset := -1; outcome := 3; RETURN NEXT;
                CONTINUE;
            END IF;
            IF p_epoch[i] <> txn.epoch OR txn.status <> 'ongoing' THEN
                item := i; base_offset := -1; outcome := 5; RETURN NEXT;
                CONTINUE;
            END IF;
            SELECT tp.first_offset INTO open_at FROM ferry_txn_partitions tp
             WHERE tp.topic_id = cur_topic AND tp.partition = cur_part
               AND tp.producer_id = p_producer[i] FOR UPDATE;
            IF NOT FOUND THEN
                item := i; base_offset := -1; outcome := 5; RETURN NEXT;
                CONTINUE;
            END IF;
        ELSIF p_kind[i] >= 2 THEN
            -- Only the marker of the decided end, at the transaction's epoch: a marker
            -- from a coordinator that lost the transaction meanwhile (its object
            -- committed late) must not close the producer's next transaction.
            SELECT t.epoch, t.status INTO txn FROM ferry_transactions t
             WHERE t.producer_id = p_producer[i] FOR SHARE;
            IF NOT FOUND OR txn.epoch <> p_epoch[i]
               OR txn.status <> (CASE WHEN p_kind[i] = 2 THEN 'prepare_commit' ELSE 'prepare_abort' END) THEN
                item := i; base_offset := -1; outcome := 6; RETURN NEXT;
                CONTINUE;
            END IF;
            DELETE FROM ferry_txn_partitions tp
             WHERE tp.topic_id = cur_topic AND tp.partition = cur_part
               AND tp.producer_id = p_producer[i]
            RETURNING tp.first_offset INTO open_at;
            IF NOT FOUND THEN
                item := i; base_offset := -1; outcome := 6; RETURN NEXT;
                CONTINUE;
            END IF;
            IF open_at IS NOT NULL THEN
                IF p_kind[i] = 3 THEN
                    INSERT INTO ferry_txn_aborted (topic_id, partition, producer_id, first_offset, last_offset)
                    VALUES (cur_topic, cur_part, p_producer[i], open_at, next_off);
                END IF;
                SELECT min(tp.first_offset) INTO open_first FROM ferry_txn_partitions tp
                 WHERE tp.topic_id = cur_topic AND tp.partition = cur_part;
            END IF;
        END IF;
        IF p_kind[i] <= 1 AND p_producer[i] >= 0 AND p_first_seq[i] >= 0 THEN
            SELECT * INTO prod FROM ferry_producers fp
             WHERE fp.producer_id = p_producer[i] AND fp.topic_id = cur_topic
               AND fp.partition = cur_part FOR UPDATE;
            -- The sequence number of the batch's last record (sequence numbers wrap to 0).
            last_seq := ((p_first_seq[i]::bigint + p_records[i] - 1) % 2147483648)::integer;
            IF FOUND THEN
                IF p_epoch[i] < prod.epoch THEN
                    item := i; base_offset := -1; outcome := 3; RETURN NEXT;
                    CONTINUE;
                END IF;
                IF p_epoch[i] = prod.epoch THEN
                    found_at := NULL;
                    FOR k IN 1 .. coalesce(array_length(prod.first_seqs, 1), 0) LOOP
                        IF prod.first_seqs[k] = p_first_seq[i] AND prod.last_seqs[k] = last_seq THEN
                            found_at := prod.base_offsets[k];
                        END IF;
                    END LOOP;
                    IF found_at IS NOT NULL THEN
                        item := i; base_offset := found_at; outcome := 1; RETURN NEXT;
                        CONTINUE;
                    END IF;
                    expected := ((prod.last_seqs[array_length(prod.last_seqs, 1)]::bigint + 1) % 2147483648)::integer;
                    IF p_first_seq[i] <> expected THEN
                        item := i; base_offset := -1; outcome := 4; RETURN NEXT;
                        CONTINUE;
                    END IF;
                    UPDATE ferry_producers fp SET
                        first_seqs = (fp.first_seqs || p_first_seq[i])[greatest(1, array_length(fp.first_seqs, 1) - 3):],
                        last_seqs = (fp.last_seqs || last_seq)[greatest(1, array_length(fp.last_seqs, 1) - 3):],
                        base_offsets = (fp.base_offsets || next_off)[greatest(1, array_length(fp.base_offsets, 1) - 3):],
                        updated_at = now()
                     WHERE fp.producer_id = p_producer[i] AND fp.topic_id = cur_topic AND fp.partition = cur_part;
                ELSE
                    -- A newer epoch starts its sequence numbers again at 0.
                    IF p_first_seq[i] <> 0 THEN
                        item := i; base_offset := -1; outcome := 4; RETURN NEXT;
                        CONTINUE;
                    END IF;
                    UPDATE ferry_producers fp SET epoch = p_epoch[i], first_seqs = ARRAY[p_first_seq[i]],
                        last_seqs = ARRAY[last_seq], base_offsets = ARRAY[next_off], updated_at = now()
                     WHERE fp.producer_id = p_producer[i] AND fp.topic_id = cur_topic AND fp.partition = cur_part;
                END IF;
            ELSE
                INSERT INTO ferry_producers (producer_id, topic_id, partition, epoch, first_seqs, last_seqs, base_offsets)
                VALUES (p_producer[i], cur_topic, cur_part, p_epoch[i], ARRAY[p_first_seq[i]], ARRAY[last_seq], ARRAY[next_off]);
            END IF;
        END IF;
        IF p_kind[i] = 1 AND open_at IS NULL THEN
            -- The transaction's first batch in this partition opens it here.
            UPDATE ferry_txn_partitions tp SET first_offset = next_off
             WHERE tp.topic_id = cur_topic AND tp.partition = cur_part
               AND tp.producer_id = p_producer[i];
            open_first := coalesce(open_first, next_off);
        END IF;
        INSERT INTO ferry_batches (topic_id, partition, base_offset, last_offset, max_timestamp, object_key, position, length)
        VALUES (cur_topic, cur_part, next_off, next_off + p_records[i] - 1, p_max_ts[i], p_object, p_position[i], p_length[i]);
        item := i; base_offset := next_off; outcome := 0; RETURN NEXT;
        next_off := next_off + p_records[i];
    END LOOP;
    IF next_off IS NOT NULL AND next_off > start_off THEN
        UPDATE ferry_partitions SET next_offset = next_off, first_open = open_first
         WHERE topic_id = cur_topic AND partition = cur_part;
        PERFORM pg_notify('ferry_appended', next_off || ' ' || cur_part || ' ' || cur_topic);
    END IF;
END
$$;
