"""The chat dummy (``cluster dummy run --app chat``): its checks in isolation, against a scripted
chat server that breaks one rule at a time (each broken rule must show as its error kind), and
against a real cluster with the chat port (every reply checked, deliveries between neighbours,
connect_total == accept_total, agents, the demo)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import config as config_module
from cluster.codec import Codec
from cluster.messages import (
    CHAT_CLIENT_MESSAGES,
    ChatReqLogin,
    ChatReqMessage,
    ChatReqSectorMove,
    ChatResLogin,
    ChatResMessage,
    ChatResSectorMove,
    LoginStatus,
)
from cluster.testkit import free_ports
from dummy.chat_engine import (
    CHECK_ERRORS,
    ChatAccount,
    ChatDummyClient,
    ChatEngine,
    ChatOptions,
    ChatTotals,
    Phase,
    near,
    parse_token,
    token_of,
)
from dummy.client import ChatClient, login_once
from dummy.report import build_chat_report, chat_summary
from dummy.run import chat_options_from, exit_code, load_chat_accounts
from tests.harness import ClusterUnderTest, RoleProcess, run

KEY = b"k" * 64
CODEC = Codec()


def cluster_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def accounts(count: int, first: int = 1) -> list[ChatAccount]:
    return [ChatAccount(no, f"ID_{no}", f"NICK_{no}", KEY) for no in range(first, first + count)]


# -- the checks, one reply at a time --------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[ChatEngine]:
    """A chat engine whose clients are driven by hand (no sockets: their writes go nowhere)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield ChatEngine(ChatOptions(clients=3, path="direct"), accounts(3))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def logged_in(client: ChatDummyClient, sector: tuple[int, int] | None) -> ChatDummyClient:
    client.phase = Phase.IN_CHAT
    if sector is not None:
        client.moves.append((*sector, 0.0))
        client.on_message(ChatResSectorMove(client.account_no, *sector))
    return client


def say(client: ChatDummyClient) -> tuple[ChatResMessage, bytes]:
    """`client` says a message; returns the RES_MESSAGE a correct server sends for it."""
    client.say(time.monotonic())
    said = client.said[-1]
    return ChatResMessage(client.account_no, client.user_id, client.nickname, said.payload), \
        said.payload  # fmt: skip


def test_tokens_name_the_run_the_sender_and_the_sequence():
    token = token_of("a1b2c3", 42, 7)
    assert parse_token(("Row, row, row your boat " + token).encode("utf-16-le")) == (
        "a1b2c3", 42, 7)  # fmt: skip
    assert parse_token("아리랑 #x.1.2".encode("utf-16-le")) == ("x", 1, 2)
    for other in ("hello", "#", "a #b.c.d", "#1.2"):
        assert parse_token(other.encode("utf-16-le")) is None, other
    assert parse_token(b"\x00\xd8") is None  # a lone surrogate: not text


def test_the_neighbour_rule_is_3_by_3():
    assert near((5, 5), (4, 6)) and near((5, 5), (5, 5)) and near((0, 0), (1, 1))
    assert not near((5, 5), (7, 5)) and not near((5, 5), (5, 3))
    assert near((5, 5), (7, 3), radius=2) and not near((5, 5), (6, 5), radius=0)


def test_a_correct_exchange_counts_no_error(engine):
    a, b, c = (logged_in(cl, s) for cl, s in zip(engine.clients, [(5, 5), (6, 6), (9, 9)],
                                                  strict=True))  # fmt: skip
    reply, _ = say(a)
    for client in (a, b):  # c, 3 sectors away, hears nothing
        client.on_message(reply)
    assert engine.totals.errors == {}
    assert (engine.totals.echoes, engine.totals.deliveries) == (1, 1)
    assert not a.said and not c.interval_seen


@pytest.mark.parametrize(
    ("situation", "kind"),
    [
        ("far", "not_neighbour"),
        ("no_sector", "message_not_in_sector"),
        ("not_logged_in", "message_not_login"),
        ("twice", "duplicate"),
        ("reordered", "order"),
        ("altered", "message_mismatch"),
        ("renamed", "sender_mismatch"),
        ("never_said", "unknown_token"),
        ("own_unsaid", "message_no_send"),
        ("own_altered", "message_mismatch"),
        ("move_unasked", "move_not_requested"),
        ("move_elsewhere", "move_mismatch"),
        ("move_of_another", "move_account"),
    ],
)
def test_each_wrong_reply_is_its_own_error(engine, situation, kind):
    a, b, _ = engine.clients
    logged_in(a, (5, 5))
    logged_in(b, None if situation == "no_sector" else (7, 5) if situation == "far" else (5, 6))
    if situation == "not_logged_in":
        b.phase = Phase.CHAT_LOGIN_WAIT
    first, _ = say(a)
    second, _ = say(a)
    if situation == "twice":
        b.on_message(first)
        b.on_message(first)
    elif situation == "reordered":
        b.on_message(second)
        b.on_message(first)
    elif situation == "altered":
        b.on_message(first._replace(message=b"X\x00" + first.message[2:]))
    elif situation == "renamed":
        b.on_message(first._replace(nickname="SOMEONE"))
    elif situation == "never_said":
        b.on_message(first._replace(message=f"hi {token_of(engine.run_id, 1, 99)}"
                                    .encode("utf-16-le")))  # fmt: skip
    elif situation == "own_unsaid":
        b.on_message(ChatResMessage(b.account_no, b.user_id, b.nickname, b"x\x00"))
    elif situation == "own_altered":
        a.on_message(first._replace(message=b"y\x00"))
    elif situation == "move_unasked":
        b.on_message(ChatResSectorMove(b.account_no, 1, 1))
    elif situation == "move_elsewhere":
        b.moves.append((1, 1, 0.0))
        b.on_message(ChatResSectorMove(b.account_no, 1, 2))
    elif situation == "move_of_another":
        b.moves.append((1, 1, 0.0))
        b.on_message(ChatResSectorMove(a.account_no, 1, 1))
    else:
        b.on_message(first)
    assert kind in CHECK_ERRORS
    assert engine.totals.errors == {kind: 1}, situation
    assert engine.totals.check_errors() == 1
    assert engine.first_error is not None and kind in engine.first_error


def test_a_message_is_expected_in_a_sector_i_am_moving_to(engine):
    a, b, _ = engine.clients
    logged_in(a, (5, 5))
    logged_in(b, (50, 50))
    b.moves.append((5, 6, 0.0))  # asked, not answered yet: b may already be there
    reply, _ = say(a)
    b.on_message(reply)
    assert engine.totals.errors == {}


def test_my_message_from_an_earlier_connection_is_heard_as_anyone_elses(engine):
    a, _, _ = engine.clients
    logged_in(a, (5, 5))
    earlier, _ = say(a)
    a._reset()  # a leaves before its echo, and logs in again
    a.phase = Phase.CHAT_LOGIN_WAIT
    a.on_message(ChatResLogin(1, a.account_no))
    logged_in(a, (5, 6))
    a.on_message(earlier)  # the server handled it after the new session entered its sector
    assert engine.totals.errors == {}
    assert (engine.totals.deliveries, engine.totals.echoes) == (1, 0)
    a.on_message(earlier._replace(message=b"x\x00"))  # but nothing new of mine was said
    assert engine.totals.errors == {"message_no_send": 1}


def test_foreign_messages_are_counted_apart(engine):
    _, b, _ = engine.clients
    logged_in(b, (5, 5))
    for text in ("hello from a real client", "#zzzzzz.1.0", f"#{engine.run_id}.999.0"):
        b.on_message(ChatResMessage(999, "ID_999", "NICK_999", text.encode("utf-16-le")))
    assert engine.totals.foreign == 3 and engine.totals.errors == {}


def test_certain_deliveries_that_do_not_arrive_are_missed(engine):
    a, b, c = engine.clients
    logged_in(a, (5, 5))
    logged_in(b, (5, 6))
    logged_in(c, (6, 6))
    heard, _ = say(a)
    a.on_message(heard)  # echoed to a: the server has handled it
    unechoed, _ = say(a)  # not echoed yet: not certain
    b.on_message(heard)
    for client in (b, c):  # c never got it
        client.move(1.0)
        client.on_message(ChatResSectorMove(client.account_no, *client.moves[0][:2]))
    assert unechoed  # said, but not counted for anyone
    assert (engine.totals.expected, engine.totals.missed) == (2, 1)
    assert engine.totals.errors == {}  # a figure, not a check error


def test_chat_totals_add_up_and_travel():
    a = ChatTotals(connect_total=3, deliveries=10)
    a.errors["order"] = 1
    b = ChatTotals.from_dict(ChatTotals(connect_total=2, deliveries=5, missed=1).to_dict())
    b.errors["reply_timeout"] = 2
    total = ChatTotals().add(a).add(b)
    assert (total.connect_total, total.deliveries, total.missed) == (5, 15, 1)
    assert total.check_errors() == 1  # reply_timeout is counted, not a check


def test_chat_exit_code_and_summary():
    totals = ChatTotals(connect_total=4, login_ok=2, messages_sent=3, deliveries=5)
    report = build_chat_report(totals, engine_latency(), duration=1, clients=2, accept_total=4,
                               agents=[], options={})  # fmt: skip
    assert exit_code(report) == 0
    assert "connect_total == accept_total == 4: OK" in chat_summary(report)
    assert "check errors: none" in chat_summary(report)
    totals.errors["not_neighbour"] = 1
    bad = build_chat_report(totals, engine_latency(), duration=1, clients=2, accept_total=4,
                            agents=[], options={})  # fmt: skip
    assert exit_code(bad) == 1 and "check errors: not_neighbour=1" in chat_summary(bad)
    nobody = build_chat_report(ChatTotals(connect_total=4), engine_latency(), duration=1,
                               clients=2, accept_total=4, agents=[], options={})  # fmt: skip
    assert exit_code(nobody) == 1


def engine_latency() -> Any:
    from dummy.histogram import Histogram

    return Histogram()


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--sector-range", "0"], "--sector-range"),
        (["--sector-range", "101"], "--sector-range"),
        (["--echo-overlap", "3"], "--echo-overlap applies to --app echo only"),
        (["--rand-contents", "-1"], "--rand-contents"),
    ],
)
def test_bad_chat_knob_exits_2_with_one_line(tmp_path, args, text):
    accounts_file = tmp_path / "a.tsv"
    accounts_file.write_text("1\tID_1\tNICK_1\t" + "k" * 64 + "\n")
    result = cluster_cli("dummy", "run", "--app", "chat", "--accounts", str(accounts_file), *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and text in result.stderr


def test_sector_range_is_for_chat_only(tmp_path):
    accounts_file = tmp_path / "a.tsv"
    accounts_file.write_text("1\tID_1\tNICK_1\t" + "k" * 64 + "\n")
    result = cluster_cli("dummy", "run", "--accounts", str(accounts_file), "--sector-range", "4")
    assert result.returncode == 2 and "--sector-range applies to --app chat only" in result.stderr


# -- against a scripted chat server that breaks one rule ------------------------------------------


class ScriptedChatServer:
    """The chat port's rules in a few lines, optionally broken in one way (`flaw`)."""

    def __init__(self, flaw: str | None) -> None:
        self.flaw = flaw
        self.sessions: dict[asyncio.StreamWriter, dict[str, Any]] = {}
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.sessions):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = CODEC.decoder(CHAT_CLIENT_MESSAGES)
        me: dict[str, Any] = {"sector": None}
        self.sessions[writer] = me
        flaw = self.flaw
        try:
            while data := await reader.read(65536):
                for m in decoder.feed(data):
                    if isinstance(m, ChatReqLogin):
                        me.update(account=m.account_no, id=m.user_id, nick=m.nickname)
                        no = m.account_no + (1 if flaw == "login_account" else 0)
                        writer.write(CODEC.encode(ChatResLogin(1, no)))
                        if flaw == "unasked_move":
                            writer.write(CODEC.encode(ChatResSectorMove(m.account_no, 0, 0)))
                    elif isinstance(m, ChatReqSectorMove):
                        me["sector"] = (m.sector_x, m.sector_y)
                        y = (m.sector_y + 1) % 100 if flaw == "wrong_move" else m.sector_y
                        writer.write(CODEC.encode(ChatResSectorMove(m.account_no, m.sector_x, y)))
                    elif isinstance(m, ChatReqMessage) and me["sector"] is not None:
                        self._say(me, writer, m)
        except (ConnectionError, OSError):
            pass
        finally:
            del self.sessions[writer]
            writer.close()

    def _say(self, me: dict[str, Any], sender: asyncio.StreamWriter, m: ChatReqMessage) -> None:
        flaw = self.flaw
        reply = ChatResMessage(m.account_no, me["id"], me["nick"], m.message)
        for writer, other in self.sessions.items():
            if other.get("sector") is None and flaw != "everywhere":
                continue
            mine = writer is sender
            if not mine and flaw == "only_sender":
                continue
            if not (mine or flaw == "everywhere" or near(other["sector"], me["sector"])):
                continue
            message = reply
            if mine and flaw == "altered":
                message = reply._replace(message=m.message[:-2] or b"?\x00")
            packet = CODEC.encode(message)
            writer.write(packet * (2 if flaw == "twice" and not mine else 1))


def run_against_scripted(flaw: str | None, **options: Any) -> ChatEngine:
    async def main() -> ChatEngine:
        server = ScriptedChatServer(flaw)
        port = await server.start()
        knobs = dict(clients=20, delay_action=20.0, duration=1.5, path="direct",
                     sector_range=3, chat_port=port)  # fmt: skip
        engine = ChatEngine(ChatOptions(**(knobs | options)), accounts(20))
        try:
            await engine.run(asyncio.Event())
        finally:
            await server.stop()
        return engine

    return asyncio.run(main())


def test_a_server_that_keeps_the_rules_gets_no_error():
    engine = run_against_scripted(None)
    t = engine.totals
    assert t.errors == {}, engine.first_error
    assert t.login_ok == 20 and t.echoes > 20 and t.deliveries > 20 and t.moves_recv > 20
    assert t.expected > 0 and t.missed == 0
    assert t.down_client == 0 and t.foreign == 0


@pytest.mark.parametrize(
    ("flaw", "kind"),
    [
        ("everywhere", "not_neighbour"),
        ("altered", "message_mismatch"),
        ("wrong_move", "move_mismatch"),
        ("twice", "duplicate"),
        ("unasked_move", "move_not_requested"),
        ("login_account", "login_account"),
    ],
)
def test_a_server_that_breaks_a_rule_is_caught(flaw, kind):
    engine = run_against_scripted(flaw)
    assert engine.totals.errors.get(kind, 0) > 0, (flaw, engine.totals.errors)
    assert engine.totals.check_errors() > 0


def test_a_server_that_tells_only_the_sender_misses_the_certain_deliveries():
    t = run_against_scripted("only_sender").totals
    assert t.deliveries == 0 and t.echoes > 0
    assert t.expected > 0 and t.missed == t.expected


# -- against a real cluster ----------------------------------------------------------------------


class ChatCluster:
    def __init__(self, cluster: ClusterUnderTest, accounts_file: Path, chat_port: int) -> None:
        self.cluster = cluster
        self.accounts = accounts_file
        self.chat_port = chat_port

    @property
    def config(self) -> Path:
        return self.cluster.config

    def dummy(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return cluster_cli("dummy", "run", "--app", "chat", "--config", str(self.config),
                           "--accounts", str(self.accounts), *args, timeout=timeout)  # fmt: skip

    def options(self, **knobs: Any) -> ChatOptions:
        return chat_options_from(config_module.load(self.config), **knobs)


def start_chat_cluster(make_cluster, chat_workers: int = 1, count: int = 100,
                       **sections: dict[str, Any]) -> ChatCluster:  # fmt: skip
    """Broker, monitor, a game worker, `chat_workers` chat workers, an auth worker and a gateway
    with the chat port, each started on its own (systemlink, keys verified), and `count`
    accounts."""
    chat_port = free_ports(1)[0]
    gateway = {"chat_port": chat_port} | sections.pop("gateway", {})
    cluster = make_cluster(chat={"enabled": True}, gateway=gateway, game={"verify_key": True},
                           monitor={"summary_interval": 3600.0}, **sections)  # fmt: skip
    accounts_file = cluster.dir / "accounts.tsv"
    created = cluster_cli("accounts", "create", "--config", str(cluster.config), "--count",
                          str(count), "--out", str(accounts_file))  # fmt: skip
    assert created.returncode == 0, created.stderr
    for role in ("broker", "monitor", "game", *["chat"] * chat_workers, "auth", "gateway"):
        cluster.start(role)
    return ChatCluster(cluster, accounts_file, chat_port)


@pytest.fixture
def chat_cluster(make_cluster) -> ChatCluster:
    return start_chat_cluster(make_cluster)


def test_chat_client_talks_to_its_neighbours_only(chat_cluster):
    """The ChatClient against the real chat port: login through the login port, moves, and a
    message heard in the 3 x 3 sectors around its sender, the sender included."""
    lines = load_chat_accounts(chat_cluster.accounts)[:3]

    async def scenario():
        clients = []
        for account, sector in zip(lines, [(5, 5), (6, 4), (8, 5)], strict=True):
            res = await login_once("127.0.0.1", chat_cluster.cluster.login_port,
                                   account.account_no, account.session_key)  # fmt: skip
            assert res.status == LoginStatus.OK
            assert res.chat_server_port == chat_cluster.chat_port
            client = await ChatClient.connect(res.chat_server_ip, res.chat_server_port)
            login = await client.login(account.account_no, res.user_id, res.nickname,
                                       account.session_key)  # fmt: skip
            assert (login.status, login.account_no) == (1, account.account_no)
            assert await client.move(*sector) == ChatResSectorMove(account.account_no, *sector)
            clients.append(client)
        a, b, c = clients
        text = a.say("안녕 hello")
        heard = [(await client.messages(1))[0] for client in (a, b)]
        far = await c.quiet(0.5)
        c.send(ChatReqSectorMove(c.account_no, 100, 0))  # off the grid: closed
        closed = await c.wait_closed()
        for client in (a, b):
            await client.close()
        return lines[0], text, heard, far, closed

    sender, text, heard, far, closed = run(scenario())
    assert heard == [ChatResMessage(sender.account_no, sender.user_id, sender.nickname, text)] * 2
    assert far == [] and closed


def test_chat_run_checks_every_reply_and_every_connect_is_accepted(chat_cluster):
    report_path = chat_cluster.cluster.dir / "chat.json"
    csv_path = chat_cluster.cluster.dir / "seconds.csv"
    result = chat_cluster.dummy(
        "--clients", "40", "--rand-disconnect", "3", "--delay-action", "50", "--sector-range",
        "3", "--duration", "4", "--report", str(report_path), "--csv", str(csv_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["app"] == "chat"
    assert report["check_errors"] == 0 and report["errors"] == {}, report["errors"]
    assert report["disconnects"] > 0 and report["login_ok"] > 40  # left and came back
    assert report["down_client"] == 0
    assert report["deliveries"] > 100  # neighbours heard each other
    assert 0 < report["echoes"] <= report["messages_sent"]
    assert report["moves_recv"] > 40
    assert report["foreign"] == 0
    # one chat worker: every delivery the bookkeeping called certain arrived
    assert report["expected"] > 0 and report["missed"] == 0
    assert report["connect_total"] > 80 and report["connect_total"] == report["accept_total"]
    assert "connect_total == accept_total" in result.stdout
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("elapsed_s,") and "deliveries" in rows[0] and len(rows) >= 4


def test_a_wrong_neighbour_rule_in_the_dummy_shows_as_errors(chat_cluster):
    """The checks are not vacuous: a dummy that expects a 1 x 1 neighbourhood sees messages it
    did not expect, and one that expects 5 x 5 misses deliveries it was sure of."""

    def run_with(radius: int, first: int) -> ChatTotals:
        async def main() -> ChatTotals:
            options = chat_cluster.options(clients=30, delay_action=50.0, duration=3.0,
                                           sector_range=6, expect_radius=radius)  # fmt: skip
            lines = load_chat_accounts(chat_cluster.accounts)[first : first + 30]
            return await ChatEngine(options, lines).run(asyncio.Event())

        return asyncio.run(main())

    narrow = run_with(0, first=0)
    assert narrow.errors["not_neighbour"] > 0 and narrow.deliveries > 0
    wide = run_with(2, first=30)
    assert wide.expected > 0 and wide.missed > 0
    assert wide.check_errors() == 0


def test_two_chat_workers_deliver_across_workers(make_cluster):
    """Players are placed on chat workers by account; a neighbour on the other worker hears the
    message too, once, in order."""
    cc = start_chat_cluster(make_cluster, chat_workers=2)
    report_path = cc.cluster.dir / "chat.json"
    result = cc.dummy("--clients", "30", "--delay-action", "50", "--sector-range", "3",
                      "--duration", "4", "--report", str(report_path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["check_errors"] == 0, report["errors"]
    assert report["deliveries"] > 100 and report["login_ok"] == 30
    # With 30 players on 2 workers and 9 sectors, most neighbours are on the other worker: far
    # fewer deliveries than certain ones would mean no fan-out between workers.
    assert report["expected"] > 0 and report["missed"] <= report["expected"] // 10, report
    assert report["connect_total"] == report["accept_total"]


def test_idle_clients_send_heartbeats_and_stay(make_cluster):
    cc = start_chat_cluster(make_cluster, count=10, gateway={"heartbeat_timeout": 1.5})

    def idle(**knobs: Any) -> ChatTotals:
        async def main() -> ChatTotals:
            options = cc.options(clients=10, delay_action=50.0, duration=4.0, rand_contents=0,
                                 **knobs)  # fmt: skip
            engine = ChatEngine(options, load_chat_accounts(cc.accounts))
            return await engine.run(asyncio.Event())

        return asyncio.run(main())

    kept = idle()  # heartbeats every heartbeat_timeout / 2
    assert kept.heartbeats > 10 and kept.chat_down == 0 and kept.login_ok == 10
    silent = idle(heartbeat_interval=60.0)  # the control: without them the server cuts
    assert silent.chat_down >= 10 and silent.errors.get("chat_login_failed", 0) == 0


def test_direct_path_needs_the_login_port_in_systemlink_only(make_cluster):
    cc = start_chat_cluster(make_cluster, count=20)
    refused = cc.dummy("--clients", "5", "--path", "direct", "--delay-action", "100",
                       "--duration", "1.5")  # fmt: skip
    assert refused.returncode == 1
    assert "no client got into the chat port (chat_login_failed=" in refused.stderr

    other = start_chat_cluster(make_cluster, count=20, cluster={"link_mode": "non-systemlink"})
    report = other.cluster.dir / "direct.json"
    direct = other.dummy("--clients", "10", "--path", "direct", "--delay-action", "50",
                         "--sector-range", "2", "--duration", "2",
                         "--report", str(report))  # fmt: skip
    assert direct.returncode == 0, direct.stdout + direct.stderr
    data = json.loads(report.read_text())
    assert data["login_ok"] == 10 and data["deliveries"] > 0 and data["check_errors"] == 0
    assert data["connect_total"] == 10 == data["accept_total"]  # the chat port only


def test_controller_with_two_chat_agents_reports_their_sums(chat_cluster):
    report_path = chat_cluster.cluster.dir / "ctl.json"
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    controller = RoleProcess(
        ["dummy", "controller", "--app", "chat", "--config", str(chat_cluster.config),
         "--listen", endpoint, "--agents", "2", "--accounts", str(chat_cluster.accounts),
         "--clients", "30", "--delay-action", "50", "--sector-range", "3", "--duration", "3",
         "--report", str(report_path), "--wait", "30"],
        chat_cluster.cluster.dir / "controller.log", wait_ready=False,
    )  # fmt: skip
    agents = [RoleProcess(["dummy", "agent", "--controller", endpoint],
                          chat_cluster.cluster.dir / f"agent{n}.log", wait_ready=False)
              for n in range(2)]  # fmt: skip
    assert controller.proc.wait(90) == 0, controller.log()
    for agent in agents:
        assert agent.proc.wait(30) == 0, agent.log()
    report = json.loads(report_path.read_text())
    assert report["app"] == "chat"
    assert [a["status"] for a in report["agents"]] == ["finished", "finished"]
    assert sorted(a["clients"] for a in report["agents"]) == [15, 15]
    for key in ("connect_total", "login_ok", "messages_sent", "deliveries", "foreign", "echoes"):
        assert report[key] == sum(a[key] for a in report["agents"]), key
    # each agent checks its own clients' messages; the other agent's are foreign to it
    assert report["deliveries"] > 0 and report["foreign"] > 0
    assert report["check_errors"] == 0
    assert report["connect_total"] == report["accept_total"]


def test_demo_runs_game_and_chat_load_together(make_cluster):
    chat_port = free_ports(1)[0]
    cluster = make_cluster(chat={"enabled": True}, gateway={"chat_port": chat_port},
                           game={"verify_key": True},
                           workers={"game": 1, "auth": 1, "chat": 1})  # fmt: skip
    report_path = cluster.dir / "demo.json"
    result = cluster_cli("demo", "--config", str(cluster.config), "--duration", "6",
                         "--clients", "15", "--report", str(report_path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "15 game clients and 15 chat clients" in result.stdout
    assert "demo: cluster stopped" in result.stdout
    data = json.loads(report_path.read_text())
    game, chat = data["game"], data["chat"]
    assert game["echo_recv"] > 0 and game["login_ok"] >= 15 and game["errors"] == {}
    assert chat["login_ok"] >= 15 and chat["messages_sent"] > 0 and chat["check_errors"] == 0
    assert chat["errors"] == {}
    assert data["connect_total"] == game["connect_total"] + chat["connect_total"]
    assert data["connect_matches_accept"] is True
    assert f"connect_total == accept_total == {data['accept_total']}: OK" in result.stdout


def test_chat_screen_pauses_with_s_until_reply_wait_is_0_and_quits_with_q(chat_cluster):
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster", "dummy", "run", "--app", "chat", "--config",
         str(chat_cluster.config), "--accounts", str(chat_cluster.accounts), "--clients", "20",
         "--delay-action", "20", "--sector-range", "2", "--duration", "3600"],
        stdin=secondary, stdout=secondary, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(secondary)
    seen = b""

    def read_until(pattern: str, timeout: float = 20) -> None:
        nonlocal seen
        seen = b""
        deadline = time.monotonic() + timeout
        while not re.search(pattern.encode(), seen):
            assert time.monotonic() < deadline, seen[-3000:]
            if select.select([main], [], [], 0.2)[0]:
                seen += os.read(main, 65536)

    try:
        read_until(r"MODE : PLAY")
        read_until(r"IN Chat +: +20 ")
        read_until(r"from dummies [1-9]")
        os.write(main, b"s")
        read_until(r"MODE : STOP")
        read_until(r"ReplyWait +: +0 ")  # paused: every answer arrived, none is awaited
        os.write(main, b"q")
        assert proc.wait(60) == 0  # an hour's run ended by Q, cleanly, with no check error
        read_until("connect_total == accept_total")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        os.close(main)
