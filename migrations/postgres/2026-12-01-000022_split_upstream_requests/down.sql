-- Rows live 10 minutes: dropped, not converted.
DROP TABLE upstream_requests;
CREATE TABLE upstream_requests (
    state_hash   BYTEA PRIMARY KEY NOT NULL,
    upstream     TEXT NOT NULL,
    binding_hash BYTEA NOT NULL,
    pending      TEXT NOT NULL,
    return_to    TEXT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX upstream_requests_expires_at ON upstream_requests (expires_at);
DROP TABLE logout_continuations;
