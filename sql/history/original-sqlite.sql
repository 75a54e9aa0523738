-- The original's schema (/work/shared/seed/README.md "DB 테이블") as SQLite takes it.
--
-- Kept for the tests of `cluster db init`'s upgrade (tests/test_schema.py), never run by the
-- cluster. The original ran on MySQL only; this is its DDL with the least SQLite needs: a BIGINT
-- primary key that AUTO_INCREMENT numbered becomes INTEGER PRIMARY KEY (the only auto-numbered
-- key SQLite has), and the inline indexes become CREATE INDEX statements named per table (index
-- names are unique per SQLite database). The column types, NULL-ness and missing columns are the
-- original's: userid / usernick NOT NULL, sessionkey CHAR(64) text, no salt, owner, writer.

CREATE TABLE accountdb.account (
	accountno INTEGER PRIMARY KEY,
	userid CHAR(64) NOT NULL,
	userpass CHAR(64) NOT NULL,
	usernick CHAR(64) NOT NULL
);
CREATE INDEX accountdb.userid_INDEX ON account (userid ASC);

CREATE TABLE accountdb.sessionkey (
	accountno BIGINT NOT NULL,
	sessionkey CHAR(64) NULL,
	PRIMARY KEY (accountno)
);

CREATE TABLE accountdb.status (
	accountno BIGINT NOT NULL,
	status INT NOT NULL DEFAULT 0,
	PRIMARY KEY (accountno)
);

CREATE TABLE accountdb.whiteip (
	no INTEGER PRIMARY KEY,
	ip CHAR(32) NOT NULL
);

CREATE TABLE status_server.hardware (
	no INTEGER PRIMARY KEY,
	date DATETIME NOT NULL,
	CPUUsage BIGINT NOT NULL,
	AvailableMBytes BIGINT NOT NULL,
	NonPagedBytes BIGINT NOT NULL
);
CREATE INDEX status_server.hardware_date_INDEX ON hardware (date ASC);

CREATE TABLE status_server.battle (
	no INTEGER PRIMARY KEY,
	date DATETIME NOT NULL,
	CPUUsage BIGINT NOT NULL,
	CommitMemory BIGINT NOT NULL,
	PacketPool BIGINT NOT NULL,
	AuthFPS BIGINT NOT NULL,
	GameFPS BIGINT NOT NULL,
	SessionAll BIGINT NOT NULL,
	SessionAuth BIGINT NOT NULL,
	SessionGame BIGINT NOT NULL
);
CREATE INDEX status_server.battle_date_INDEX ON battle (date ASC);

CREATE TABLE status_server.chat (
	no INTEGER PRIMARY KEY,
	date DATETIME NOT NULL,
	CPUUsage BIGINT NOT NULL,
	CommitMemory BIGINT NOT NULL,
	PacketPool BIGINT NOT NULL,
	SessionAll BIGINT NOT NULL,
	SessionLogin BIGINT NOT NULL
);
CREATE INDEX status_server.chat_date_INDEX ON chat (date ASC);

CREATE TABLE status_server.login (
	no INTEGER PRIMARY KEY,
	date DATETIME NOT NULL,
	CPUUsage BIGINT NOT NULL,
	CommitMemory BIGINT NOT NULL,
	PacketPool BIGINT NOT NULL,
	SessionAll BIGINT NOT NULL,
	LoginSuccessTPS BIGINT NOT NULL
);
CREATE INDEX status_server.login_date_INDEX ON login (date ASC);
