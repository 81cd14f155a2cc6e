-- Logout tokens are signed when each attempt is sent (fresh iat, exp, jti), not when queued:
-- the outbox keeps what a token is made of (client, sub, sid; the event is always the
-- back-channel logout event) instead of a signed token that expired 120 s after queuing while
-- its retries ran for ~10 minutes. Deliveries still queued at upgrade carry such tokens and are
-- dropped (see docs/operations.md, "Upgrading").
DROP TABLE logout_deliveries;
CREATE TABLE logout_deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    client_id       TEXT NOT NULL,
    uri             TEXT NOT NULL,
    sub             TEXT NOT NULL,
    sid             TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX logout_deliveries_due ON logout_deliveries (next_attempt_at);
