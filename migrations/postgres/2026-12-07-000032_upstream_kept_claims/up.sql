-- The upstream claims (OIDC) or attributes (SAML) an operator keeps for the user's last sign-in
-- through that upstream (`keep` in the upstream's claim or attribute mapping), as a JSON object
-- of name to text: MFA plugins granted `claims` read them (issue #18).
ALTER TABLE upstream_links ADD COLUMN kept_claims TEXT NOT NULL DEFAULT '{}';
