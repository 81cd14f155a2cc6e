ALTER TABLE mfa_enrollments DROP COLUMN last_used_at;
