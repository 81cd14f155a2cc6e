DROP INDEX login_transactions_binding;
ALTER TABLE login_transactions DROP COLUMN binding_hash;
