"""The chat port and the chat workers against real processes: the original ChatServer's rules,
sector fan-out across gateways and chat workers, both link modes, a chat worker's death."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import struct
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pytest

from cluster import bus
from cluster.codec import Codec
from cluster.messages import (
    CHAT_MESSAGE_MAX,
    ChatReqHeartbeat,
    ChatReqLogin,
    ChatReqMessage,
    ChatReqSectorMove,
    ChatResLogin,
    ChatResMessage,
    ChatResSectorMove,
    GameLoginStatus,
    LoginStatus,
)
from cluster.testkit import free_ports, wait_until
from dummy.client import ChatClient, GameClient, login_once
from tests.backends import Backend
from tests.harness import ClusterUnderTest, RoleProcess, ScriptedPeer, run
from tests.test_login import Account, create_accounts

CODEC = Codec()


@dataclass
class Gateway:
    process: RoleProcess
    chat_port: int
    game_port: int
    login_port: int


def chat_cluster(
    make_cluster: Any, chat_workers: int = 1, gateways: int = 1, **sections: Any
) -> tuple[ClusterUnderTest, list[RoleProcess], list[Gateway]]:
    """Broker, chat workers and gateways (chat enabled), each ready."""
    sections.setdefault("chat", {})["enabled"] = True
    cluster = make_cluster(**sections)
    cluster.start("broker")
    workers = [cluster.start("chat") for _ in range(chat_workers)]
    return cluster, workers, [start_gateway(cluster, first=i == 0) for i in range(gateways)]


def start_gateway(cluster: ClusterUnderTest, first: bool = False) -> Gateway:
    """A gateway of `cluster` (the config's ports for the first, fresh ones for the others)."""
    if first:
        ports = (cluster.chat_port, cluster.game_port, cluster.login_port)
        return Gateway(cluster.start("gateway"), *ports)
    chat_port, game_port, login_port = free_ports(3)
    env = {"CLUSTER_GATEWAY_CHAT_PORT": str(chat_port), "CLUSTER_GATEWAY_GAME_PORT":
           str(game_port), "CLUSTER_GATEWAY_LOGIN_PORT": str(login_port)}  # fmt: skip
    return Gateway(cluster.start("gateway", env=env), chat_port, game_port, login_port)


def stopped_drops(gateway: RoleProcess) -> dict[str, int]:
    """The drop counts of a gateway's "stopped:" line (stops it)."""
    gateway.stop()
    text = gateway.wait_log(r"stopped: .*drops: (.*)").group(1)
    if text == "none":
        return {}
    return {k: int(v) for k, v in (pair.split("=") for pair in text.split())}


def worker_counter(worker: RoleProcess, name: str) -> int:
    """A counter of a chat worker's "stopped; counters" line (stops it)."""
    worker.stop()
    line = worker.wait_log(r"chat stopped; counters: (.*)").group(1)
    found = re.search(rf"'{name}': (\d+)", line)
    return int(found.group(1)) if found else 0


async def chatter(port: int, account_no: int, sector: tuple[int, int] | None = None,
                  name: str = "") -> ChatClient:  # fmt: skip
    """A chat client logged in (no key check in these clusters) and, if given, in `sector`."""
    client = await ChatClient.connect("127.0.0.1", port)
    reply = await client.login(account_no, name or f"id{account_no}", f"nick{account_no}")
    assert (reply.status, reply.account_no) == (1, account_no)
    if sector is not None:
        moved = await client.move(*sector)
        assert moved == ChatResSectorMove(account_no, *sector)
    return client


def near(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] - b[0]) <= 1 and abs(a[1] - b[1]) <= 1


def raw(mtype: int, body: bytes) -> bytes:
    """One framed packet with any payload (for what a cheater or a broken client sends)."""
    return CODEC.frame(struct.pack("<H", mtype) + body)


# -- the chat port's rules ------------------------------------------------------------------------


def test_login_reply_is_the_original_layout_and_names_stop_at_the_first_nul(make_cluster):
    _, _, (gw,) = chat_cluster(make_cluster)

    async def scenario():
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.chat_port)
        # The original client's WCHAR[20] fields: the name, a NUL, then whatever was in memory.
        user_id = "abc".encode("utf-16-le") + b"\0\0" + "garbage".encode("utf-16-le")
        nickname = "Nick".encode("utf-16-le") + b"\0\0" + b"\xff" * 8
        body = struct.pack("<q40s40s64s", 7, user_id, nickname, b"k" * 64)
        writer.write(raw(ChatReqLogin.TYPE, body))
        reply = await asyncio.wait_for(reader.readexactly(5 + 11), 10)
        listener = await chatter(gw.chat_port, 8, (3, 3))
        writer.write(CODEC.encode(ChatReqSectorMove(7, 3, 4)))
        moved = await asyncio.wait_for(reader.readexactly(5 + 14), 10)
        writer.write(CODEC.encode(ChatReqMessage(7, "hi".encode("utf-16-le"))))
        heard = await listener.messages(1)
        writer.close()
        return reply, moved, heard

    reply, moved, heard = run(scenario())
    # 5-byte header (code 0x77, length 11), then <HBq: type 2, status 1, AccountNo 7.
    assert reply[0] == 0x77 and struct.unpack_from("<H", reply, 1)[0] == 11
    assert CODEC.decoder({ChatResLogin.TYPE}).feed(reply) == [ChatResLogin(1, 7)]
    assert CODEC.decoder({ChatResSectorMove.TYPE}).feed(moved) == [ChatResSectorMove(7, 3, 4)]
    assert heard == [ChatResMessage(7, "abc", "Nick", "hi".encode("utf-16-le"))]


VIOLATIONS = [
    # (what the cheater sends after logging in and entering sector (5, 5), the drop reason)
    ("x out of range", lambda a: CODEC.encode(ChatReqSectorMove(a, 100, 5)), "sector_out_of_range"),
    ("y out of range", lambda a: CODEC.encode(ChatReqSectorMove(a, 5, 65535)),
     "sector_out_of_range"),
    ("move as another", lambda a: CODEC.encode(ChatReqSectorMove(a + 1, 5, 5)), "account_mismatch"),
    ("say as another", lambda a: CODEC.encode(ChatReqMessage(a + 1, b"h\0")), "account_mismatch"),
    ("unknown type", lambda a: raw(8, b""), "unknown_type"),
    ("a game-port type", lambda a: raw(1003, struct.pack("<qq", a, 1)), "unknown_type"),
    ("short read", lambda a: raw(ChatReqMessage.TYPE, struct.pack("<qH", a, 10) + b"abcd"),
     "wrong_size"),
    ("trailing bytes", lambda a: raw(ChatReqSectorMove.TYPE, struct.pack("<qHH", a, 1, 1) + b"x"),
     "wrong_size"),
    ("message too long", lambda a: raw(ChatReqMessage.TYPE, struct.pack(
        "<qH", a, CHAT_MESSAGE_MAX + 2) + b"a" * (CHAT_MESSAGE_MAX + 2)), "tail_too_long"),
    ("login again", lambda a: CODEC.encode(ChatReqLogin(a, "x", "y", b"k" * 64)), "login_in_game"),
    ("heartbeat with a body", lambda a: raw(ChatReqHeartbeat.TYPE, b"\0"), "wrong_size"),
]  # fmt: skip


def test_every_violation_closes_only_that_client_counted_by_reason(make_cluster):
    _, _, (gw,) = chat_cluster(make_cluster)

    async def scenario():
        honest = await chatter(gw.chat_port, 1, (5, 5))
        closed = []
        for i, (_, packet, _) in enumerate(VIOLATIONS):
            account = 100 + 10 * i
            cheater = await chatter(gw.chat_port, account, (5, 5))
            cheater.send_raw(packet(account))
            closed.append(await cheater.wait_closed(10))
            # The honest neighbour keeps chatting, and hears itself exactly once.
            sent = honest.say(f"still here {i}")
            assert [m.message for m in await honest.messages(1)] == [sent]
        # Before any login, only CS_CHAT_REQ_LOGIN is allowed.
        early = await ChatClient.connect("127.0.0.1", gw.chat_port)
        early.send(ChatReqMessage(9, b"h\0"))
        closed.append(await early.wait_closed(10))
        return closed

    closed = run(scenario())
    assert closed == [True] * (len(VIOLATIONS) + 1)
    drops = stopped_drops(gw.process)
    expected: dict[str, int] = {"not_logged_in": 1}
    for _, _, reason in VIOLATIONS:
        expected[reason] = expected.get(reason, 0) + 1
    assert {k: v for k, v in drops.items() if k in expected} == expected


def test_a_message_reaches_the_3x3_sectors_around_the_sender_and_nobody_else(make_cluster):
    _, _, (gw,) = chat_cluster(make_cluster)
    sectors = [(0, 0), (1, 1), (2, 2), (0, 1), (50, 50), (51, 49), (52, 50), (99, 99), (98, 98),
               (99, 0), (50, 50)]  # fmt: skip

    async def scenario():
        clients = [await chatter(gw.chat_port, 1 + i, s) for i, s in enumerate(sectors)]
        heard: dict[int, list[tuple[int, bytes]]] = {}
        for sender in clients:
            sender.say(f"from {sender.account_no}")
            await sender.writer.drain()
            await asyncio.sleep(0)  # (not a wait for readiness: just lets the writes go out)
        for client in clients:
            got = await client.quiet(1.5)
            heard[client.account_no] = [(m.account_no, m.message) for m in got]
        return heard

    heard = run(scenario())
    for i, sector in enumerate(sectors):
        expected = sorted(
            (1 + j, f"from {1 + j}".encode("utf-16-le"))
            for j, other in enumerate(sectors) if near(sector, other)
        )  # fmt: skip
        assert sorted(heard[1 + i]) == expected, (sector, heard[1 + i])


def test_a_message_before_the_first_move_reaches_nobody(make_cluster):
    _, _, (gw,) = chat_cluster(make_cluster)

    async def scenario():
        listener = await chatter(gw.chat_port, 1, (0, 0))
        newcomer = await chatter(gw.chat_port, 2)  # logged in, no sector yet
        newcomer.say("anyone?")
        unheard = await listener.quiet(1.0) + await newcomer.quiet(0.2)
        await newcomer.move(0, 1)
        sent = newcomer.say("now?")
        return unheard, await listener.messages(1), await newcomer.messages(1), sent

    unheard, heard, echoed, sent = run(scenario())
    assert unheard == []
    assert heard == echoed == [ChatResMessage(2, "id2", "nick2", sent)]


def test_a_sector_move_takes_effect_for_the_next_message(make_cluster):
    _, _, (gw,) = chat_cluster(make_cluster)

    async def scenario():
        left = await chatter(gw.chat_port, 1, (10, 10))
        right = await chatter(gw.chat_port, 2, (20, 20))
        mover = await chatter(gw.chat_port, 3, (10, 11))
        # Pipelined: a message, a move, a message: the first is said at (10, 11), the second
        # at (20, 21); the mover hears both of its own, the move's answer between them.
        first = mover.say("here")
        mover.send(ChatReqSectorMove(3, 20, 21))
        second = mover.say("there")
        await mover.writer.drain()
        mover_got = [await mover.recv() for _ in range(3)]
        return first, second, mover_got, await left.quiet(1.0), await right.quiet(0.5)

    first, second, mover_got, left_got, right_got = run(scenario())
    assert mover_got == [ChatResMessage(3, "id3", "nick3", first), ChatResSectorMove(3, 20, 21),
                         ChatResMessage(3, "id3", "nick3", second)]  # fmt: skip
    assert left_got == [ChatResMessage(3, "id3", "nick3", first)]
    assert right_got == [ChatResMessage(3, "id3", "nick3", second)]


def test_a_silent_chat_client_is_dropped_at_the_heartbeat_timeout(make_cluster):
    _, _, (gw,) = chat_cluster(make_cluster, gateway={"heartbeat_timeout": 2.0})

    async def scenario():
        silent = await chatter(gw.chat_port, 1, (1, 1))
        beating = await chatter(gw.chat_port, 2, (1, 1))

        async def beat():
            while True:
                beating.heartbeat()
                await asyncio.sleep(0.5)

        task = asyncio.create_task(beat())
        dropped = await silent.wait_closed(15)
        sent = beating.say("alive")
        heard = await beating.messages(1)
        task.cancel()
        return dropped, heard, sent

    dropped, heard, sent = run(scenario())
    assert dropped
    assert heard == [ChatResMessage(2, "id2", "nick2", sent)]
    assert stopped_drops(gw.process).get("heartbeat_timeout") == 1


# -- many gateways, many chat workers -------------------------------------------------------------


def linked_cluster(
    make_cluster: Any, mode: str, accounts: int, **sections: Any
) -> tuple[ClusterUnderTest, list[Account], list[RoleProcess], list[Gateway]]:
    """A cluster with accounts in its (SQLite) DB and key checks in `mode`: broker, monitor, a
    game worker, two chat workers, an auth worker and two gateways."""
    cluster = make_cluster(
        cluster={"link_mode": mode}, game={"verify_key": True}, chat={"enabled": True},
        auth={"link_timeout": 5.0}, **sections,
    )  # fmt: skip
    made = create_accounts(cluster, accounts)
    for role in ("broker", "monitor", "game"):
        cluster.start(role)
    workers = [cluster.start("chat") for _ in range(2)]
    cluster.start("auth")
    return cluster, made, workers, [start_gateway(cluster, first=True), start_gateway(cluster)]


async def player(gateway: Gateway, account: Account, sector: tuple[int, int]) -> ChatClient:
    """The whole path of a client: the login port, then the chat port it names, then a sector."""
    reply = await login_once("127.0.0.1", gateway.login_port, account.no, account.key)
    assert reply.status == LoginStatus.OK, reply
    assert reply.chat_server_port == gateway.chat_port
    client = await ChatClient.connect(reply.chat_server_ip, reply.chat_server_port)
    answer = await client.login(account.no, account.user_id, account.nick, account.key)
    assert (answer.status, answer.account_no) == (1, account.no)
    assert await client.move(*sector) == ChatResSectorMove(account.no, *sector)
    return client


@pytest.mark.parametrize("mode", ["systemlink", "non-systemlink"])
def test_fan_out_across_two_gateways_and_two_chat_workers_is_exactly_once_in_order(
    make_cluster, mode: str
):
    _, accounts, workers, gateways = linked_cluster(make_cluster, mode, 24)
    # 24 players in a 6 x 2 block of sectors (some alone, some crowded), on both gateways.
    sectors = [(40 + (i % 6), 40 + (i // 6) % 2 * 2) for i in range(24)]
    rounds = 20

    async def scenario():
        clients = [await player(gateways[i % 2], accounts[i], sectors[i]) for i in range(24)]
        for r in range(rounds):  # every player says `rounds` messages, pipelined
            for client in clients:
                client.say(f"{client.account_no}:{r}")
        for client in clients:
            await client.writer.drain()
        heard = {}
        for i, client in enumerate(clients):
            expected = sum(near(sectors[i], s) for s in sectors) * rounds
            got = await client.messages(expected, timeout=30)
            heard[client.account_no] = got + await client.quiet(0.3)
        return heard

    heard = run(scenario())
    nicks = {account.no: account.nick for account in accounts}
    for i, sector in enumerate(sectors):
        by_sender: dict[int, list[int]] = {}
        for message in heard[accounts[i].no]:
            sender, seq = message.message.decode("utf-16-le").split(":")
            assert int(sender) == message.account_no
            assert message.nickname == nicks[int(sender)]
            by_sender.setdefault(int(sender), []).append(int(seq))
        expected = {accounts[j].no for j, other in enumerate(sectors) if near(sector, other)}
        assert set(by_sender) == expected
        for seqs in by_sender.values():
            assert seqs == list(range(rounds))  # exactly once each, in the sender's order
    # Both chat workers held players, so the fan-out crossed between them.
    held = [worker_counter(worker, "login_ok") for worker in workers]
    assert all(held) and sum(held) == 24, held


@pytest.mark.parametrize("mode", ["systemlink", "non-systemlink"])
def test_a_chat_worker_killed_mid_run_costs_only_its_own_sessions(make_cluster, mode: str):
    cluster, accounts, workers, gateways = linked_cluster(
        make_cluster, mode, 12, monitor={"db_interval": 1.0}
    )
    status_db = cluster.dir / "data" / "db" / "status_server.db"
    dead, alive = (w.ready_line.split("id=")[1].split()[0] for w in workers)

    def chat_rows(writer: str) -> list[tuple[int, int]]:
        with closing(sqlite3.connect(status_db)) as db:
            sql = "SELECT SessionAll, SessionLogin FROM chat WHERE writer = ? ORDER BY no"
            return db.execute(sql, (writer,)).fetchall()

    async def scenario():
        clients = [await player(gateways[i % 2], accounts[i], (7, 7)) for i in range(12)]
        for client in clients:
            client.say("before")
        for client in clients:
            assert len(await client.messages(12, timeout=20)) == 12
        workers[0].kill()
        # Its players are closed (the gateways see its data link drop); the others stay.
        outcome = await asyncio.gather(*(c.wait_closed(3) for c in clients))
        survivors = [c for c, gone in zip(clients, outcome, strict=True) if not gone]
        victims = [c for c, gone in zip(clients, outcome, strict=True) if gone]
        for client in survivors:
            client.say("after")
        for client in survivors:
            got = await client.messages(len(survivors), timeout=20)
            assert {m.account_no for m in got} == {c.account_no for c in survivors}
        # A player of the dead worker logs in again (login port first): on the survivor.
        account = next(a for a in accounts if a.no == victims[0].account_no)
        back = await player(gateways[0], account, (7, 7))
        sent = back.say("back")
        for client in [back, *survivors]:
            assert [m.message for m in await client.messages(1)] == [sent]
        # The monitoring rows: the dead worker's stop, the survivor's count its players.
        expect = (len(survivors) + 1,) * 2
        await asyncio.to_thread(
            wait_until, lambda: chat_rows(alive)[-1:] == [expect],
            "a chat row of the survivor with every player left", timeout=30, interval=0.3,
        )  # fmt: skip
        # Two more rounds of rows: the survivor writes them, the dead worker none.
        written, later = len(chat_rows(dead)), len(chat_rows(alive)) + 2
        await asyncio.to_thread(
            wait_until, lambda: len(chat_rows(alive)) >= later,
            "two more rows of the survivor", timeout=30, interval=0.3,
        )  # fmt: skip
        assert len(chat_rows(dead)) == written
        return len(victims), len(survivors)

    victims, survivors = run(scenario())
    assert victims > 0 and survivors > 0 and victims + survivors == 12
    closed = sum(
        sum(n for reason, n in stopped_drops(gw.process).items()
            if reason in ("worker_gone", "data_link_lost"))
        for gw in gateways
    )  # fmt: skip
    assert closed == victims


def test_a_new_chat_login_replaces_the_session_whichever_gateway(make_cluster):
    """One chat session per account: a reconnect that races its old connection's close takes
    the session over (the old one is closed, counted as `replaced`), through any gateway."""
    _, _, gateways = chat_cluster(make_cluster, chat_workers=2, gateways=2)

    async def scenario():
        first = await chatter(gateways[0].chat_port, 5, (1, 1))
        listener = await chatter(gateways[1].chat_port, 6, (1, 2))
        second = await ChatClient.connect("127.0.0.1", gateways[1].chat_port)
        taken = await second.login(5, "id5", "nick5")
        replaced = await first.wait_closed(10)
        await second.move(1, 1)
        sent = second.say("me again")
        return taken, replaced, await second.messages(1), await listener.messages(1), sent

    taken, replaced, mine, heard, sent = run(scenario())
    assert (taken.status, taken.account_no, replaced) == (1, 5, True)
    assert [m.message for m in mine] == [m.message for m in heard] == [sent]
    assert stopped_drops(gateways[0].process).get("replaced") == 1


# -- both link modes, with accounts in the DB -----------------------------------------------------


@pytest.mark.parametrize("mode", ["systemlink", "non-systemlink"])
def test_login_port_names_the_chat_port_and_the_key_admits_to_chat_and_game(
    make_cluster, backend: Backend, mode: str
):
    cluster = make_cluster(
        cluster={"link_mode": mode}, game={"verify_key": True}, chat={"enabled": True},
        db={**backend.db_section, "timeout": 2.0}, auth={"link_timeout": 2.0},
    )  # fmt: skip
    accounts = create_accounts(cluster, 4)
    for role in ("broker", "game", "chat", "auth", "gateway"):
        cluster.start(role)

    async def scenario():
        account = accounts[0]
        reply = await login_once("127.0.0.1", cluster.login_port, account.no, account.key)
        chat = await ChatClient.connect(reply.chat_server_ip, reply.chat_server_port)
        chat_login = await chat.login(account.no, account.user_id, account.nick, account.key)
        game = await GameClient.connect(reply.game_server_ip, reply.game_server_port)
        game_login = await game.login(account.no, account.key)
        await chat.move(0, 0)
        sent = chat.say("hello")
        heard = await chat.messages(1)
        # A wrong key is refused on the chat port, and closed.
        other = accounts[1]
        await login_once("127.0.0.1", cluster.login_port, other.no, other.key)
        stranger = await ChatClient.connect("127.0.0.1", cluster.chat_port)
        refused = await stranger.login(other.no, "x", "y", b"w" * 64)
        return reply, chat_login, game_login, heard, sent, refused, await stranger.wait_closed()

    reply, chat_login, game_login, heard, sent, refused, closed = run(scenario())
    assert reply.status == LoginStatus.OK
    assert (reply.chat_server_ip, reply.chat_server_port) == ("127.0.0.1", cluster.chat_port)
    assert (reply.game_server_ip, reply.game_server_port) == ("127.0.0.1", cluster.game_port)
    assert chat_login == ChatResLogin(1, accounts[0].no)
    assert game_login.status == GameLoginStatus.OK
    assert [m.message for m in heard] == [sent]
    assert (refused.status, closed) == (0, True)


@pytest.mark.parametrize("mode", ["systemlink", "non-systemlink"])
def test_no_chat_worker_answers_noserver_until_one_is_up(make_cluster, mode: str):
    cluster = make_cluster(
        cluster={"link_mode": mode}, chat={"enabled": True}, game={"verify_key": True}
    )
    accounts = create_accounts(cluster, 2)
    for role in ("broker", "game", "auth", "gateway"):
        cluster.start(role)
    account = accounts[0]

    async def login() -> int:
        reply = await login_once("127.0.0.1", cluster.login_port, account.no, account.key)
        return reply.status

    assert run(login()) == LoginStatus.NOSERVER
    cluster.start("chat")
    # The auth workers hear of it with the broker's next ROSTER: a client retries meanwhile.
    wait_until(lambda: run(login()) == LoginStatus.OK, "a login OK once a chat worker is up")


def test_systemlink_chat_login_needs_the_pushed_key(make_cluster, backend: Backend):
    cluster = make_cluster(
        cluster={"link_mode": "systemlink"}, game={"verify_key": True}, chat={"enabled": True},
        db={**backend.db_section, "timeout": 2.0}, auth={"link_timeout": 2.0},
    )  # fmt: skip
    accounts = create_accounts(cluster, 2)
    for role in ("broker", "game", "chat", "auth", "gateway"):
        cluster.start(role)
    account = accounts[0]

    async def scenario():
        # Knowing the key, but no login-port login: nothing was pushed, so FAIL.
        early = await ChatClient.connect("127.0.0.1", cluster.chat_port)
        unpushed = await early.login(account.no, "a", "b", account.key)
        await early.wait_closed()
        await login_once("127.0.0.1", cluster.login_port, account.no, account.key)
        # A stranger with the AccountNo but not the key does not burn the pushed key...
        stranger = await ChatClient.connect("127.0.0.1", cluster.chat_port)
        wrong = await stranger.login(account.no, "a", "b", b"z" * 64)
        await stranger.wait_closed()
        player = await ChatClient.connect("127.0.0.1", cluster.chat_port)
        right = await player.login(account.no, "a", "b", account.key)
        # The player reconnects before its old connection is seen to go: the login port pushes
        # a fresh copy of the key (the session is replaceable), the new chat login takes over.
        again = await login_once("127.0.0.1", cluster.login_port, account.no, account.key)
        newer = await ChatClient.connect("127.0.0.1", cluster.chat_port)
        taken = await newer.login(account.no, "a", "b", account.key)
        return (
            unpushed.status,
            wrong.status,
            right.status,
            again.status,
            taken.status,
            (await player.wait_closed()),
        )

    assert run(scenario()) == (0, 0, 1, LoginStatus.OK, 1, True)


def test_a_flooding_chatter_is_closed_and_its_neighbours_keep_chatting(make_cluster):
    _, _, (gw,) = chat_cluster(make_cluster, chat={"enabled": True, "message_rate": 5.0})

    async def scenario():
        honest = await chatter(gw.chat_port, 1, (2, 2))
        flooder = await chatter(gw.chat_port, 2, (2, 3))
        for i in range(200):  # far past 5 per second, in one burst
            flooder.say(f"spam {i}")
        with contextlib.suppress(ConnectionError):  # closed while the burst still goes out
            await flooder.writer.drain()
        closed = await flooder.wait_closed(10)
        spam = [m for m in await honest.quiet(1.0) if m.account_no == 2]
        sent = honest.say("calm again")
        return closed, spam, await honest.messages(1), sent

    closed, spam, heard, sent = run(scenario())
    assert closed
    assert 1 <= len(spam) <= 5  # at most the burst reached the neighbour
    assert [m.message for m in heard] == [sent]
    assert stopped_drops(gw.process).get("chat_flood") == 1


def test_workers_without_pushed_keys_ack_a_push_so_the_login_port_answers_ok(make_cluster):
    """game.verify_key = false (raw load tests): the workers keep no pushed keys, yet a
    systemlink login-port login is answered OK at once (not NOSERVER after link_timeout)."""
    cluster = make_cluster(cluster={"link_mode": "systemlink"}, chat={"enabled": True},
                           auth={"link_timeout": 30.0})  # fmt: skip
    accounts = create_accounts(cluster, 1)
    for role in ("broker", "game", "chat", "auth", "gateway"):
        cluster.start(role)
    account = accounts[0]

    async def scenario():
        reply = await login_once("127.0.0.1", cluster.login_port, account.no, account.key,
                                 timeout=20)  # fmt: skip
        chat = await chatter(reply.chat_server_port, account.no, (0, 0))
        return reply.status, chat

    status, _ = run(scenario())
    assert status == LoginStatus.OK


def test_a_broker_restart_costs_no_chat_session_and_fan_out_comes_back(make_cluster):
    """Chat sessions live on the data links: a killed broker closes none of them. Messages
    between chat workers cross the broker, so they wait for the new one; once the workers are
    registered again, every player hears every other again."""
    cluster, workers, (gw,) = chat_cluster(
        make_cluster, chat_workers=2, broker={"heartbeat_interval": 0.5, "heartbeat_liveness": 3}
    )  # fmt: skip
    broker = cluster.processes[0]

    async def scenario():
        clients = [await chatter(gw.chat_port, 1 + i, (30, 30)) for i in range(8)]
        await asyncio.to_thread(broker.kill)
        during = []
        for client in clients:
            sent = client.say(f"during {client.account_no}")
            got = await client.recv_type(ChatResMessage, timeout=10)
            while got.account_no != client.account_no:  # a neighbour on the same worker
                got = await client.recv_type(ChatResMessage, timeout=10)
            during.append(got.message == sent)  # its own message, at least, came back
        await asyncio.to_thread(cluster.start, "broker")
        for worker in workers:  # registered with the new broker (the second such line)
            await asyncio.to_thread(
                wait_until, lambda w=worker: w.log().count("registered with broker") >= 2,
                "the chat worker registered again", timeout=30, detail=worker.log,
            )  # fmt: skip
        for client in clients:
            client.say(f"after {client.account_no}")

        async def afters(client: ChatClient) -> list[int]:
            senders: list[int] = []
            while len(senders) < 8:  # (casts held up by the outage may come first)
                got = await client.recv_type(ChatResMessage, timeout=20)
                if got.message.decode("utf-16-le").startswith("after"):
                    senders.append(got.account_no)
            return senders

        heard = [await afters(c) for c in clients]
        still_open = [not await c.wait_closed(0.1) for c in clients]
        return during, heard, still_open

    during, heard, still_open = run(scenario())
    assert during == [True] * 8
    assert still_open == [True] * 8
    for senders in heard:
        assert sorted(senders) == list(range(1, 9))  # each once, from both workers
    assert "worker_gone" not in stopped_drops(gw.process)
    assert all(worker_counter(worker, "login_ok") for worker in workers)  # players on both


def test_malformed_or_foreign_chat_items_on_the_bus_cost_nobody_anything(make_cluster):
    """A rogue bus peer sends a chat worker casts that lie about their layout, and a gateway
    deliveries for sessions it does not hold: each is counted and dropped; players keep
    chatting and hear nothing of it."""
    cluster, (worker,), (gw,) = chat_cluster(make_cluster)
    chat_id = worker.ready_line.split("id=")[1].split()[0].encode()
    gateway_id = gw.process.wait_log(r"registered with broker \S+ as b'([^']+)'").group(1).encode()
    rogue = ScriptedPeer(cluster.endpoint, "cli", 0.5)  # not placed on: logins go to the worker
    rogue.expect(bus.WELCOME)
    bogus = CODEC.encode(ChatResMessage(666, "rogue", "rogue", b"h\0i\0"))

    def cast(cells: bytes, packets: bytes) -> None:
        rogue.send([bus.TO, chat_id, bus.pack_body([[0, bus.Control.CAST, cells, packets]])])

    async def scenario():
        players = [await chatter(gw.chat_port, 1 + i, (4, 4)) for i in range(3)]
        cast(struct.pack("<3i", 4 * 100 + 4, 1, len(bogus) + 5), bogus)  # lengths lie
        cast(struct.pack("<3i", 100 * 100, 1, len(bogus)), bogus)  # no such sector
        cast(struct.pack("<2i", 404, 1), bogus)  # not whole triples
        cast(struct.pack("<3i", 404, 0, len(bogus)), bogus)  # zero messages
        sids = struct.pack("<3q", 1, 2, 3)
        rogue.send(
            [
                bus.TO,
                gateway_id,
                bus.pack_body(
                    [
                        [0, bus.Control.DELIVER, bogus, 1, sids],
                        [0, bus.Control.DELIVER, bogus, 1, b"x"],
                    ]
                ),
            ]
        )
        unheard = [await p.quiet(1.0) for p in players]
        sent = players[0].say("all fine")
        return unheard, [await p.messages(1) for p in players], sent

    try:
        unheard, heard, sent = run(scenario())
    finally:
        rogue.close()
    assert unheard == [[], [], []]
    assert [[m.message for m in got] for got in heard] == [[sent]] * 3
    assert worker_counter(worker, "bad_cast") == 4
    gw.process.stop()
    assert re.search(r"bus: .*bad_bus_item=1", gw.process.log())
    assert re.search(r"bus: .*foreign_item=3", gw.process.log())
