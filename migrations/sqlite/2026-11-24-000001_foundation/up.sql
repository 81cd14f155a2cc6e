-- Foundation: local users, first-party sessions, broker secrets.
-- Timestamps are Unix seconds (BIGINT) on both backends.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL DEFAULT '',
    password_hash TEXT,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- The primary key is SHA-256 of the 256-bit session id; the raw id lives only in the cookie.
CREATE TABLE sessions (
    id_hash      BLOB PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel      TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    ip           TEXT NOT NULL,
    upstream     TEXT NOT NULL,
    amr          TEXT NOT NULL,
    auth_time    BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    idle_timeout BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Broker-wide secrets shared by every instance (e.g. the CSRF key), created once.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    value      BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
