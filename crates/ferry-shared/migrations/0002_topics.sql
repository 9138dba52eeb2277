-- Ferry shared mode: topics. One row per topic, its settings as Ferry's own JSON (the
-- same fields as meta/topics.json in the local mode); its partitions are rows of
-- ferry_partitions under its topic_id. Nodes see a topic created on another node by
-- reading this table.
CREATE TABLE ferry_topics (
    name       text PRIMARY KEY,
    topic_id   text NOT NULL UNIQUE,
    config     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Producer ids of idempotent producers, unique across every node.
CREATE SEQUENCE ferry_producer_ids START WITH 1000;
