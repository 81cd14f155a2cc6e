-- Service providers of the SAML IdP registered at run time (`concierge saml-apps add`; issue
-- #20): the options as JSON (a `[[saml_apps]]` table without endpoints), the SP's metadata
-- (the last good copy: a refresh that fails or does not parse leaves it), the URL it is
-- refreshed from (NULL: registered from a file, never refreshed) and when it was fetched.
CREATE TABLE saml_apps (
    entity_id    TEXT PRIMARY KEY NOT NULL,
    config       TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    metadata_url TEXT,
    fetched_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
