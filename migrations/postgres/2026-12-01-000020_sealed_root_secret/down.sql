-- The unsealed key is not restored: a broker of the earlier version creates a new one at start.
DELETE FROM secrets WHERE name = 'root_secret.v1';
