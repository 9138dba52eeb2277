-- Ferry shared mode: the nodes. Each node takes an id when it starts and beats every
-- second; a node whose beat is older than 10 s is taken for dead (Kafka's Metadata
-- lists the live ones).
CREATE SEQUENCE ferry_node_ids START WITH 1;
CREATE TABLE ferry_nodes (
    node_id      integer PRIMARY KEY,
    kafka_host   text NOT NULL,
    kafka_port   integer NOT NULL CHECK (kafka_port > 0 AND kafka_port < 65536),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
