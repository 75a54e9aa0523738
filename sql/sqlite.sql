-- Schema of accountdb and status_server for SQLite, after the original's schema (docs/architecture.md, "Where state lives").
--
-- Run by cluster.db on a connection where DIR/accountdb.db and DIR/status_server.db are attached
-- as `accountdb` and `status_server`, so the qualified names are the MySQL ones. Every statement
-- is idempotent: `cluster.db` runs this file on each init, in the transaction that first brings
-- the tables of an earlier schema up to these (cluster/db/upgrade.py: missing columns added, a
-- table whose columns SQLite cannot alter rebuilt). This is schema version 2, recorded in
-- accountdb.schema_version (no record: an earlier schema). WAL mode and busy_timeout are set by
-- the connection (cluster/db/sqlite.py), not here. Statements are split at each ";" that ends a
-- line, as for MySQL.
--
-- Deviations from the seed (the columns are otherwise exactly the seed's):
--   * sessionkey.sessionkey is a BLOB, not CHAR(64): a key is 64 raw bytes, and any 64 bytes
--     (NUL and 0xFF included) must come back unchanged.
--   * account.userid and account.usernick accept NULL, so that the interface's "no ID / no nick"
--     case (AccountRow.user_id / nickname None) can be represented.
--   * added columns: account.salt (hex salt of userpass = sha256(salt + password)), status.owner
--     (the process holding the account in game, indexed for the recovery of dead processes),
--     and a `writer` (the process that wrote the row) on every status_server table.
--   * account.userpass is VARCHAR(255) NULL: an argon2id encoded hash ($argon2id$v=19$m=...),
--     the web login's; accounts made by `cluster accounts create` hold sha256(salt + a random
--     password nobody knows) there; NULL = no password, no web login. (SQLite enforces no
--     length: an upgraded file keeps CHAR(64) declared unless its table had to be rebuilt.)
--   * sessionkey.expires: Unix time (seconds) after which the key is no longer valid; NULL =
--     never expires (the keys `cluster accounts create` writes).
--   * the view v_account, which the original's login server queried (key_expires and
--     status_owner added: a status row != 0 without an owner is an operator's lock).
--   * accountdb.schema_version: one row, the schema's version.
--   * SQLite specifics: BIGINT keys are INTEGER PRIMARY KEY (64-bit rowid aliases, assigned
--     max + 1 when omitted, like AUTO_INCREMENT), and index names are unique per database, so
--     the monitoring tables' date indexes carry the table name.

CREATE TABLE IF NOT EXISTS accountdb.account (
	accountno INTEGER PRIMARY KEY,
	userid CHAR(64) NULL,
	userpass VARCHAR(255) NULL,
	usernick CHAR(64) NULL,
	salt CHAR(32) NULL
);
CREATE INDEX IF NOT EXISTS accountdb.userid_INDEX ON account (userid ASC);

CREATE TABLE IF NOT EXISTS accountdb.sessionkey (
	accountno INTEGER PRIMARY KEY,
	sessionkey BLOB NULL,
	expires BIGINT NULL
);

CREATE TABLE IF NOT EXISTS accountdb.status (
	accountno INTEGER PRIMARY KEY,
	status INT NOT NULL DEFAULT 0,
	owner VARCHAR(128) NULL
);
CREATE INDEX IF NOT EXISTS accountdb.owner_INDEX ON status (owner ASC);

CREATE TABLE IF NOT EXISTS accountdb.whiteip (
	no INTEGER PRIMARY KEY,
	ip CHAR(32) NOT NULL
);

CREATE TABLE IF NOT EXISTS accountdb.schema_version (
	version INT NOT NULL
);

-- key_row / status_row are NULL exactly when the joined row is missing, which tells a missing
-- sessionkey or status row from a NULL column. Recreated on each init so a changed definition
-- takes effect.
DROP VIEW IF EXISTS accountdb.v_account;
CREATE VIEW accountdb.v_account AS
	SELECT
		a.accountno AS accountno,
		a.userid AS userid,
		a.usernick AS usernick,
		k.sessionkey AS sessionkey,
		k.expires AS key_expires,
		s.status AS status,
		k.accountno AS key_row,
		s.accountno AS status_row,
		s.owner AS status_owner
	FROM account AS a
	LEFT JOIN sessionkey AS k ON k.accountno = a.accountno
	LEFT JOIN status AS s ON s.accountno = a.accountno;

CREATE TABLE IF NOT EXISTS status_server.hardware (
	no INTEGER PRIMARY KEY,
	date DATETIME NOT NULL,
	CPUUsage BIGINT NOT NULL,
	AvailableMBytes BIGINT NOT NULL,
	NonPagedBytes BIGINT NOT NULL,
	writer VARCHAR(128) NULL
);
CREATE INDEX IF NOT EXISTS status_server.hardware_date_INDEX ON hardware (date ASC);

CREATE TABLE IF NOT EXISTS status_server.battle (
	no INTEGER PRIMARY KEY,
	date DATETIME NOT NULL,
	CPUUsage BIGINT NOT NULL,
	CommitMemory BIGINT NOT NULL,
	PacketPool BIGINT NOT NULL,
	AuthFPS BIGINT NOT NULL,
	GameFPS BIGINT NOT NULL,
	SessionAll BIGINT NOT NULL,
	SessionAuth BIGINT NOT NULL,
	SessionGame BIGINT NOT NULL,
	writer VARCHAR(128) NULL
);
CREATE INDEX IF NOT EXISTS status_server.battle_date_INDEX ON battle (date ASC);

CREATE TABLE IF NOT EXISTS status_server.chat (
	no INTEGER PRIMARY KEY,
	date DATETIME NOT NULL,
	CPUUsage BIGINT NOT NULL,
	CommitMemory BIGINT NOT NULL,
	PacketPool BIGINT NOT NULL,
	SessionAll BIGINT NOT NULL,
	SessionLogin BIGINT NOT NULL,
	writer VARCHAR(128) NULL
);
CREATE INDEX IF NOT EXISTS status_server.chat_date_INDEX ON chat (date ASC);

CREATE TABLE IF NOT EXISTS status_server.login (
	no INTEGER PRIMARY KEY,
	date DATETIME NOT NULL,
	CPUUsage BIGINT NOT NULL,
	CommitMemory BIGINT NOT NULL,
	PacketPool BIGINT NOT NULL,
	SessionAll BIGINT NOT NULL,
	LoginSuccessTPS BIGINT NOT NULL,
	writer VARCHAR(128) NULL
);
CREATE INDEX IF NOT EXISTS status_server.login_date_INDEX ON login (date ASC);
