-- Federated identities: (upstream, upstream subject) -> broker user.
CREATE TABLE upstream_links (
    upstream   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (upstream, subject)
);
CREATE INDEX upstream_links_user ON upstream_links (user_id);

-- Logins waiting for an upstream to answer; single use, keyed by SHA-256 of the state.
CREATE TABLE upstream_requests (
    state_hash   BYTEA PRIMARY KEY NOT NULL,
    upstream     TEXT NOT NULL,
    binding_hash BYTEA NOT NULL,
    pending      TEXT NOT NULL,
    return_to    TEXT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX upstream_requests_expires_at ON upstream_requests (expires_at);
