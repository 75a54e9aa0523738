"""Workers and gateways dying, going silent, leaving and joining: what clients see."""

from __future__ import annotations

import asyncio
import signal

from cluster.messages import GameLoginStatus, GameResEcho
from dummy.client import GameClient
from tests.harness import run


async def _logged_in(port: int, accounts: range) -> list[GameClient]:
    clients = []
    for account in accounts:
        client = await GameClient.connect("127.0.0.1", port)
        assert (await client.login(account)).status == GameLoginStatus.OK
        clients.append(client)
    return clients


async def _all_echo(clients: list[GameClient], tick: int) -> None:
    results = await asyncio.gather(*(c.echo(5, first_tick=tick) for c in clients))
    for client, replies in zip(clients, results, strict=True):
        assert replies == [GameResEcho(client.account_no, tick + i) for i in range(5)]


async def _all_closed(clients: list[GameClient], timeout: float) -> list[bool]:
    return list(await asyncio.gather(*(c.wait_closed(timeout) for c in clients)))


def test_killed_worker_closes_exactly_its_clients_and_a_new_worker_takes_sessions(make_cluster):
    cluster = make_cluster()
    cluster.start("broker")
    worker_a = cluster.start("game")
    cluster.start("gateway")

    async def scenario():
        on_a = await _logged_in(cluster.game_port, range(100, 110))
        worker_b = cluster.start("game")  # least loaded from now on: the next 10 go to B
        on_b = await _logged_in(cluster.game_port, range(200, 210))
        await _all_echo(on_a + on_b, 1)

        worker_a.kill()
        assert await _all_closed(on_a, timeout=5) == [True] * 10
        await _all_echo(on_b, 2)  # B's clients never noticed
        assert not any(await _all_closed(on_b, timeout=0.2))

        survivors = await _logged_in(cluster.game_port, range(300, 305))  # only B is left
        await _all_echo(survivors, 3)

        cluster.start("game")  # C: least loaded, so it takes the next sessions
        on_c = await _logged_in(cluster.game_port, range(400, 405))
        worker_b.kill()
        assert await _all_closed(on_b + survivors, timeout=5) == [True] * 15
        await _all_echo(on_c, 4)  # placed on C, untouched by B's death

    run(scenario())


def test_silent_worker_is_evicted_and_its_clients_closed(make_cluster):
    cluster = make_cluster(broker={"heartbeat_interval": 0.3, "heartbeat_liveness": 3})
    broker = cluster.start("broker")
    frozen = cluster.start("game")
    cluster.start("gateway")

    async def scenario():
        clients = await _logged_in(cluster.game_port, range(1, 4))
        healthy_worker = cluster.start("game")
        others = await _logged_in(cluster.game_port, range(11, 14))
        frozen.send_signal(signal.SIGSTOP)  # alive but silent: only heartbeats can tell
        try:
            assert await _all_closed(clients, timeout=5) == [True] * 3
            await _all_echo(others, 1)
            # The gateway saw it on the data link; the broker evicts it too while it is silent.
            await asyncio.to_thread(broker.wait_log, r"game game@\S+ gone \(silent\)", 20)
        finally:
            frozen.send_signal(signal.SIGCONT)
        return healthy_worker

    run(scenario())


def test_worker_stopping_cleanly_says_goodbye_and_closes_its_clients(make_cluster):
    cluster = make_cluster()
    broker = cluster.start("broker")
    worker = cluster.start("game")
    gateway = cluster.start("gateway")

    async def scenario():
        clients = await _logged_in(cluster.game_port, range(1, 6))
        assert worker.stop() == 0
        return await _all_closed(clients, timeout=5)

    assert run(scenario()) == [True] * 5
    broker.wait_log(r"game game@\S+ gone \(disconnected\)")
    gateway.wait_log(r"session \d+ closed: worker_shutdown\b")


def test_killed_gateway_releases_its_sessions_on_the_workers(make_cluster):
    cluster = make_cluster()
    broker = cluster.start("broker")
    worker = cluster.start("game")
    gateway = cluster.start("gateway")

    async def scenario():
        await _logged_in(cluster.game_port, range(1, 8))
        gateway.kill()

    run(scenario())
    broker.wait_log(r"gateway gateway@\S+ gone")
    worker.wait_log(r"gateway b'gateway@\S+' gone: releasing its 7 sessions")


def test_gateway_and_worker_register_again_after_a_broker_restart(make_cluster):
    cluster = make_cluster(broker={"heartbeat_interval": 0.3, "heartbeat_liveness": 3})
    broker = cluster.start("broker")
    cluster.start("game")
    gateway = cluster.start("gateway")

    async def scenario():
        client = (await _logged_in(cluster.game_port, range(1, 2)))[0]
        broker.kill()
        restarted = cluster.start("broker")
        restarted.wait_log(r"gateway registered")
        restarted.wait_log(r"game registered")
        # The session bound before the restart still reaches its worker, and new logins work.
        assert await client.echo(3) == [GameResEcho(1, i) for i in range(3)]
        fresh = (await _logged_in(cluster.game_port, range(2, 3)))[0]
        assert await fresh.echo(1) == [GameResEcho(2, 0)]

    run(scenario())
    assert gateway.proc.poll() is None
