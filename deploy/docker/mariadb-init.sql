-- Run once by the MariaDB container on a new data directory (mounted into
-- /docker-entrypoint-initdb.d): the cluster's user (MARIADB_USER, `cluster` in compose.yaml) may
-- create and use the two databases `cluster db init` makes. With db.prefix set, grant the
-- prefixed names (<prefix>accountdb, <prefix>status_server) instead.
GRANT ALL PRIVILEGES ON `accountdb`.* TO 'cluster'@'%';
GRANT ALL PRIVILEGES ON `status_server`.* TO 'cluster'@'%';
