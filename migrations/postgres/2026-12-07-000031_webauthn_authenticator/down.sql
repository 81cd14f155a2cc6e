ALTER TABLE webauthn_credentials DROP COLUMN authenticator;
ALTER TABLE webauthn_credentials DROP COLUMN attested_aaguid;
