-- PostgreSQL only (fillfactor); kept so both backends have the same migration names.
SELECT 1;
