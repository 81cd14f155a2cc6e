-- The CSRF key was stored unsealed: anyone who could read the database (a backup, a replica)
-- could sign step values for any browser. Every MAC key is now derived from one root secret
-- stored sealed under the key-encryption key (row 'root_secret.v1', created at start).
-- Forms open during the upgrade fail their CSRF check once and are shown again.
DELETE FROM secrets WHERE name = 'csrf_key';
