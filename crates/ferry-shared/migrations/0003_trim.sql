-- Ferry shared mode: moving a partition's start (retention, deleting records).

-- Moves a partition's first readable offset up to p_before (never down, never past its
-- next offset) and deletes the rows of the batches wholly below it; their objects go
-- with the orphan sweep once no batch names them. Returns the partition's first
-- readable offset afterwards, or -1 when the partition does not exist.
CREATE FUNCTION ferry_trim_partition(p_topic text, p_partition integer, p_before bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    start_off bigint;
    next_off  bigint;
    target    bigint;
BEGIN
    SELECT fp.log_start, fp.next_offset INTO start_off, next_off FROM ferry_partitions fp
     WHERE fp.topic_id = p_topic AND fp.partition = p_partition FOR UPDATE;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    target := least(p_before, next_off);
    IF target <= start_off THEN
        RETURN start_off;
    END IF;
    UPDATE ferry_partitions SET log_start = target
     WHERE topic_id = p_topic AND partition = p_partition;
    DELETE FROM ferry_batches
     WHERE topic_id = p_topic AND partition = p_partition AND last_offset < target;
    RETURN target;
END
$$;

-- Where time retention cuts a partition: the first batch (by offset) holding a record
-- stamped at or after p_cutoff, or the partition's next offset when none does.
CREATE FUNCTION ferry_retention_point(p_topic text, p_partition integer, p_cutoff bigint)
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT b.base_offset FROM ferry_batches b
          WHERE b.topic_id = p_topic AND b.partition = p_partition AND b.max_timestamp >= p_cutoff
          ORDER BY b.base_offset LIMIT 1),
        (SELECT fp.next_offset FROM ferry_partitions fp
          WHERE fp.topic_id = p_topic AND fp.partition = p_partition))
$$;
