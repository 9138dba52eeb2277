-- Ferry shared mode: merging small objects. An object holds the batches of every
-- partition a node appended to while it gathered; once they are old enough, a
-- partition's batches are copied into one larger object of that partition alone, and
-- their rows are pointed at it. The objects left without batches are removed by the
-- orphan sweep.

-- True once a batch lives in an object of its partition alone.
ALTER TABLE ferry_batches ADD COLUMN compacted boolean NOT NULL DEFAULT false;
CREATE INDEX ferry_batches_to_compact ON ferry_batches (topic_id, partition, base_offset)
    WHERE NOT compacted;

-- Points batches of one partition at p_object, where they were copied: each batch
-- whose row still names the object (p_from) and length it was copied from moves to its
-- new position; a batch trimmed or moved meanwhile is left alone. The object's
-- registration (ferry_objects, younger than p_deadline_ms) is taken as a commit takes
-- it, so the sweep can never remove an object batches were pointed at. Answers the
-- number of batches moved.
CREATE FUNCTION ferry_relocate_batches(
    p_object text, p_deadline_ms bigint, p_topic text, p_partition integer,
    p_base bigint[], p_from text[], p_position bigint[], p_length integer[]
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    moved integer;
BEGIN
    DELETE FROM ferry_objects o
     WHERE o.object_key = p_object
       AND o.created_at > now() - make_interval(secs => p_deadline_ms / 1000.0);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'object % was not registered, or its deadline passed', p_object
              USING ERRCODE = 'P0001';
    END IF;
    UPDATE ferry_batches b
       SET object_key = p_object, position = u.pos, compacted = true
      FROM unnest(p_base, p_from, p_position, p_length) AS u(base, src, pos, len)
     WHERE b.topic_id = p_topic AND b.partition = p_partition AND b.base_offset = u.base
       AND b.object_key = u.src AND b.length = u.len;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END $$;
