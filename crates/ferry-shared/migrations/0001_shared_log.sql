-- Ferry shared mode: where each partition's batches live, and the sequencer that gives
-- them offsets. Applied once per database by ferry-shared (see src/meta.rs), in one
-- transaction under an advisory lock; never edited after it ships: a change is a new file.

-- One row per partition: the offset the next record gets, and the first offset still
-- readable. The row lock taken by ferry_commit_object orders every append to the
-- partition, whichever node makes it.
CREATE TABLE ferry_partitions (
    topic_id    text    NOT NULL,
    partition   integer NOT NULL CHECK (partition >= 0),
    next_offset bigint  NOT NULL DEFAULT 0 CHECK (next_offset >= 0),
    log_start   bigint  NOT NULL DEFAULT 0 CHECK (log_start >= 0 AND log_start <= next_offset),
    PRIMARY KEY (topic_id, partition)
);

-- One row per stored batch: its offsets and the byte range of the object holding it.
-- The object keeps the batch as its producer sent it; its base offset field is set from
-- this row when it is read (the field is outside the batch's CRC).
CREATE TABLE ferry_batches (
    topic_id      text    NOT NULL,
    partition     integer NOT NULL,
    base_offset   bigint  NOT NULL,
    last_offset   bigint  NOT NULL,
    max_timestamp bigint  NOT NULL,
    object_key    text    NOT NULL,
    position      bigint  NOT NULL CHECK (position >= 0),
    length        integer NOT NULL CHECK (length > 0),
    PRIMARY KEY (topic_id, partition, base_offset),
    CHECK (last_offset >= base_offset)
);
CREATE INDEX ferry_batches_by_object ON ferry_batches (object_key);

-- Objects being written: a row is made before an object's PUT, and taken away by the
-- commit that names its batches (ferry_commit_object) or by the sweep that removes an
-- object whose commit did not come in time. Both take the row under its lock and by
-- the database's clock, so a commit and the sweep can never both have an object: an
-- object whose row the sweep took is never named by a batch.
CREATE TABLE ferry_objects (
    object_key text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Idempotent producers, per partition: the epoch and the last batches (at most 5, as
-- many as a Kafka producer keeps in flight), oldest first, so that a retried batch is
-- answered with the offset it already has.
CREATE TABLE ferry_producers (
    producer_id  bigint   NOT NULL,
    topic_id     text     NOT NULL,
    partition    integer  NOT NULL,
    epoch        smallint NOT NULL,
    first_seqs   integer[] NOT NULL,
    last_seqs    integer[] NOT NULL,
    base_offsets bigint[]  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer_id, topic_id, partition)
);

-- Commits one object's batches: gives each its offsets, checks idempotent producers'
-- sequence numbers, and records where it lives, all in the caller's transaction. The
-- object's ferry_objects row must exist and be younger than p_deadline_ms; it is taken
-- away (else the function raises an error, and nothing is committed).
-- Partitions are locked in (topic_id, partition) order, so nodes committing objects
-- that share partitions never deadlock. Each item is answered once, with outcome:
--   0 appended at base_offset    1 duplicate of one of the producer's last batches, stored
--                                  at base_offset
--   2 unknown partition          3 stale producer epoch (a fenced producer)
--   4 out-of-order sequence number (base_offset -1 for 2 to 4)
-- Every partition that took records is announced on channel ferry_appended as
-- '<next_offset> <partition> <topic_id>'.
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
    p_first_seq integer[]
) RETURNS TABLE (item integer, base_offset bigint, outcome smallint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i          integer;
    cur_topic  text := NULL;
    cur_part   integer := NULL;
    next_off   bigint;
    start_off  bigint;
    prod       record;
    last_seq   integer;
    expected   integer;
    k          integer;
    found_at   bigint;
    n          integer := coalesce(array_length(p_topic, 1), 0);
BEGIN
    IF coalesce(array_length(p_partition, 1), 0) <> n OR coalesce(array_length(p_position, 1), 0) <> n
       OR coalesce(array_length(p_length, 1), 0) <> n OR coalesce(array_length(p_records, 1), 0) <> n
       OR coalesce(array_length(p_max_ts, 1), 0) <> n OR coalesce(array_length(p_producer, 1), 0) <> n
       OR coalesce(array_length(p_epoch, 1), 0) <> n OR coalesce(array_length(p_first_seq, 1), 0) <> n THEN
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
        IF cur_topic IS DISTINCT FROM p_topic[i] OR cur_part IS DISTINCT FROM p_partition[i] THEN
            IF next_off IS NOT NULL AND next_off > start_off THEN
                UPDATE ferry_partitions SET next_offset = next_off
                 WHERE topic_id = cur_topic AND partition = cur_part;
                PERFORM pg_notify('ferry_appended', next_off || ' ' || cur_part || ' ' || cur_topic);
            END IF;
            cur_topic := p_topic[i];
            cur_part := p_partition[i];
            SELECT fp.next_offset INTO next_off FROM ferry_partitions fp
             WHERE fp.topic_id = cur_topic AND fp.partition = cur_part FOR UPDATE;
            IF NOT FOUND THEN
                next_off := NULL;
            END IF;
            start_off := next_off;
        END IF;
        IF next_off IS NULL THEN
            item := i; base_offset := -1; outcome := 2; RETURN NEXT;
            CONTINUE;
        END IF;
        IF p_producer[i] >= 0 AND p_first_seq[i] >= 0 THEN
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
        INSERT INTO ferry_batches (topic_id, partition, base_offset, last_offset, max_timestamp, object_key, position, length)
        VALUES (cur_topic, cur_part, next_off, next_off + p_records[i] - 1, p_max_ts[i], p_object, p_position[i], p_length[i]);
        item := i; base_offset := next_off; outcome := 0; RETURN NEXT;
        next_off := next_off + p_records[i];
    END LOOP;
    IF next_off IS NOT NULL AND next_off > start_off THEN
        UPDATE ferry_partitions SET next_offset = next_off WHERE topic_id = cur_topic AND partition = cur_part;
        PERFORM pg_notify('ferry_appended', next_off || ' ' || cur_part || ' ' || cur_topic);
    END IF;
END
$$;
