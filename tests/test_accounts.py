"""`cluster.db.cli`: schema creation and bulk accounts with their accounts file, both backends."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from cluster.config import load
from cluster.db import Database, DatabaseError, DatabaseUnavailable
from cluster.db.accounts import hash_password
from cluster.db.cli import BATCH_SIZE, create_accounts, init_db, read_accounts_file
from cluster.testkit import free_ports
from tests.backends import with_db


def test_init_db_is_idempotent_and_names_what_it_made(backend):
    first = asyncio.run(init_db(backend.config()))
    second = asyncio.run(init_db(backend.config()))
    where, _, what = first.partition("): ")
    assert second.startswith(where + "): ")
    assert what.endswith("created") and second.endswith("nothing to change")
    if backend.name == "mariadb":
        assert first.startswith("schema ready on mysql://")
        assert f"({backend.prefix}accountdb, {backend.prefix}status_server)" in first
    else:
        assert where == f"schema ready on sqlite:///{backend.sqlite_dir} (accountdb, status_server"
    assert "\n" not in first + second


def test_created_accounts_are_listed_in_a_file_that_matches_the_db(backend, tmp_path):
    count = 2 * BATCH_SIZE + 7
    out = tmp_path / "accounts.tsv"
    calls: list[tuple[int, int]] = []
    asyncio.run(init_db(backend.config()))

    span = asyncio.run(
        create_accounts(backend.config(), count, 1, out, lambda done, n: calls.append((done, n)))
    )

    assert span == (1, count)
    assert calls == [(BATCH_SIZE, count), (2 * BATCH_SIZE, count), (count, count)]
    listed = read_accounts_file(out)
    assert [no for no, *_ in listed] == list(range(1, count + 1))
    assert all(len(key) == 64 and key.decode().isalnum() for *_, key in listed)
    assert len({key for *_, key in listed}) == count
    assert listed[41][:3] == (42, "ID_42", "NICK_42")
    assert out.read_text().splitlines()[41] == f"42\tID_42\tNICK_42\t{listed[41][3].decode()}"

    sample = [listed[0], listed[BATCH_SIZE], listed[-1]]

    async def scenario(db: Database) -> list[tuple[int, str | None, str | None, bytes | None]]:
        rows = [await db.account(no) for no, *_ in sample]
        return [(r.account_no, r.user_id, r.nickname, r.session_key) for r in rows if r]

    assert with_db(backend.config(), scenario, init=False) == sample
    assert backend.execute("SELECT COUNT(*), SUM(status) FROM accountdb.status") == [(count, 0)]
    userpass, salt = backend.execute(
        "SELECT userpass, salt FROM accountdb.account WHERE accountno = 42"
    )[0]
    assert len(bytes.fromhex(salt)) == 16
    assert len(userpass) == 64 and userpass != hash_password("", salt)


def test_password_hash_is_sha256_of_salt_then_password():
    salt = "00112233445566778899aabbccddeeff"
    assert hash_password("pw", salt) == hashlib.sha256(f"{salt}pw".encode()).hexdigest()


def test_create_accounts_without_start_continues_after_the_highest_account_no(backend, tmp_path):
    config = backend.config()
    asyncio.run(init_db(config))
    assert asyncio.run(create_accounts(config, 3, None, tmp_path / "a.tsv")) == (1, 3)
    backend.execute(
        "INSERT INTO accountdb.account (accountno, userid, userpass, usernick)"
        " VALUES (41, 'web', 'p', 'web')"
    )
    assert asyncio.run(create_accounts(config, 2, None, tmp_path / "b.tsv")) == (42, 43)
    assert [no for no, *_ in read_accounts_file(tmp_path / "b.tsv")] == [42, 43]


def test_a_clash_stops_at_its_batch_and_keeps_the_batches_before_it(backend, tmp_path):
    config = backend.config()
    asyncio.run(init_db(config))
    asyncio.run(create_accounts(config, 1, BATCH_SIZE + 3, tmp_path / "first.tsv"))
    out = tmp_path / "accounts.tsv"

    with pytest.raises(DatabaseError, match=f"AccountNo {BATCH_SIZE + 3} already exists"):
        asyncio.run(create_accounts(config, 2 * BATCH_SIZE, 1, out))

    assert len(read_accounts_file(out)) == BATCH_SIZE
    assert backend.execute("SELECT COUNT(*) FROM accountdb.account") == [(BATCH_SIZE + 1,)]


def test_create_accounts_rejects_counts_and_starts_below_one(backend, tmp_path):
    with pytest.raises(ValueError, match="count"):
        asyncio.run(create_accounts(backend.config(), 0, None, tmp_path / "a.tsv"))
    with pytest.raises(ValueError, match="start"):
        asyncio.run(create_accounts(backend.config(), 1, 0, tmp_path / "a.tsv"))


def test_cli_functions_name_the_url_when_the_database_is_unreachable(backend, tmp_path):
    if backend.name == "mariadb":
        port = free_ports(1)[0]  # nothing listens there
        config = backend.config(f"mysql://root:s3cret@127.0.0.1:{port}")
        shown = f"mysql://root:***@127.0.0.1:{port}"
    else:
        (tmp_path / "a-file").write_text("")
        config = backend.config(f"sqlite:///{tmp_path / 'a-file' / 'db'}")
        shown = config.db.url
    for call in (init_db(config), create_accounts(config, 5, None, tmp_path / "out.tsv")):
        with pytest.raises(DatabaseUnavailable) as caught:
            asyncio.run(call)
        message = str(caught.value)
        assert message.startswith(shown) and "s3cret" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://127.0.0.1:3306", "names no user"),
        ("mysql://root:s3cret@127.0.0.1:99999", "invalid port"),
        ("mysql://root:s3cret@127.0.0.1:3306/accountdb", "nothing after the port"),
        ("mysql://root@:3306", "names no host"),
    ],
)
def test_a_malformed_url_is_one_line_value_error_without_password(url, problem, tmp_path):
    config = load(None, env={"CLUSTER_DB_URL": url})
    with pytest.raises(ValueError, match=problem) as caught:
        asyncio.run(init_db(config))
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1\tID_1\tNICK_1\t" + "a" * 64 + "\n2\tID_2\tNICK_2\n", ":2: expected 4 .* found 3"),
        ("x\tID_1\tNICK_1\t" + "a" * 64 + "\n", ":1: AccountNo 'x' is not an integer"),
        ("\n1\tID_1\tNICK_1\t" + "a" * 63 + "\n", ":2: session key must be 64 ASCII"),
        ("1\tID_1\tNICK_1\t" + "é" * 64 + "\n", ":1: session key must be 64 ASCII"),
    ],
)
def test_read_accounts_file_names_the_malformed_line(text, problem, tmp_path):
    path = tmp_path / "accounts.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=problem):
        read_accounts_file(path)
