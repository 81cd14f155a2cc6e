-- When a refresh token was spent, in milliseconds: the reuse grace window is compared at
-- sub-second precision (a window of "0s" must catch a replay in the same second).
ALTER TABLE refresh_tokens RENAME COLUMN used_at TO used_at_ms;
UPDATE refresh_tokens SET used_at_ms = used_at_ms * 1000 WHERE used_at_ms IS NOT NULL;
