-- What the upstream said at the user's last sign-in through it, for the tokens of that session:
-- its groups (a JSON array) and the email it verified (only from an upstream trusted for it).
ALTER TABLE upstream_links ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE upstream_links ADD COLUMN verified_email TEXT;
