DROP TABLE revoked_tokens;
DROP TABLE refresh_tokens;
DROP TABLE auth_codes;
DROP TABLE signing_keys;
DROP TABLE clients;
DROP INDEX sessions_sid;
ALTER TABLE sessions DROP COLUMN sid;
