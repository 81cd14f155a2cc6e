-- MFA plugin state: one encrypted blob per (plugin, user); version makes writes compare-and-swap
-- so two concurrent verifies cannot both use the same state (e.g. the same TOTP step).
CREATE TABLE mfa_state (
    plugin_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    version    BIGINT NOT NULL,
    data       BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, user_id)
);
CREATE INDEX mfa_state_user ON mfa_state (user_id);

-- Factors a user has set up (recorded by the host when a plugin's enrolment is done).
CREATE TABLE mfa_enrollments (
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plugin_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id, plugin_id)
);

-- Recovery codes (host feature, ADR 0009): SHA-256 of each code, single use.
CREATE TABLE mfa_recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash  BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Signals every instance polls, e.g. "reload the MFA plugins" from the CLI.
CREATE TABLE control_signals (
    name       TEXT PRIMARY KEY NOT NULL,
    generation BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The upstream's authentication context (acr / SAML AuthnContextClassRef) of a session.
ALTER TABLE sessions ADD COLUMN upstream_acr TEXT;
