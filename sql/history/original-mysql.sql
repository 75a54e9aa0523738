-- The original's schema, exactly as its DDL (/work/shared/seed/README.md "DB 테이블"), for MySQL/MariaDB.
--
-- Kept for the tests of `cluster db init`'s upgrade (tests/test_schema.py), never run by the
-- cluster. A template like sql/mysql.sql: {accountdb} and {status_server} are the database
-- names. The CREATE DATABASE lines are this file's; the tables are the original's.

CREATE DATABASE IF NOT EXISTS `{accountdb}`;

CREATE DATABASE IF NOT EXISTS `{status_server}`;

CREATE TABLE `{accountdb}`.`account` (
	`accountno` BIGINT NOT NULL AUTO_INCREMENT,
	`userid` CHAR(64) NOT NULL,
	`userpass` CHAR(64) NOT NULL,
	`usernick` CHAR(64) NOT NULL,
	PRIMARY KEY (`accountno`),
	INDEX `userid_INDEX` (`userid` ASC)
);

CREATE TABLE `{accountdb}`.`sessionkey` (
	`accountno` BIGINT NOT NULL,
	`sessionkey` CHAR(64) NULL,
    PRIMARY KEY (`accountno`)
);

CREATE TABLE `{accountdb}`.`status` (
	`accountno` BIGINT NOT NULL,
	`status` INT NOT NULL DEFAULT 0,
	PRIMARY KEY (`accountno`)
);

CREATE TABLE `{accountdb}`.`whiteip` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`ip` CHAR(32) NOT NULL,
    PRIMARY KEY (`no`)
);

CREATE TABLE `{status_server}`.`hardware` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`date` datetime NOT NULL,
	`CPUUsage` BIGINT NOT NULL,
	`AvailableMBytes` BIGINT NOT NULL,
	`NonPagedBytes` BIGINT NOT NULL,
	PRIMARY KEY (`no`),
	INDEX `date_INDEX` (`date` ASC)
);

CREATE TABLE `{status_server}`.`battle` (
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
	PRIMARY KEY (`no`),
	INDEX `date_INDEX` (`date` ASC)
);

CREATE TABLE `{status_server}`.`chat` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`date` datetime NOT NULL,
	`CPUUsage` BIGINT NOT NULL,
	`CommitMemory` BIGINT NOT NULL,
	`PacketPool` BIGINT NOT NULL,
	`SessionAll` BIGINT NOT NULL,
	`SessionLogin` BIGINT NOT NULL,
	PRIMARY KEY (`no`),
	INDEX `date_INDEX` (`date` ASC)
);

CREATE TABLE `{status_server}`.`login` (
	`no` BIGINT NOT NULL AUTO_INCREMENT,
	`date` datetime NOT NULL,
	`CPUUsage` BIGINT NOT NULL,
	`CommitMemory` BIGINT NOT NULL,
	`PacketPool` BIGINT NOT NULL,
	`SessionAll` BIGINT NOT NULL,
	`LoginSuccessTPS` BIGINT NOT NULL,
	PRIMARY KEY (`no`),
	INDEX `date_INDEX` (`date` ASC)
);
