-- OpenID provider: public session ids, clients, signing keys, codes, refresh tokens, revoked jtis.

-- Sessions get a public id (the `sid` claim). Existing sessions end: their users sign in again.
DELETE FROM sessions;
ALTER TABLE sessions ADD COLUMN sid TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX sessions_sid ON sessions (sid);

-- Clients registered with `concierge clients add` (clients from the config file live in memory).
CREATE TABLE clients (
    id         TEXT PRIMARY KEY NOT NULL,
    config     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Private keys are encrypted with the configured key-encryption key (AES-256-GCM).
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    alg             TEXT NOT NULL,
    private_key_enc BLOB NOT NULL,
    public_jwk      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    -- Published from created_at; signs from active_at; stops signing at retired_at; published
    -- until retired_at + the longest token lifetime.
    active_at       BIGINT NOT NULL,
    retired_at      BIGINT
);

CREATE TABLE auth_codes (
    code_hash      BLOB PRIMARY KEY NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sid            TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT NOT NULL,
    auth_time      BIGINT NOT NULL,
    acr            TEXT,
    amr            TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    consumed_at    BIGINT
);

-- Rotating refresh tokens; a family is every token descended from one grant.
CREATE TABLE refresh_tokens (
    token_hash   BLOB PRIMARY KEY NOT NULL,
    family_id    TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sid          TEXT NOT NULL,
    scope        TEXT NOT NULL,
    auth_time    BIGINT NOT NULL,
    acr          TEXT,
    amr          TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_sid ON refresh_tokens (sid);

-- Access tokens (JWTs) revoked before their expiry.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);
