-- Audit trail: one row per auth event; swept after `audit.retention`.
CREATE TABLE audit_events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    user_id   TEXT,
    client_id TEXT,
    sid       TEXT,
    ip        TEXT,
    upstream  TEXT,
    reason    TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_user ON audit_events (user_id, id);

-- Brute-force lockout, shared by every instance: failures per account (a sign-in name).
CREATE TABLE login_failures (
    account         TEXT PRIMARY KEY NOT NULL,
    failures        BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    locked_until    BIGINT NOT NULL
);
CREATE INDEX login_failures_last ON login_failures (last_failure_at);
