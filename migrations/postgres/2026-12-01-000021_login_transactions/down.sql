DROP TABLE login_transactions;
