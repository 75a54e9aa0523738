"""The login side end to end, in both link modes, on both DB backends: real processes, real DBs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster import bus
from cluster.codec import Codec
from cluster.messages import GameLoginStatus, GameResEcho, LoginReqLogin, LoginStatus
from cluster.testkit import async_wait_until, free_ports, wait_until
from dummy.client import GameClient, login_once
from tests.backends import Backend
from tests.harness import ClusterUnderTest, RoleProcess, ScriptedPeer, run

MODES = ["systemlink", "non-systemlink"]
ACCOUNTS = 30


@dataclass
class Account:
    no: int
    user_id: str
    nick: str
    key: bytes


@dataclass
class LoginCluster:
    cluster: ClusterUnderTest
    backend: Backend
    mode: str
    accounts: list[Account]
    roles: dict[str, RoleProcess]

    @property
    def login_port(self) -> int:
        return self.cluster.login_port

    @property
    def game_port(self) -> int:
        return self.cluster.game_port


def create_accounts(cluster: ClusterUnderTest, count: int) -> list[Account]:
    out = cluster.dir / "accounts.tsv"
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "accounts", "create", "--config", str(cluster.config),
         "--count", str(count), "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    accounts = []
    for line in out.read_text().splitlines():
        no, user_id, nick, key, _password = line.split("\t")
        accounts.append(Account(int(no), user_id, nick, key.encode()))
    assert len(accounts) == count
    return accounts


def make_login_cluster(
    make_cluster,
    backend: Backend,
    mode: str,
    start: tuple[str, ...] = ("broker", "game", "auth", "gateway"),
    **sections,
) -> LoginCluster:
    sections.setdefault("cluster", {})["link_mode"] = mode
    sections.setdefault("game", {})["verify_key"] = True
    sections.setdefault("auth", {}).setdefault("link_timeout", 2.0)
    sections["db"] = {**backend.db_section, "timeout": 2.0}
    cluster = make_cluster(**sections)
    accounts = create_accounts(cluster, ACCOUNTS)
    roles = {role: cluster.start(role) for role in start}
    return LoginCluster(cluster, backend, mode, accounts, roles)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def lc(make_cluster, backend: Backend, mode: str) -> LoginCluster:
    return make_login_cluster(make_cluster, backend, mode)


async def full_login(
    lc: LoginCluster, account: Account, game_port: int | None = None, login_port: int | None = None
) -> GameClient:
    reply = await login_once("127.0.0.1", login_port or lc.login_port, account.no, account.key)
    assert reply.status == LoginStatus.OK, reply
    client = await GameClient.connect(reply.game_server_ip, game_port or reply.game_server_port)
    game = await client.login(account.no, account.key)
    assert (game.status, game.account_no) == (GameLoginStatus.OK, account.no)
    return client


def status_of(lc: LoginCluster, account_no: int) -> int | None:
    rows = lc.backend.execute(f"SELECT status FROM accountdb.status WHERE accountno = {account_no}")
    return rows[0][0] if rows else None


# -- the happy path -------------------------------------------------------------------------------


def test_login_then_game_then_echo(lc):
    account = lc.accounts[0]

    async def scenario():
        reply = await login_once("127.0.0.1", lc.login_port, account.no, account.key)
        client = await GameClient.connect("127.0.0.1", lc.game_port)
        game = await client.login(account.no, account.key)
        echoes = await client.echo(100)
        return reply, game, echoes

    reply, game, echoes = run(scenario())
    assert reply.status == LoginStatus.OK
    assert (reply.user_id, reply.nickname) == (account.user_id, account.nick)
    assert (reply.game_server_ip, reply.game_server_port) == ("127.0.0.1", lc.game_port)
    assert (reply.chat_server_ip, reply.chat_server_port) == ("127.0.0.1", lc.game_port)
    assert (game.status, game.account_no) == (GameLoginStatus.OK, account.no)
    assert echoes == [GameResEcho(account.no, i) for i in range(100)]


def test_status_row_is_1_in_game_and_0_after_leaving(lc):
    account = lc.accounts[1]

    async def scenario():
        client = await full_login(lc, account)
        in_game = status_of(lc, account.no)
        await client.close()
        return in_game

    assert run(scenario()) == 1
    wait_until(lambda: status_of(lc, account.no) == 0, what="status row reset")


# -- every status code from a real situation ------------------------------------------------------


def test_each_login_status_from_a_real_situation(lc):
    ok, wrong_key, in_game, no_key, null_key, no_status, null_nick = lc.accounts[2:9]
    lc.backend.execute(f"DELETE FROM accountdb.sessionkey WHERE accountno = {no_key.no}")
    lc.backend.execute(
        f"UPDATE accountdb.sessionkey SET sessionkey = NULL WHERE accountno = {null_key.no}"
    )
    lc.backend.execute(f"DELETE FROM accountdb.status WHERE accountno = {no_status.no}")
    lc.backend.execute(
        f"UPDATE accountdb.account SET usernick = NULL WHERE accountno = {null_nick.no}"
    )

    async def scenario():
        playing = await full_login(lc, in_game)  # stays connected: in game

        async def status(account_no: int, key: bytes) -> int:
            return (await login_once("127.0.0.1", lc.login_port, account_no, key)).status

        return {
            "ok": await status(ok.no, ok.key),
            "wrong_key": await status(wrong_key.no, b"x" * 64),
            "in_game": await status(in_game.no, in_game.key),
            "no_account": await status(10_000_000, b"k" * 64),
            "no_key_row": await status(no_key.no, no_key.key),
            "null_key": await status(null_key.no, null_key.key),
            "no_status_row": await status(no_status.no, no_status.key),
            "null_nick": await status(null_nick.no, null_nick.key),
            "still_playing": len(await playing.echo(1)),
        }

    assert run(scenario()) == {
        "ok": LoginStatus.OK,
        "wrong_key": LoginStatus.FAIL,
        "in_game": LoginStatus.OK,  # replaceable: a new game login would take the session over
        "no_account": LoginStatus.ACCOUNT_MISS,
        "no_key_row": LoginStatus.SESSION_MISS,
        "null_key": LoginStatus.SESSION_MISS,
        "no_status_row": LoginStatus.STATUS_MISS,
        "null_nick": LoginStatus.STATUS_MISS,
        "still_playing": 1,
    }


def test_a_status_row_left_by_a_dead_worker_does_not_lock_the_account_out(lc):
    """A leftover of a crash (status 1, owned by a worker that is gone) is not a lock."""
    account = lc.accounts[24]
    lc.backend.execute(
        "UPDATE accountdb.status SET status = 1, owner = 'game@gone/1/dead'"
        f" WHERE accountno = {account.no}"
    )

    async def scenario():
        client = await full_login(lc, account)  # asserts OK at both ports
        owner = lc.backend.execute(
            f"SELECT status, owner FROM accountdb.status WHERE accountno = {account.no}"
        )[0]
        return await client.echo(1), owner

    echoes, (status, owner) = run(scenario())
    assert echoes == [GameResEcho(account.no, 0)]
    assert status == 1 and owner.startswith("game@")  # now truly in game, held by the worker


def accounts_command(lc: LoginCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster", "accounts", *args, "--config", str(lc.cluster.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_an_operator_lock_holds_until_unlocked_on_both_ports(lc):
    """Status 1 with no owner is an operator's lock (the original's operators set the column):
    the login port answers GAME and a game login FAIL (counted as account_locked), in both link
    modes, until `cluster accounts unlock`."""
    account = lc.accounts[25]
    locked = accounts_command(lc, "lock", str(account.no))
    assert locked.returncode == 0 and locked.stdout.strip() == f"account {account.no} locked"

    async def game_login() -> int:
        client = await GameClient.connect("127.0.0.1", lc.game_port)
        return (await client.login(account.no, account.key)).status

    async def login_port() -> int:
        return (await login_once("127.0.0.1", lc.login_port, account.no, account.key)).status

    assert run(login_port()) == LoginStatus.GAME
    assert run(game_login()) == GameLoginStatus.FAIL  # (systemlink: nothing was pushed)
    assert status_of(lc, account.no) == 1  # the lock stays
    unlocked = accounts_command(lc, "unlock", str(account.no))
    assert unlocked.returncode == 0, unlocked.stderr
    client = run(full_login_and_echo(lc, account))
    assert client == [GameResEcho(account.no, 0)]
    missing = accounts_command(lc, "unlock", "999999")
    assert missing.returncode == 1
    # (the harness's debug logging may add asyncio's own line before it)
    assert missing.stderr.strip().splitlines()[-1] == (
        "cluster accounts: account 999999 has no status row"
    )


async def full_login_and_echo(lc: LoginCluster, account: Account) -> list[GameResEcho]:
    client = await full_login(lc, account)
    try:
        return await client.echo(1)
    finally:
        await client.close()


@pytest.mark.parametrize("mode", ["non-systemlink"], indirect=True)
def test_a_game_login_is_refused_for_a_missing_status_row_or_a_lock(lc):
    """Non-systemlink, straight to the game port with a good key: a missing status row and an
    operator's lock are refused (FAIL), counted by reason, as the login port refuses them."""
    no_row, locked = lc.accounts[26], lc.accounts[27]
    lc.backend.execute(f"DELETE FROM accountdb.status WHERE accountno = {no_row.no}")
    assert accounts_command(lc, "lock", str(locked.no)).returncode == 0

    async def game_login(account: Account) -> int:
        client = await GameClient.connect("127.0.0.1", lc.game_port)
        status = (await client.login(account.no, account.key)).status
        assert await client.wait_closed()
        return status

    assert run(game_login(no_row)) == GameLoginStatus.FAIL
    assert run(game_login(locked)) == GameLoginStatus.FAIL
    assert status_of(lc, no_row.no) is None and status_of(lc, locked.no) == 1
    gateway = lc.roles["gateway"]
    gateway.stop()
    drops = gateway.wait_log(r"stopped: .*drops: (.*)").group(1)
    assert "status_miss=1" in drops and "account_locked=1" in drops


def test_only_game_worker_killed_gives_noserver_and_resets_its_rows(lc):
    account, later = lc.accounts[9], lc.accounts[10]

    async def scenario():
        client = await full_login(lc, account)
        assert status_of(lc, account.no) == 1
        lc.roles["game"].kill()
        assert await client.wait_closed(5)
        lc.roles["broker"].wait_log(r"game game@\S+ gone")
        lc.roles["auth"].wait_log(r"reset 1 status rows held by game@")
        reply = await login_once("127.0.0.1", lc.login_port, later.no, later.key)
        return reply.status

    assert run(scenario()) == LoginStatus.NOSERVER
    assert status_of(lc, account.no) == 0


def test_stopping_the_game_worker_resets_its_status_rows(lc):
    account = lc.accounts[22]

    async def scenario():
        client = await full_login(lc, account)
        assert status_of(lc, account.no) == 1
        assert lc.roles["game"].stop() == 0  # SIGTERM: sessions closed, rows reset, then exit
        return await client.wait_closed(5)

    assert run(scenario())
    assert status_of(lc, account.no) == 0


def test_game_login_with_a_wrong_key_fails(lc):
    account = lc.accounts[11]

    async def scenario():
        await login_once("127.0.0.1", lc.login_port, account.no, account.key)
        client = await GameClient.connect("127.0.0.1", lc.game_port)
        reply = await client.login(account.no, b"y" * 64)
        return reply.status, await client.wait_closed(5)

    assert run(scenario()) == (GameLoginStatus.FAIL, True)


# -- the link modes -------------------------------------------------------------------------------


def test_systemlink_key_is_single_use_and_non_systemlink_key_is_not(lc):
    account = lc.accounts[12]

    async def scenario():
        client = await full_login(lc, account)
        await client.close()
        wait_until(lambda: status_of(lc, account.no) == 0, what="first session's row reset")
        again = await GameClient.connect("127.0.0.1", lc.game_port)
        return (await again.login(account.no, account.key)).status

    expected = GameLoginStatus.FAIL if lc.mode == "systemlink" else GameLoginStatus.OK
    assert run(scenario()) == expected


def test_game_port_without_the_login_port(lc):
    account = lc.accounts[13]

    async def scenario():
        client = await GameClient.connect("127.0.0.1", lc.game_port)
        return (await client.login(account.no, account.key)).status

    # non-systemlink: the game worker reads the stored key; systemlink: nothing was pushed.
    expected = GameLoginStatus.OK if lc.mode == "non-systemlink" else GameLoginStatus.FAIL
    assert run(scenario()) == expected


def second_gateway(lc: LoginCluster) -> tuple[int, int]:
    """Start another gateway of the same cluster on its own ports; returns (game, login)."""
    game_port, login_port = free_ports(2)
    lc.cluster.start(
        "gateway",
        env={
            "CLUSTER_GATEWAY_GAME_PORT": str(game_port),
            "CLUSTER_GATEWAY_LOGIN_PORT": str(login_port),
        },
    )
    return game_port, login_port


@pytest.mark.parametrize("mode", ["systemlink"], indirect=True)
def test_key_pushed_through_one_gateway_admits_through_another(lc):
    account = lc.accounts[14]
    game_port, _ = second_gateway(lc)

    async def scenario():
        client = await full_login(lc, account, game_port=game_port)
        return await client.echo(3)

    assert run(scenario()) == [GameResEcho(account.no, i) for i in range(3)]


@pytest.mark.parametrize("mode", ["non-systemlink"], indirect=True)
def test_res_login_names_the_game_port_of_the_gateway_it_came_through(lc):
    account = lc.accounts[23]
    game_port, login_port = second_gateway(lc)

    async def scenario():
        first = await login_once("127.0.0.1", lc.login_port, account.no, account.key)
        second = await login_once("127.0.0.1", login_port, account.no, account.key)
        return first, second

    first, second = run(scenario())
    assert (first.status, first.game_server_port) == (LoginStatus.OK, lc.game_port)
    assert (second.status, second.game_server_port) == (LoginStatus.OK, game_port)
    assert second.chat_server_port == game_port


def test_a_new_login_through_another_gateway_replaces_the_session(lc):
    """A reconnect racing its old connection's close: the old session is still held when the
    new login arrives (through another gateway, even). A login that proves the key takes it
    over; one that does not changes nothing."""
    account = lc.accounts[15]
    game_port, login_port = second_gateway(lc)

    async def scenario():
        first = await full_login(lc, account)
        # A stranger with the AccountNo but not the key: refused, the session untouched.
        stranger = await GameClient.connect("127.0.0.1", game_port)
        refused = await stranger.login(account.no, b"w" * 64)
        untouched = await first.echo(1)
        via_login = await login_once("127.0.0.1", login_port, account.no, account.key)
        second = await GameClient.connect("127.0.0.1", game_port)
        direct = await second.login(account.no, account.key)
        replaced = await first.wait_closed(10)
        echoes = await second.echo(2)
        row = await asyncio.to_thread(status_of, lc, account.no)  # while `second` plays
        return refused.status, untouched, via_login.status, direct.status, replaced, echoes, row

    refused, untouched, via_login, direct, replaced, echoes, row = run(scenario())
    assert refused == GameLoginStatus.FAIL
    assert untouched == [GameResEcho(account.no, 0)]
    assert via_login == LoginStatus.OK  # the session in game is replaceable
    assert direct == GameLoginStatus.OK
    assert replaced
    assert echoes == [GameResEcho(account.no, 0), GameResEcho(account.no, 1)]
    assert row == 1  # the row passed to the new session
    gateway = lc.roles["gateway"]
    gateway.stop()
    assert "replaced=1" in gateway.wait_log(r"stopped: .*drops: (.*)").group(1)


# -- systemlink ACKs, with a scripted game worker -------------------------------------------------


@pytest.fixture
def scripted(make_cluster, backend):
    lc = make_login_cluster(
        make_cluster,
        backend,
        "systemlink",
        start=("broker", "auth", "gateway"),
        auth={"link_timeout": 1.5},
    )
    peer = ScriptedPeer(lc.cluster.endpoint, "game", interval=0.5)
    lc.roles["broker"].wait_log(r"game registered: scripted-game")  # ROSTER goes out next
    yield lc, peer
    peer.close()


def _push_of(peer: ScriptedPeer) -> tuple[bytes, list]:
    frames = peer.expect(bus.FROM)
    item = bus.unpack_body(frames[2])[0]
    assert item[1] == bus.LinkType.REQ_NEW_CLIENT_LOGIN
    return frames[1], item


def test_stale_parameter_ack_is_ignored_and_the_right_one_admits(scripted):
    lc, peer = scripted
    account = lc.accounts[16]

    async def scenario():
        task = asyncio.create_task(login_once("127.0.0.1", lc.login_port, account.no, account.key))
        auth_id, push = await asyncio.to_thread(_push_of, peer)
        parameter, _, account_no, key, _ = push
        assert (account_no, key) == (account.no, account.key)
        stale = parameter - 1
        peer.send([bus.TO, auth_id, bus.pack_body([[stale, 10003, account.no, stale]])])
        peer.send([bus.TO, auth_id, bus.pack_body([[parameter, 10003, account.no, parameter]])])
        return await task

    assert run(scenario()).status == LoginStatus.OK
    lc.roles["auth"].stop()
    assert "'stale_ack': 1" in lc.roles["auth"].log()


def test_stale_ack_alone_does_not_admit_and_the_key_is_cancelled(scripted):
    lc, peer = scripted
    account = lc.accounts[17]

    async def scenario():
        task = asyncio.create_task(login_once("127.0.0.1", lc.login_port, account.no, account.key))
        auth_id, push = await asyncio.to_thread(_push_of, peer)
        parameter = push[0]
        peer.send(
            [bus.TO, auth_id, bus.pack_body([[parameter + 7, 10003, account.no, parameter + 7]])]
        )
        reply = await task  # no right ACK: the link timeout answers
        cancel = await asyncio.to_thread(peer.expect, bus.FROM)
        return reply, parameter, bus.unpack_body(cancel[2])[0]

    reply, parameter, cancel = run(scenario())
    assert reply.status == LoginStatus.NOSERVER
    assert cancel == [parameter, bus.Control.CANCEL_KEY, account.no, parameter]


def test_no_ack_in_time_leaves_no_pending_key_on_a_real_worker(make_cluster, backend):
    lc = make_login_cluster(
        make_cluster,
        backend,
        "systemlink",
        auth={"link_timeout": 1.0},
        broker={"heartbeat_interval": 1.0, "heartbeat_liveness": 5},
    )
    account = lc.accounts[18]
    game = lc.roles["game"]

    async def scenario():
        game.send_signal(signal.SIGSTOP)  # registered, but cannot answer the push in time
        try:
            reply = await login_once("127.0.0.1", lc.login_port, account.no, account.key)
        finally:
            game.send_signal(signal.SIGCONT)
        lc.roles["auth"].wait_log(r"no ACK for account")
        client = await GameClient.connect("127.0.0.1", lc.game_port)
        return reply.status, (await client.login(account.no, account.key)).status

    login_status, game_status = run(scenario())
    assert login_status == LoginStatus.NOSERVER
    assert game_status == GameLoginStatus.FAIL  # the late push was cancelled: no key left
    assert game.stop() == 0
    assert "'key_cancelled': 1" in game.log()


# -- the DB going away ----------------------------------------------------------------------------


async def attempt_login(lc: LoginCluster, account: Account) -> tuple[str, int]:
    """A whole login; ("game", OK) when it succeeded, else where it failed and with what."""
    reply = await login_once("127.0.0.1", lc.login_port, account.no, account.key, timeout=15)
    if reply.status != LoginStatus.OK:
        return "login", reply.status
    client = await GameClient.connect("127.0.0.1", lc.game_port)
    game = await client.login(account.no, account.key, timeout=15)
    await client.close()
    return "game", game.status


def test_db_outage_fails_logins_with_a_status_keeps_sessions_and_recovers(lc):
    playing, during, after = lc.accounts[19:22]

    async def scenario():
        client = await full_login(lc, playing)
        with lc.backend.outage():
            outcome = await attempt_login(lc, during)
            echoes = await client.echo(20)

        attempts: list[tuple[str, int]] = []

        async def logged_in() -> bool:  # the DB is back: logins recover, nothing restarted
            attempts.append(await attempt_login(lc, after))
            return attempts[-1] == ("game", GameLoginStatus.OK)

        await async_wait_until(
            logged_in, "a login after the outage", timeout=15, detail=lambda: attempts[-3:]
        )
        return outcome, echoes

    outcome, echoes = run(scenario())
    if lc.backend.name == "mariadb":  # nothing can be read: the login port answers
        assert outcome == ("login", LoginStatus.NOSERVER)
    else:  # SQLite's write lock: reads go on, the game worker cannot record the session
        assert outcome == ("game", GameLoginStatus.FAIL)
    assert echoes == [GameResEcho(playing.no, i) for i in range(20)]


# -- whiteip --------------------------------------------------------------------------------------


def test_whiteip_enforced_admits_only_listed_addresses(make_cluster, backend):
    lc = make_login_cluster(
        make_cluster,
        backend,
        "non-systemlink",
        start=(),
        gateway={"whiteip": "enforce", "whiteip_refresh": 0.3},
    )
    lc.backend.execute("INSERT INTO accountdb.whiteip (ip) VALUES ('127.0.0.1')")
    for role in ("broker", "game", "auth", "gateway"):
        lc.roles[role] = lc.cluster.start(role)
    account = lc.accounts[0]

    async def attempt(source: str) -> bool:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", lc.login_port, local_addr=(source, 0)
            )
        except OSError:
            return False
        writer.write(Codec().encode(LoginReqLogin(account.no, account.key)))
        try:
            data = await reader.read(65536)
        except ConnectionError:  # aborted at accept: a reset
            data = b""
        writer.close()
        return bool(data)

    assert run(attempt("127.0.0.1")) is True
    assert run(attempt("127.0.0.2")) is False
    lc.backend.execute("INSERT INTO accountdb.whiteip (ip) VALUES ('127.0.0.2')")
    wait_until(lambda: run(attempt("127.0.0.2")), timeout=10, what="127.0.0.2 admitted")
    lc.roles["gateway"].stop()
    assert "not_whitelisted=" in lc.roles["gateway"].log()


def test_db_init_is_idempotent_from_the_cli(make_cluster, backend):
    cluster = make_cluster(db=backend.db_section)
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "cluster", "db", "init", "--config", str(cluster.config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert backend.execute("SELECT COUNT(*) FROM accountdb.v_account") == [(0,)]


def test_accounts_file_lists_what_the_db_holds(make_cluster, backend):
    cluster = make_cluster(db=backend.db_section)
    accounts = create_accounts(cluster, 5)
    more = create_accounts(cluster, 3)  # continues after the highest AccountNo
    assert [a.no for a in more] == [accounts[-1].no + 1 + i for i in range(3)]
    for account in accounts + more:
        rows = backend.execute(
            f"SELECT userid, usernick, sessionkey, status FROM accountdb.v_account "
            f"WHERE accountno = {account.no}"
        )
        user_id, nick, key, status = rows[0]
        assert (user_id.strip(), nick.strip(), bytes(key), status) == (
            account.user_id,
            account.nick,
            account.key,
            0,
        )
        assert len(account.key) == 64


def test_accounts_create_with_unreachable_db_exits_1_with_one_line(tmp_path: Path):
    port = free_ports(1)[0]
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "accounts", "create", "--count", "1",
         "--out", str(tmp_path / "a.tsv")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CLUSTER_DB_URL": f"mysql://root@127.0.0.1:{port}",
             "CLUSTER_DB_TIMEOUT": "2"},
    )  # fmt: skip
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(port) in result.stderr


def test_the_original_dummies_accounts_log_in_with_any_key(make_cluster, backend: Backend, mode):
    """auth.dummy_accounts_below: below it any key logs in (the original's dummies used random
    keys for accounts under 1,000,000); at and above it the key must be right."""
    lc = make_login_cluster(make_cluster, backend, mode, auth={"dummy_accounts_below": 10})
    dummy, real = lc.accounts[3], lc.accounts[12]  # AccountNo 4 and 13
    random_key = os.urandom(64)

    async def scenario():
        reply = await login_once("127.0.0.1", lc.login_port, dummy.no, random_key)
        client = await GameClient.connect("127.0.0.1", lc.game_port)
        game = await client.login(dummy.no, random_key)
        refused = await login_once("127.0.0.1", lc.login_port, real.no, random_key)
        return reply.status, game.status, await client.echo(1), refused.status

    assert run(scenario()) == (
        LoginStatus.OK,
        GameLoginStatus.OK,
        [GameResEcho(dummy.no, 0)],
        LoginStatus.FAIL,
    )
    assert "auth.dummy_accounts_below = 10" in lc.roles["auth"].log()
