ALTER TABLE upstream_links DROP COLUMN kept_claims;
