DROP TABLE login_failures;
DROP TABLE audit_events;
