ALTER TABLE upstream_links DROP COLUMN verified_email;
ALTER TABLE upstream_links DROP COLUMN groups;
