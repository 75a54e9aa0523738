"""The broker killed (kill -9) or paused (SIGSTOP) under load, in both link modes: sessions in
game never notice (their traffic takes the data link), every echo is answered in order, and
logins resume by themselves once the broker is back."""

from __future__ import annotations

import asyncio
import signal

import pytest

from cluster.messages import GameResEcho, LoginStatus
from cluster.testkit import async_wait_until
from dummy.client import GameClient, ServerClosed, login_once
from tests.backends import Backend
from tests.harness import run
from tests.test_login import MODES, full_login, make_login_cluster

SESSIONS = 12


async def _echo_until(client: GameClient, stop: asyncio.Event) -> int:
    """Rounds of 10 pipelined echoes until `stop`; each round checked in order."""
    tick = 0
    while not stop.is_set():
        replies = await client.echo(10, first_tick=tick, timeout=30)
        assert replies == [GameResEcho(client.account_no, tick + i) for i in range(10)]
        tick += 10
    return tick


async def _login_when_possible(lc, account, timeout: float = 30.0) -> GameClient:
    """Logins are refused (NOSERVER, or FAIL on the game port) while the broker is away or its
    peers re-register; a client tries again, the whole login, until one goes through."""

    async def accepted():
        try:
            reply = await login_once("127.0.0.1", lc.login_port, account.no, account.key)
            if reply.status != LoginStatus.OK:
                return None
            client = await GameClient.connect("127.0.0.1", reply.game_server_port)
            game = await client.login(account.no, account.key)
        except (ConnectionError, ServerClosed, TimeoutError):
            return None
        if game.status != 1:
            await client.close()
            return None
        return client

    return await async_wait_until(accepted, "a whole login accepted", timeout=timeout,
                                  interval=0.2)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_a_broker_fault_under_load_costs_no_session_and_no_echo(make_cluster, tmp_path, mode,
                                                                 fault):  # fmt: skip
    backend = Backend("sqlite", tmp_path)
    # The issue's own scenario: the default heartbeat rules, and a pause of 10 s; a monitor so
    # that samples flow through the broker as in a real cluster.
    lc = make_login_cluster(
        make_cluster, backend, mode, broker={"heartbeat_interval": 1.0, "heartbeat_liveness": 3},
        start=("broker", "monitor", "game", "auth", "gateway"),
    )  # fmt: skip
    lc.cluster.start("game")  # two game workers: sessions on both
    broker = lc.roles["broker"]

    async def scenario():
        clients = [await full_login(lc, account) for account in lc.accounts[:SESSIONS]]
        stop = asyncio.Event()
        load = [asyncio.create_task(_echo_until(c, stop)) for c in clients]
        await asyncio.sleep(0.5)  # load is flowing (a window of traffic, not a readiness wait)
        if fault == "kill":
            await asyncio.to_thread(broker.kill)
            await asyncio.sleep(4.0)  # past heartbeat_interval x liveness: peers notice
            restarted = await asyncio.to_thread(lc.cluster.start, "broker")
            await asyncio.to_thread(restarted.wait_log, r"gateway registered", 20)
        else:
            broker.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(10.0)  # peers give it up and reconnect, several times
            finally:
                broker.send_signal(signal.SIGCONT)
        fresh = await _login_when_possible(lc, lc.accounts[SESSIONS])
        fresh_echo = await fresh.echo(3)
        await asyncio.sleep(0.5)  # more load after the fault
        stop.set()
        echoed = await asyncio.gather(*load)
        still_open = [not await c.wait_closed(0.1) for c in clients]
        return echoed, still_open, fresh_echo

    echoed, still_open, fresh_echo = run(scenario())
    assert still_open == [True] * SESSIONS  # not one session closed
    assert all(n > 0 for n in echoed)  # every echo answered, in order (checked per round)
    assert fresh_echo == [GameResEcho(lc.accounts[SESSIONS].no, i) for i in range(3)]
    gateway = lc.roles["gateway"]
    gateway.stop()
    assert "worker_gone" not in gateway.log() and "data_link" not in gateway.log(), gateway.log()
    backend.close()


def test_with_the_broker_gone_a_hung_gateway_is_still_noticed_on_the_data_link(make_cluster):
    cluster = make_cluster(broker={"heartbeat_interval": 0.3, "heartbeat_liveness": 3})
    broker, gateway, (worker,) = cluster.start_spine()

    async def scenario():
        clients = []
        for account in range(1, 4):
            client = await GameClient.connect("127.0.0.1", cluster.game_port)
            assert (await client.login(account)).status == 1
            clients.append(client)
        return clients

    run(scenario())
    broker.kill()  # nobody is left to say GONE
    gateway.send_signal(signal.SIGSTOP)
    try:
        worker.wait_log(r"gateway \S+ silent on the data link", timeout=20)
        worker.wait_log(r"gateway b'gateway@\S+' gone: releasing its 3 sessions", timeout=20)
    finally:
        gateway.send_signal(signal.SIGCONT)
