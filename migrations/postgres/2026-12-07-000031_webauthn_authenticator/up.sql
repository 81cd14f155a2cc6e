-- The hardware authenticator model a passkey was attested as at registration (issue #19):
-- its AAGUID and name, set only when the attestation chained to a vendor root listed in
-- [[mfa.passkey.hardware]]; NULL for every other passkey (synced, unattested, unlisted).
ALTER TABLE webauthn_credentials ADD COLUMN attested_aaguid TEXT;
ALTER TABLE webauthn_credentials ADD COLUMN authenticator TEXT;
