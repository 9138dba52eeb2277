-- Ferry shared mode: leases, and consumer groups' committed offsets.
--
-- A lease names the one node that owns a piece of work (a consumer group's
-- coordinator: kind 'group'). It holds while its node beats: a lease whose node's
-- last beat is older than the liveness window is free for another node to take, and
-- each taking bumps its epoch. Writes made under a lease name the epoch they were made
-- under and are refused once another node took it, so a node that lost its lease
-- without knowing cannot overwrite its successor's state.
CREATE TABLE ferry_leases (
    kind     text    NOT NULL,
    name     text    NOT NULL,
    node_id  integer NOT NULL,
    epoch    bigint  NOT NULL CHECK (epoch > 0),
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);
CREATE INDEX ferry_leases_by_node ON ferry_leases (node_id);

-- Takes the lease (kind, name) for p_node when it is free, new, or held by a node not
-- seen beating within p_live_ms; answers the holder and its epoch afterwards (the
-- caller holds it when o_node = p_node). A taker that is not live itself takes
-- nothing and gets o_node = -1.
CREATE FUNCTION ferry_take_lease(
    p_kind text, p_name text, p_node integer, p_live_ms bigint,
    OUT o_node integer, OUT o_epoch bigint
) LANGUAGE plpgsql AS $$
DECLARE
    live_since timestamptz := now() - make_interval(secs => p_live_ms / 1000.0);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ferry_nodes
                   WHERE node_id = p_node AND heartbeat_at > live_since) THEN
        o_node := -1;
        o_epoch := 0;
        RETURN;
    END IF;
    INSERT INTO ferry_leases (kind, name, node_id, epoch)
    VALUES (p_kind, p_name, p_node, 1)
    ON CONFLICT (kind, name) DO NOTHING;
    SELECT node_id, epoch INTO o_node, o_epoch FROM ferry_leases
     WHERE kind = p_kind AND name = p_name FOR UPDATE;
    IF o_node <> p_node AND NOT EXISTS (
        SELECT 1 FROM ferry_nodes WHERE node_id = o_node AND heartbeat_at > live_since
    ) THEN
        UPDATE ferry_leases SET node_id = p_node, epoch = epoch + 1, taken_at = now()
         WHERE kind = p_kind AND name = p_name
        RETURNING node_id, epoch INTO o_node, o_epoch;
    END IF;
END $$;

-- group → topic → partition → committed offset.
CREATE TABLE ferry_group_offsets (
    group_id         text    NOT NULL,
    topic            text    NOT NULL,
    partition        integer NOT NULL CHECK (partition >= 0),
    committed_offset bigint  NOT NULL,
    metadata         text,
    leader_epoch     integer,
    PRIMARY KEY (group_id, topic, partition)
);
CREATE INDEX ferry_group_offsets_by_topic ON ferry_group_offsets (topic);

-- Whether p_node still holds group p_group's lease under p_epoch. The lease row is
-- read FOR SHARE, in the caller's transaction: a node taking the lease waits for the
-- caller's writes, and then reads them.
CREATE FUNCTION ferry_holds_group_lease(p_group text, p_node integer, p_epoch bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ferry_leases
     WHERE kind = 'group' AND name = p_group AND node_id = p_node AND epoch = p_epoch
       FOR SHARE;
    RETURN FOUND;
END $$;

-- Records a group's offsets under the lease (p_node, p_epoch); false, with nothing
-- written, when that lease is no longer held.
CREATE FUNCTION ferry_commit_offsets(
    p_group text, p_node integer, p_epoch bigint,
    p_topics text[], p_partitions integer[], p_offsets bigint[],
    p_metadata text[], p_leader_epochs integer[]
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ferry_holds_group_lease(p_group, p_node, p_epoch) THEN
        RETURN false;
    END IF;
    INSERT INTO ferry_group_offsets
        (group_id, topic, partition, committed_offset, metadata, leader_epoch)
    SELECT p_group, t, p, o, m, e
      FROM unnest(p_topics, p_partitions, p_offsets, p_metadata, p_leader_epochs)
           AS u(t, p, o, m, e)
    ON CONFLICT (group_id, topic, partition) DO UPDATE
       SET committed_offset = EXCLUDED.committed_offset,
           metadata = EXCLUDED.metadata,
           leader_epoch = EXCLUDED.leader_epoch;
    RETURN true;
END $$;

-- Drops a group's offsets under its lease: of the partitions named, or every one when
-- p_topics is NULL. False, with nothing dropped, when the lease is no longer held.
CREATE FUNCTION ferry_delete_offsets(
    p_group text, p_node integer, p_epoch bigint,
    p_topics text[], p_partitions integer[]
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ferry_holds_group_lease(p_group, p_node, p_epoch) THEN
        RETURN false;
    END IF;
    IF p_topics IS NULL THEN
        DELETE FROM ferry_group_offsets WHERE group_id = p_group;
    ELSE
        DELETE FROM ferry_group_offsets o
         USING unnest(p_topics, p_partitions) AS u(t, p)
         WHERE o.group_id = p_group AND o.topic = u.t AND o.partition = u.p;
    END IF;
    RETURN true;
END $$;
