-- Revoke-all on security events: user tokens issued before this moment are inactive.
ALTER TABLE users ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;
