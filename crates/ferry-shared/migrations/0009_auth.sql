-- Ferry shared mode: users, API tokens and ACLs, one document every node reads (the
-- same JSON a node keeps in auth.json in the local mode: SCRAM credentials and token
-- hashes, never a password or a token's text). A change replaces it whole, only if the
-- version it was made from is still the stored one, so two nodes never lose each
-- other's changes.
CREATE TABLE ferry_auth (
    id      smallint PRIMARY KEY CHECK (id = 1),
    version bigint   NOT NULL CHECK (version > 0),
    state   bytea    NOT NULL
);
