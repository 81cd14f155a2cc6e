-- Passkeys and security keys (issue #19): one row per WebAuthn credential. `passkey` is the
-- credential as webauthn-rs serialises it (public key, counter, flags; JSON, no secret);
-- `sign_count` and the backup flags are copied out so that a counter that goes backwards (a
-- possibly cloned authenticator) is refused by the update itself, on every instance.
CREATE TABLE webauthn_credentials (
    credential_id   BLOB PRIMARY KEY NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    passkey         TEXT NOT NULL,
    name            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT,
    sign_count      BIGINT NOT NULL,
    backup_eligible BOOLEAN NOT NULL,
    backup_state    BOOLEAN NOT NULL
);
CREATE INDEX webauthn_credentials_user ON webauthn_credentials (user_id);
