"""A broker that was paused (SIGSTOP, then SIGCONT) judges no peer silent for its own pause."""

from __future__ import annotations

import asyncio
import re
import signal
import time

from cluster.messages import GameResEcho
from cluster.testkit import wait_until
from tests.harness import RoleProcess, run
from tests.test_failover import _logged_in

INTERVAL, LIVENESS = 0.3, 3
PAUSE = 3.0  # well over INTERVAL x LIVENESS: every peer would look silent to a naive purge
EVICTED = re.compile(r"gone \((silent|unreachable)\)")


def _registrations(process: RoleProcess) -> int:
    return len(re.findall(r"registered with broker", process.log()))


def _wait_registered_again(process: RoleProcess, before: int, timeout: float = 15.0) -> None:
    """Wait until `process` logs one more registration with the broker than `before`."""
    wait_until(
        lambda: _registrations(process) > before,
        f"{process.args} registering again",
        timeout=timeout,
        detail=process.log,
    )


def test_paused_broker_evicts_nobody_and_serves_new_logins(make_cluster):
    cluster = make_cluster(broker={"heartbeat_interval": INTERVAL, "heartbeat_liveness": LIVENESS})
    broker, gateway, (game,) = cluster.start_spine()

    async def scenario() -> list[bool]:
        playing = await _logged_in(cluster.game_port, range(1, 4))
        before = {p: _registrations(p) for p in (gateway, game)}
        broker.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(PAUSE)  # the scenario: the broker is not running meanwhile
        finally:
            broker.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        broker.wait_log(r"broker loop stalled for \d+\.\ds; peer expiries extended")
        for process, count in before.items():  # both noticed the silence and came back
            await asyncio.to_thread(_wait_registered_again, process, count)
        fresh = (await _logged_in(cluster.game_port, range(100, 101)))[0]
        assert await fresh.echo(3) == [GameResEcho(100, i) for i in range(3)]
        # Watch the broker through several purges after it resumed: nobody is evicted.
        while time.monotonic() < resumed + 3 * INTERVAL * LIVENESS:
            assert not EVICTED.search(broker.log()), broker.log()
            await asyncio.sleep(0.05)
        return await asyncio.gather(*(c.wait_closed(0.2) for c in playing))

    closed = run(scenario())
    assert not EVICTED.search(broker.log()), broker.log()
    assert closed == [False] * 3  # the sessions from before the pause were not closed
    assert broker.proc.poll() is None
