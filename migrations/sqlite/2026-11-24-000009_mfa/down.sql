ALTER TABLE sessions DROP COLUMN upstream_acr;
DROP TABLE control_signals;
DROP TABLE mfa_recovery_codes;
DROP TABLE mfa_enrollments;
DROP TABLE mfa_state;
