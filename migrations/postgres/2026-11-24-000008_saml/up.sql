-- SAML assertion IDs already consumed, per upstream: each is accepted once. Rows go once no
-- replay could pass the time checks any more.
CREATE TABLE saml_assertions (
    upstream     TEXT NOT NULL,
    assertion_id TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (upstream, assertion_id)
);
CREATE INDEX saml_assertions_expires_at ON saml_assertions (expires_at);

-- What ending a session at its upstream needs (logout propagation): the upstream's ID token
-- (OIDC) or NameID and SessionIndex (SAML). Goes with the session.
CREATE TABLE upstream_sessions (
    sid            TEXT PRIMARY KEY NOT NULL REFERENCES sessions(sid) ON DELETE CASCADE,
    upstream       TEXT NOT NULL,
    id_token       TEXT,
    name_id        TEXT,
    name_id_format TEXT,
    session_index  TEXT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX upstream_sessions_name_id ON upstream_sessions (upstream, name_id);
