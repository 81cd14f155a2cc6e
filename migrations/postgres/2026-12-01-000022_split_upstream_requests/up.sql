-- Issue #13: upstream_requests held three kinds of rows (pending upstream logins, parked
-- upstream sessions, logout continuations). Logout continuations get their own table; pending
-- logins now point at their sign-in journey (login_transactions) instead of carrying the
-- return path. Rows of upstream_requests live 10 minutes, so the table is dropped and recreated,
-- not converted: an upstream login in flight while this runs must start over, and a logout
-- through an upstream in flight ends on /signed-out instead of its post-logout redirect.

-- Where the browser continues once an upstream's logout sends it back; single use, keyed by
-- SHA-256 of the relay state sent upstream. request_id: the SAML LogoutRequest ID ('' for OIDC).
CREATE TABLE logout_continuations (
    relay_hash BYTEA PRIMARY KEY NOT NULL,
    upstream   TEXT NOT NULL,
    request_id TEXT NOT NULL,
    then_url   TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX logout_continuations_expires_at ON logout_continuations (expires_at);

DROP TABLE upstream_requests;
-- Logins waiting for an upstream to answer; single use, keyed by SHA-256 of the state.
-- journey_hash: SHA-256 of the id of the sign-in journey the login belongs to.
CREATE TABLE upstream_requests (
    state_hash   BYTEA PRIMARY KEY NOT NULL,
    upstream     TEXT NOT NULL,
    binding_hash BYTEA NOT NULL,
    journey_hash BYTEA NOT NULL,
    pending      TEXT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX upstream_requests_expires_at ON upstream_requests (expires_at);
