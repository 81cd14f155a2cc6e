-- When each factor was last used to sign in (shown on the account's factor list).
ALTER TABLE mfa_enrollments ADD COLUMN last_used_at BIGINT;
