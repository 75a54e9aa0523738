-- Schema of accountdb and status_server for MySQL/MariaDB, after the original's schema (docs/architecture.md, "Where state lives").
--
-- A template: cluster.db substitutes {accountdb} and {status_server} with the database names
-- (<[db] prefix>accountdb, <[db] prefix>status_server) and runs the statements one by one,
-- split at each ";" that ends a line (so no statement may hold ";" inside a literal or comment).
-- Every statement is idempotent: `cluster.db` runs this file on each init, after bringing the
-- tables of an earlier schema up to these (cluster/db/upgrade.py: missing columns and indexes
-- added, columns widened or made NULL-able, the original's CHAR(64) key converted to BINARY(64)).
-- This is schema version 2, recorded in accountdb.schema_version (no record: an earlier schema).
--
-- Deviations from the seed (the columns are otherwise exactly the seed's):
--   * sessionkey.sessionkey is BINARY(64), not CHAR(64): a key is 64 raw bytes, and any 64 bytes
--     (NUL and 0xFF included) must come back unchanged, which a character column does not promise.
--   * account.userid and account.usernick accept NULL, so that the interface's "no ID / no nick"
--     case (AccountRow.user_id / nickname None) can be represented.
--   * added columns: account.salt (hex salt of userpass = sha256(salt + password)), status.owner
--     (the process holding the account in game, indexed for the recovery of dead processes),
--     and a `writer` (the process that wrote the row) on every status_server table.
--   * account.userpass is VARCHAR(255) NULL: an argon2id encoded hash ($argon2id$v=19$m=...),
--     the web login's; accounts made by `cluster accounts create` hold sha256(salt + a random
--     password nobody knows) there; NULL = no password, no web login.
--   * sessionkey.expires: Unix time (seconds) after which the key is no longer valid; NULL =
--     never expires (the keys `cluster accounts create` writes).
--   * the view v_account, which the original's login server queried (key_expires and
--     status_owner added: a status row != 0 without an owner is an operator's lock).
--   * accountdb.schema_version: one row, the schema's version.

CREATE DATABASE IF NOT EXISTS `{accountdb}` CHARACTER SET utf8mb4;

CREATE DATABASE IF NOT EXISTS `{status_server}` CHARACTER SET utf8mb4;

CREATE TABLE IF NOT EXISTS `{accountdb}`.`account` (
	`accountno` BIGINT NOT NULL AUTO_INCREMENT,
	`userid` CHAR(64) NULL,
	`userpass` VARCHAR(255) NULL,
	`usernick` CHAR(64) NULL,
	`salt` CHAR(32) NULL,
	PRIMARY KEY (`accountno`),
	INDEX `userid_INDEX` (`userid` ASC)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS `{accountdb}`.`sessionkey` (
	`accountno` BIGINT NOT NULL,
	`sessionkey` BINARY(64) NULL,
	`expires` BIGINT NULL,
	PRIMARY KEY (`accountno`)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS `{accountdb}`.`status` (
	`accountno` BIGINT NOT NULL,
	`status` INT NOT NULL DEFAULT 0,
	`owner` VARCHAR(128) NULL,
	PRIMARY KEY (`accountno`),
	INDEX `owner_INDEX` (`owner` ASC)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS `{accountdb}`.`whiteip` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`ip` CHAR(32) NOT NULL,
	PRIMARY KEY (`no`)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS `{accountdb}`.`schema_version` (
	`version` INT NOT NULL
) ENGINE = InnoDB;

-- key_row / status_row are NULL exactly when the joined row is missing, which tells a missing
-- sessionkey or status row from a NULL column.
CREATE OR REPLACE VIEW `{accountdb}`.`v_account` AS
	SELECT
		`a`.`accountno` AS `accountno`,
		`a`.`userid` AS `userid`,
		`a`.`usernick` AS `usernick`,
		`k`.`sessionkey` AS `sessionkey`,
		`k`.`expires` AS `key_expires`,
		`s`.`status` AS `status`,
		`k`.`accountno` AS `key_row`,
		`s`.`accountno` AS `status_row`,
		`s`.`owner` AS `status_owner`
	FROM `{accountdb}`.`account` AS `a`
	LEFT JOIN `{accountdb}`.`sessionkey` AS `k` ON `k`.`accountno` = `a`.`accountno`
	LEFT JOIN `{accountdb}`.`status` AS `s` ON `s`.`accountno` = `a`.`accountno`;

CREATE TABLE IF NOT EXISTS `{status_server}`.`hardware` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`date` datetime NOT NULL,
	`CPUUsage` BIGINT NOT NULL,
	`AvailableMBytes` BIGINT NOT NULL,
	`NonPagedBytes` BIGINT NOT NULL,
	`writer` VARCHAR(128) NULL,
	PRIMARY KEY (`no`),
	INDEX `date_INDEX` (`date` ASC)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS `{status_server}`.`battle` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`date` datetime NOT NULL,
	`CPUUsage` BIGINT NOT NULL,
	`CommitMemory` BIGINT NOT NULL,
	`PacketPool` BIGINT NOT NULL,
	`AuthFPS` BIGINT NOT NULL,
	`GameFPS` BIGINT NOT NULL,
	`SessionAll` BIGINT NOT NULL,
	`SessionAuth` BIGINT NOT NULL,
	`SessionGame` BIGINT NOT NULL,
	`writer` VARCHAR(128) NULL,
	PRIMARY KEY (`no`),
	INDEX `date_INDEX` (`date` ASC)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS `{status_server}`.`chat` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`date` datetime NOT NULL,
	`CPUUsage` BIGINT NOT NULL,
	`CommitMemory` BIGINT NOT NULL,
	`PacketPool` BIGINT NOT NULL,
	`SessionAll` BIGINT NOT NULL,
	`SessionLogin` BIGINT NOT NULL,
	`writer` VARCHAR(128) NULL,
	PRIMARY KEY (`no`),
	INDEX `date_INDEX` (`date` ASC)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS `{status_server}`.`login` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`date` datetime NOT NULL,
	`CPUUsage` BIGINT NOT NULL,
	`CommitMemory` BIGINT NOT NULL,
	`PacketPool` BIGINT NOT NULL,
	`SessionAll` BIGINT NOT NULL,
	`LoginSuccessTPS` BIGINT NOT NULL,
	`writer` VARCHAR(128) NULL,
	PRIMARY KEY (`no`),
	INDEX `date_INDEX` (`date` ASC)
) ENGINE = InnoDB;
