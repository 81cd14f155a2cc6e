DROP INDEX webauthn_credentials_user;
DROP TABLE webauthn_credentials;
