DROP TABLE upstream_sessions;
DROP TABLE saml_assertions;
