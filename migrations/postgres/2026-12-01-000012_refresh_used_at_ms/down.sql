UPDATE refresh_tokens SET used_at_ms = used_at_ms / 1000 WHERE used_at_ms IS NOT NULL;
ALTER TABLE refresh_tokens RENAME COLUMN used_at_ms TO used_at;
