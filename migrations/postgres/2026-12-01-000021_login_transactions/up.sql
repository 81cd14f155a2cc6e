-- One row per sign-in journey (issue #13): the browser holds an opaque random id in a cookie,
-- the row is keyed by its SHA-256. `state` is the journey's JSON (the authorization request
-- parsed once, the stage, who is proven so far); `version` makes every update a
-- compare-and-swap; `finished_at` makes finishing single use (the row stays until it expires,
-- so a replay is recognised as one).
CREATE TABLE login_transactions (
    id_hash BYTEA PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX login_transactions_expires ON login_transactions (expires_at);
