DROP TABLE saml_apps;
