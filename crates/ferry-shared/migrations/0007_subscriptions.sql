-- Ferry shared mode: subscriptions (queue). A subscription's settings are a row every
-- node reads; its state is what the owning node (the holder of the lease
-- ('subscription', name)) journals: a snapshot, the events after it, and delayed
-- records by minute. Every write names the lease's epoch and is refused once another
-- node took the lease. Nodes also publish where their HTTP API answers, so that any
-- node can pass a request on to the owner.
ALTER TABLE ferry_nodes ADD COLUMN http_addr text;

CREATE TABLE ferry_subscriptions (
    name   text PRIMARY KEY,
    topic  text NOT NULL,
    config jsonb NOT NULL
);

CREATE TABLE ferry_subscription_snapshots (
    name     text PRIMARY KEY REFERENCES ferry_subscriptions ON DELETE CASCADE,
    snapshot bytea NOT NULL
);

CREATE TABLE ferry_subscription_journal (
    name   text NOT NULL REFERENCES ferry_subscriptions ON DELETE CASCADE,
    seq    bigint NOT NULL CHECK (seq >= 0),
    events bytea NOT NULL,
    PRIMARY KEY (name, seq)
);

CREATE TABLE ferry_subscription_delays (
    name    text NOT NULL REFERENCES ferry_subscriptions ON DELETE CASCADE,
    bucket  bigint NOT NULL CHECK (bucket >= 0),
    id      bigserial,
    entries integer NOT NULL CHECK (entries > 0),
    bytes   bytea NOT NULL,
    PRIMARY KEY (name, bucket, id)
);

-- Whether p_node still holds the lease (p_kind, p_name) under p_epoch; the row is
-- read FOR SHARE, so a node taking the lease waits for the caller's transaction.
CREATE FUNCTION ferry_holds_lease(p_kind text, p_name text, p_node integer, p_epoch bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ferry_leases
     WHERE kind = p_kind AND name = p_name AND node_id = p_node AND epoch = p_epoch
       FOR SHARE;
    RETURN FOUND;
END $$;
