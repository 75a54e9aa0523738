"""Schema files for accountdb and status_server (mysql.sql, sqlite.sql), read by cluster.db."""
