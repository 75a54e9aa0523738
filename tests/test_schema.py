"""`cluster db init` on a DB that already holds an earlier schema: the original's DDL or this
project's first schema (both kept in sql/history/), on both backends; it upgrades them to the
current schema, says what it changed, records the version, keeps the rows, and refuses in one line
what it cannot upgrade safely."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest

from cluster.db import SCHEMA_VERSION, BattleSample, Database, DatabaseError
from cluster.db.cli import init_db
from cluster.db.schema import split
from cluster.launch import admin
from tests.backends import Backend, with_db

HISTORY = Path(__file__).resolve().parent.parent / "sql" / "history"
KEY_TEXT = "k" * 32 + "0123456789abcdef" * 2  # a key as the original stored it: 64 characters
ARGON = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$" + "h" * 43


def create_old_schema(backend: Backend, name: str) -> None:
    """Run sql/history/<name>-<mysql|sqlite>.sql raw, then put account 1 (with a text key), a
    white IP and a monitoring row in it, as the old schema had them."""
    if backend.name == "mariadb":
        text = (HISTORY / f"{name}-mysql.sql").read_text(encoding="utf-8")
        text = text.replace("{accountdb}", f"{backend.prefix}accountdb")
        text = text.replace("{status_server}", f"{backend.prefix}status_server")
    else:
        backend.sqlite_dir.mkdir(parents=True, exist_ok=True)
        text = (HISTORY / f"{name}-sqlite.sql").read_text(encoding="utf-8")
    for statement in split(text):
        backend.execute(statement)
    rows = [
        "INSERT INTO accountdb.account (accountno, userid, userpass, usernick)"
        " VALUES (1, 'ID_1', 'oldpass', 'NICK_1')",
        "INSERT INTO accountdb.status (accountno, status) VALUES (1, 0)",
        "INSERT INTO accountdb.whiteip (ip) VALUES ('127.0.0.1')",
        "INSERT INTO status_server.hardware (date, CPUUsage, AvailableMBytes, NonPagedBytes)"
        " VALUES ('2020-03-20 10:00:00', 1, 2, 3)",
    ]
    for sql in rows:
        backend.execute(sql)
    if name == "original":  # a CHAR(64) column: the key is text
        backend.execute("INSERT INTO accountdb.sessionkey VALUES (1, ?)", (KEY_TEXT,))
    else:  # BINARY(64) / BLOB
        backend.execute("INSERT INTO accountdb.sessionkey VALUES (1, ?)", (KEY_TEXT.encode(),))


def init(backend: Backend) -> str:
    """`cluster db init`'s line (the function the CLI prints)."""
    line = asyncio.run(init_db(backend.config()))
    assert "\n" not in line
    return line


def shape(backend: Backend) -> dict[str, Any]:
    """Every table's and view's columns (type, NULL-able) and index names, as the DB reports them:
    equal for an upgraded DB and a freshly created one."""
    found: dict[str, Any] = {}
    if backend.name == "mariadb":
        names = (f"{backend.prefix}accountdb", f"{backend.prefix}status_server")
        for schema_name, table, column, column_type, nullable in backend.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE"
            " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN (?, ?)"
            " ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
            names,
        ):
            key = f"{schema_name.removeprefix(backend.prefix)}.{table}"
            found.setdefault(key, []).append((column, column_type.lower(), nullable == "YES"))
        for schema_name, table, index in backend.execute(
            "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME"
            " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN (?, ?)",
            names,
        ):
            key = f"{schema_name.removeprefix(backend.prefix)}.{table} indexes"
            found.setdefault(key, set()).add(index)
        return found
    for database in ("accountdb", "status_server"):
        for kind, name, table in backend.execute(
            f"SELECT type, name, tbl_name FROM {database}.sqlite_master"
            " WHERE name NOT LIKE 'sqlite_%'"
        ):
            if kind == "index":
                found.setdefault(f"{database}.{table} indexes", set()).add(name)
                continue
            info = backend.execute(f"PRAGMA {database}.table_info({name})")
            # SQLite enforces no length: a table that needed no rebuild may keep CHAR(64)
            found[f"{database}.{name}"] = [
                (row[1], row[2].upper().split("(")[0], not row[3], row[5] > 0) for row in info
            ]
    return found


def fresh_shape(backend: Backend, tmp_path: Path) -> dict[str, Any]:
    fresh = Backend(backend.name, tmp_path / "fresh")
    try:
        init(fresh)
        return shape(fresh)
    finally:
        fresh.close()


def same_kind_of_types(backend: Backend, found: dict[str, Any]) -> dict[str, Any]:
    """`found` with SQLite's declared text types reduced to their affinity (CHAR / VARCHAR)."""
    if backend.name == "mariadb":
        return found
    text = {"CHAR", "VARCHAR"}
    return {
        key: value
        if key.endswith("indexes")
        else [(c, "TEXT" if t in text else t, *rest) for c, t, *rest in value]
        for key, value in found.items()
    }


async def play(db: Database) -> dict[str, Any]:
    """What the cluster does with an account: read it, take it in game, give it a password and a
    new key, write a monitoring row."""
    seen: dict[str, Any] = {"row": await db.account(1)}
    seen["entered"] = await db.enter_game(1, "game#1")
    seen["owners"] = await db.owners_in_game()
    seen["password"] = await db.set_password(1, ARGON)
    seen["login"] = await db.login_row("ID_1")
    await db.issue_key(1, b"\xff" * 64, 1_900_000_000)
    seen["key"] = await db.session_key_and_expiry(1)
    await db.insert_battle(BattleSample(1, 2, 3, 4, 5, 6, 7, 8, writer="game#1"))
    seen["white"] = await db.white_ips()
    return seen


@pytest.mark.parametrize("old", ["original", "v1"])
def test_init_upgrades_an_earlier_schema_and_keeps_its_rows(backend, tmp_path, old):
    create_old_schema(backend, old)

    line = init(backend)

    assert f"version {SCHEMA_VERSION}; upgraded: " in line, line
    for change in ("account.userpass widened", "sessionkey.expires added", "v_account"):
        assert change in line, line
    if old == "original":
        for change in ("status.owner added", "account.salt added", "battle.writer added"):
            assert change in line, line
    assert backend.execute("SELECT version FROM accountdb.schema_version") == [(SCHEMA_VERSION,)]
    expected = fresh_shape(backend, tmp_path)
    assert same_kind_of_types(backend, shape(backend)) == same_kind_of_types(backend, expected)

    # The old rows are all there, the old text key reads as the same 64 bytes.
    before = with_db(backend.config(), lambda db: db.account(1), init=False)
    assert before is not None
    assert (before.user_id, before.nickname, before.session_key) == (
        "ID_1",
        "NICK_1",
        KEY_TEXT.encode(),
    )
    assert (before.status, before.key_expires) == (0, None)
    assert with_db(backend.config(), lambda db: db.session_key(1), init=False) == KEY_TEXT.encode()
    assert backend.execute("SELECT COUNT(*) FROM status_server.hardware") == [(1,)]

    seen = with_db(backend.config(), play, init=False)
    assert seen["entered"] and seen["owners"] == ["game#1"]
    assert seen["password"] and seen["login"] == (1, ARGON)
    assert seen["key"] == (b"\xff" * 64, 1_900_000_000)
    assert seen["white"] == {"127.0.0.1"}
    assert backend.execute("SELECT writer FROM status_server.battle") == [("game#1",)]

    assert init(backend).endswith(f"version {SCHEMA_VERSION}, nothing to change")


def test_init_creates_then_has_nothing_to_change(backend):
    first, second = init(backend), init(backend)
    assert first.endswith(f": version {SCHEMA_VERSION}, created"), first
    assert second.endswith(f": version {SCHEMA_VERSION}, nothing to change"), second
    assert first.startswith("schema ready on ")
    assert backend.execute("SELECT version FROM accountdb.schema_version") == [(SCHEMA_VERSION,)]


def test_init_finishes_a_partial_schema(backend):
    init(backend)
    backend.execute("DROP VIEW accountdb.v_account")
    backend.execute("DROP TABLE accountdb.whiteip")
    line = init(backend)
    assert "upgraded: whiteip created, v_account created" in line, line
    assert "version recorded" not in line


def column_names(backend: Backend, table: str) -> list[str]:
    """The columns of accountdb.`table`."""
    if backend.name == "sqlite":
        return [row[1] for row in backend.execute(f"PRAGMA accountdb.table_info({table})")]
    rows = backend.execute(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ?"
        " AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (f"{backend.prefix}accountdb", table),
    )
    return [name for (name,) in rows]


def run_cli(backend: Backend, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = admin.main(argparse.Namespace(command="db"), backend.config())
    out, err = capsys.readouterr()
    return code, out, err


def test_a_newer_schema_is_refused_in_one_line(backend, capsys):
    init(backend)
    backend.execute("UPDATE accountdb.schema_version SET version = ?", (SCHEMA_VERSION + 1,))

    with pytest.raises(DatabaseError, match=f"version {SCHEMA_VERSION + 1}, newer"):
        init(backend)
    code, out, err = run_cli(backend, capsys)

    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and f"version {SCHEMA_VERSION + 1}, newer" in err, err
    assert backend.execute("SELECT version FROM accountdb.schema_version") == [
        (SCHEMA_VERSION + 1,)
    ]


def test_a_column_that_cannot_be_converted_is_refused_before_anything_changes(backend, capsys):
    if backend.name == "sqlite":
        backend.sqlite_dir.mkdir(parents=True)
    else:
        backend.execute(f"CREATE DATABASE `{backend.prefix}accountdb`")
    backend.execute(
        "CREATE TABLE accountdb.account (accountno BIGINT NOT NULL, userid CHAR(64) NULL,"
        " userpass INT NOT NULL, usernick CHAR(64) NULL, PRIMARY KEY (accountno))"
    )
    backend.execute("CREATE TABLE accountdb.status (accountno BIGINT NOT NULL PRIMARY KEY)")

    code, out, err = run_cli(backend, capsys)

    assert (code, out) == (1, "")
    assert err.count("\n") == 1, err
    assert "account.userpass is int" in err.lower() and "VARCHAR(255)" in err, err
    assert "nothing was changed" in err
    # Nothing was changed: status.status was not added, no other table was created.
    if backend.name == "sqlite":
        tables = backend.execute("SELECT name FROM accountdb.sqlite_master WHERE type = 'table'")
    else:
        tables = backend.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (f"{backend.prefix}accountdb",),
        )
    assert sorted(name for (name,) in tables) == ["account", "status"]
    assert len(backend.execute("SELECT * FROM accountdb.status")) == 0
    assert column_names(backend, "status") == ["accountno"]


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_mariadb_refuses_a_text_key_longer_than_64_bytes(backend, capsys):
    create_old_schema(backend, "original")
    backend.execute(
        f"ALTER TABLE `{backend.prefix}accountdb`.`sessionkey`"
        " MODIFY `sessionkey` CHAR(64) CHARACTER SET utf8mb4 NULL"
    )
    backend.execute("UPDATE accountdb.sessionkey SET sessionkey = ?", ("é" * 64,))

    code, _, err = run_cli(backend, capsys)

    assert code == 1 and err.count("\n") == 1, err
    assert "sessionkey.sessionkey holds 1 value(s) longer than 64 bytes" in err, err
    assert backend.execute("SELECT sessionkey FROM accountdb.sessionkey") == [("é" * 64,)]
    assert "owner" not in column_names(backend, "status")
