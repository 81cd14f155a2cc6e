-- The SHA-256 of the browser binding cookie a sign-in journey belongs to (issue #17): signing out
-- ends every journey of that browser, so a sign-in started before the sign-out cannot finish
-- after it. Rows from before have none (they expire within the journey lifetime).
ALTER TABLE login_transactions ADD COLUMN binding_hash BYTEA;
CREATE INDEX login_transactions_binding ON login_transactions (binding_hash);
