"""The game port end to end: client -> gateway -> broker -> game worker -> back, real processes."""

from __future__ import annotations

import asyncio
import re
import struct

import pytest

from cluster.codec import HEADER, Codec
from cluster.messages import (
    GameLoginStatus,
    GameReqEcho,
    GameReqHeartbeat,
    GameReqLogin,
    GameResEcho,
)
from dummy.client import GameClient, ServerClosed
from gateway.sessions import TURN_BUDGET
from tests.harness import run

CODEC = Codec()


def test_pipelined_echoes_come_back_complete_and_in_order(make_cluster):
    cluster = make_cluster()
    cluster.start_spine(game_workers=2)

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        reply = await client.login(7777)
        assert (reply.status, reply.account_no) == (GameLoginStatus.OK, 7777)
        replies = await client.echo(1000, first_tick=10_000)
        await client.close()
        return replies

    replies = run(scenario())
    assert replies == [GameResEcho(7777, 10_000 + i) for i in range(1000)]


def test_client_messages_of_one_iteration_share_one_bus_message(make_cluster):
    cluster = make_cluster()
    broker, gateway, _ = cluster.start_spine()

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        await client.login(1)
        replies = await client.echo(1000)  # one write of 1000 packets
        await client.close()
        return replies

    assert len(run(scenario())) == 1000
    gateway.stop()
    assert broker.stop() == 0
    # 1000 echoes went out relayed: one PACKETS item per turn (TURN_BUDGET packets at most),
    # one data-link message per iteration and worker, never one per packet.
    messages = int(re.search(r"\bdata_messages=(\d+)", gateway.log()).group(1))
    items = int(re.search(r"\bdata_items=(\d+)", gateway.log()).group(1))
    assert 1000 // TURN_BUDGET <= items <= 1000 // TURN_BUDGET + 5, gateway.log()
    assert messages <= items, gateway.log()
    # ...and none of them passed through the broker: a bound session's traffic goes direct.
    assert "'routed'" not in broker.log(), broker.log()


def test_two_hundred_concurrent_sessions_echo(make_cluster):
    cluster = make_cluster()
    cluster.start_spine(game_workers=2)

    async def one(account_no: int) -> list[GameResEcho]:
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        reply = await client.login(account_no)
        assert reply.status == GameLoginStatus.OK
        replies = await client.echo(20, first_tick=account_no * 100)
        await client.close()
        return replies

    async def everyone() -> list[list[GameResEcho]]:
        return await asyncio.gather(*(one(n) for n in range(1, 201)))

    results = run(everyone())
    for n, replies in zip(range(1, 201), results, strict=True):
        assert replies == [GameResEcho(n, n * 100 + i) for i in range(20)]


def _bad_header(length: int) -> bytes:
    return HEADER.pack(119, length, 0, 0) + b"\0" * 16


def _valid_with_extra_byte() -> bytes:
    return CODEC.frame(struct.pack("<Hqqb", GameReqEcho.TYPE, 5, 1, 0))


def _flipped_checksum() -> bytes:
    packet = bytearray(CODEC.encode(GameReqEcho(5, 1)))
    packet[-1] ^= 0x01
    return bytes(packet)


VIOLATIONS = {
    "bad_code": lambda: Codec(code=120).encode(GameReqEcho(5, 1)),
    "bad_checksum": _flipped_checksum,
    "too_long": lambda: _bad_header(5001),
    "unknown_type": lambda: CODEC.frame(struct.pack("<H", 9999)),
    "wrong_size": _valid_with_extra_byte,
}


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    from tests.harness import ClusterUnderTest

    cluster = ClusterUnderTest(tmp_path_factory.mktemp("violations"))
    _, gateway, _ = cluster.start_spine()
    yield cluster, gateway
    cluster.close()


async def _neighbour_and_offender(cluster, account: int):
    neighbour = await GameClient.connect("127.0.0.1", cluster.game_port)
    assert (await neighbour.login(account + 1)).status == GameLoginStatus.OK
    offender = await GameClient.connect("127.0.0.1", cluster.game_port)
    return neighbour, offender


@pytest.mark.parametrize("reason", sorted(VIOLATIONS))
def test_framing_violation_closes_only_that_client(shared_cluster, reason):
    cluster, gateway = shared_cluster
    account = 1000 + 10 * sorted(VIOLATIONS).index(reason)

    async def scenario():
        neighbour, offender = await _neighbour_and_offender(cluster, account)
        assert (await offender.login(account)).status == GameLoginStatus.OK
        offender.send_raw(VIOLATIONS[reason]())
        assert await offender.wait_closed(5), "offender was not disconnected"
        assert await neighbour.echo(50) == [GameResEcho(account + 1, i) for i in range(50)]
        await neighbour.close()

    run(scenario())
    gateway.wait_log(rf"session \d+ closed: {reason}\b")


def test_echo_before_login_closes_only_that_client(shared_cluster):
    cluster, gateway = shared_cluster

    async def scenario():
        neighbour, offender = await _neighbour_and_offender(cluster, 2000)
        offender.send(GameReqEcho(2000, 1))
        assert await offender.wait_closed(5)
        assert len(await neighbour.echo(10)) == 10
        await neighbour.close()

    run(scenario())
    gateway.wait_log(r"session \d+ closed: not_logged_in\b")


def test_heartbeat_before_login_closes_the_client(shared_cluster):
    cluster, _ = shared_cluster

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        client.heartbeat()
        return await client.wait_closed(5)

    assert run(scenario())


def test_account_mismatch_closes_only_that_client(shared_cluster):
    cluster, gateway = shared_cluster

    async def scenario():
        neighbour, offender = await _neighbour_and_offender(cluster, 3000)
        assert (await offender.login(3000)).status == GameLoginStatus.OK
        assert await offender.echo(3) == [GameResEcho(3000, i) for i in range(3)]
        offender.send(GameReqEcho(3999, 1))
        assert await offender.wait_closed(5)
        assert len(await neighbour.echo(10)) == 10
        await neighbour.close()

    run(scenario())
    gateway.wait_log(r"session \d+ closed: account_mismatch\b")


def test_second_login_on_a_session_closes_it(shared_cluster):
    cluster, gateway = shared_cluster

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await client.login(4000)).status == GameLoginStatus.OK
        await client.echo(1)
        with pytest.raises(ServerClosed):
            await client.login(4000)

    run(scenario())
    gateway.wait_log(r"session \d+ closed: login_in_game\b")


def test_version_mismatch_gets_version_miss_and_is_closed(shared_cluster):
    cluster, _ = shared_cluster

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        reply = await client.login(5000, version=2)
        return reply, await client.wait_closed(5)

    reply, closed = run(scenario())
    assert reply.status == GameLoginStatus.VERSION_MISS
    assert reply.account_no == 5000
    assert closed


def test_heartbeat_is_accepted_in_game_mode(shared_cluster):
    cluster, _ = shared_cluster

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        await client.login(6000)
        client.send(GameReqHeartbeat())
        replies = await client.echo(2)
        await client.close()
        return replies

    assert run(scenario()) == [GameResEcho(6000, 0), GameResEcho(6000, 1)]


def test_worker_reports_auth_and_game_fps_and_warns_that_keys_are_not_verified(shared_cluster):
    cluster, _ = shared_cluster
    worker = cluster.processes[1]
    assert "game.verify_key = false: every login is accepted" in worker.log()
    match = worker.wait_log(r"auth_fps=(\d+) game_fps=(\d+)")
    # frames run at least every game.frame_interval (0.02 s): tens per second when idle
    assert int(match.group(1)) >= 10 and int(match.group(2)) >= 10


def test_each_drop_is_counted_by_reason_in_the_gateway_summary(make_cluster):
    cluster = make_cluster()
    _, gateway, _ = cluster.start_spine()

    async def scenario():
        for make_bad in (_flipped_checksum, _flipped_checksum, VIOLATIONS["bad_code"]):
            client = await GameClient.connect("127.0.0.1", cluster.game_port)
            await client.login(1)
            client.send_raw(make_bad())
            assert await client.wait_closed(5)
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        client.send(GameReqEcho(1, 1))
        assert await client.wait_closed(5)

    run(scenario())
    assert gateway.stop() == 0
    summary = gateway.wait_log(r"stopped: .*drops: (.*)").group(1)
    assert summary.split() == ["bad_checksum=2", "bad_code=1", "not_logged_in=1"]


def test_login_with_verify_key_on_and_no_pushed_key_fails(make_cluster):
    cluster = make_cluster(game={"verify_key": True})
    cluster.start_spine()

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        reply = await client.login(42, session_key=b"k" * 64)
        return reply, await client.wait_closed(5)

    reply, closed = run(scenario())
    assert (reply.status, reply.account_no) == (GameLoginStatus.FAIL, 42)
    assert closed


def test_silent_client_is_dropped_and_heartbeating_one_is_kept(make_cluster):
    cluster = make_cluster(gateway={"heartbeat_timeout": 1.5})
    _, gateway, _ = cluster.start_spine()

    async def scenario():
        silent = await GameClient.connect("127.0.0.1", cluster.game_port)
        await silent.login(1)
        alive = await GameClient.connect("127.0.0.1", cluster.game_port)
        await alive.login(2)
        closed_task = asyncio.create_task(silent.wait_closed(8))
        for _ in range(8):  # heartbeat every 0.5 s for 4 s, well past the 1.5 s timeout
            alive.heartbeat()
            await alive.writer.drain()
            await asyncio.sleep(0.5)
        silent_closed = await closed_task
        replies = await alive.echo(3)
        return silent_closed, replies

    silent_closed, replies = run(scenario())
    assert silent_closed
    assert replies == [GameResEcho(2, i) for i in range(3)]
    gateway.wait_log(r"session \d+ closed: heartbeat_timeout\b")


def test_login_without_any_game_worker_is_closed(make_cluster):
    cluster = make_cluster()
    cluster.start("broker")
    gateway = cluster.start("gateway")

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        client.send(GameReqLogin(1, b"\0" * 64, 1))
        return await client.wait_closed(5)

    assert run(scenario())
    gateway.wait_log(r"session \d+ closed: no_game_worker\b")


def test_login_port_closes_a_silent_connection_and_one_sending_anything_else(make_cluster):
    cluster = make_cluster(gateway={"login_timeout": 1.0})
    _, gateway, _ = cluster.start_spine()

    async def scenario():
        silent = await GameClient.connect("127.0.0.1", cluster.login_port)
        wrong = await GameClient.connect("127.0.0.1", cluster.login_port)
        wrong.send(GameReqEcho(1, 1))  # a game message on the login port
        return await wrong.wait_closed(5), await silent.wait_closed(5)

    assert run(scenario()) == (True, True)
    gateway.wait_log(r"login session \d+ closed: unknown_type\b")
    gateway.wait_log(r"login session \d+ closed: login_timeout\b")


def test_login_port_without_auth_workers_answers_noserver(make_cluster):
    cluster = make_cluster()
    cluster.start_spine()

    from dummy.client import login_once

    reply = run(login_once("127.0.0.1", cluster.login_port, 5, b"k" * 64))
    assert (reply.account_no, reply.status) == (5, 6)
    assert (reply.game_server_ip, reply.game_server_port) == ("127.0.0.1", cluster.game_port)


def test_a_gateway_that_accepted_nobody_says_so_when_it_stops(make_cluster):
    cluster = make_cluster()
    _, gateway, _ = cluster.start_spine()
    assert gateway.stop() == 0
    assert gateway.wait_log(r"stopped: (.*)").group(1) == "accepted=none drops: none"
