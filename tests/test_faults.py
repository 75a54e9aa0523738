"""Bad clients, floods and dying processes: the cluster keeps serving everyone else, and says
what happened (a status code, a counted drop, or one log line)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import struct
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.codec import MAX_PACKET, Codec
from cluster.messages import (
    GameLoginStatus,
    GameReqEcho,
    GameReqHeartbeat,
    GameReqLogin,
    GameResEcho,
    LoginStatus,
)
from cluster.testkit import wait_until
from dummy.client import GameClient, login_once
from tests.harness import ClusterUnderTest, run

CODEC = Codec()


def _status(cluster) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "status", "--json", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return json.loads(result.stdout) if result.returncode == 0 else {}


def _gateway_sessions(cluster) -> int | None:
    gateways = [p for p in _status(cluster).get("processes", []) if p["role"] == "gateway"]
    return gateways[0]["sessions"] if gateways else None


def test_connections_beyond_max_sessions_are_accepted_and_closed_at_once(make_cluster):
    cluster = make_cluster(gateway={"max_sessions": 5})
    _, gateway, _ = cluster.start_spine()

    async def scenario():
        held = [await GameClient.connect("127.0.0.1", cluster.game_port) for _ in range(5)]
        for i, client in enumerate(held):
            assert (await client.login(i + 1)).status == GameLoginStatus.OK
        extra = [await GameClient.connect("127.0.0.1", cluster.game_port) for _ in range(20)]
        # Closed by the gateway, not left waiting in the listen backlog (which is how a gateway
        # that stops accepting at the limit, and spins on its readable listener, shows).
        refused = await asyncio.gather(*(c.wait_closed(10) for c in extra))
        return refused, await held[0].echo(3)

    refused, echoes = run(scenario())
    assert refused == [True] * 20
    assert echoes == [GameResEcho(1, i) for i in range(3)]  # the sessions held are served
    gateway.stop()
    stopped = gateway.log().rsplit("stopped: ", 1)[1].splitlines()[0]
    # Every connection accepted once, each extra one refused once for the limit, nothing more.
    assert "accepted_game=25" in stopped.split(), stopped
    assert "max_sessions=20" in stopped.split(), stopped


def test_a_connection_that_never_logs_in_is_closed_after_the_login_timeout(make_cluster):
    cluster = make_cluster(gateway={"login_timeout": 1.0})
    _, gateway, _ = cluster.start_spine()

    async def scenario():
        silent = await GameClient.connect("127.0.0.1", cluster.game_port)
        trickle = await GameClient.connect("127.0.0.1", cluster.game_port)
        trickle.send_raw(CODEC.encode(GameReqHeartbeat())[:3])  # half a header, then nothing
        return await silent.wait_closed(5), await trickle.wait_closed(5)

    assert run(scenario()) == (True, True)
    gateway.wait_log(r"game session \d+ closed: login_timeout\b")


def test_logins_beyond_the_per_address_rate_get_a_failure_status(make_cluster):
    rate = 3.0  # logins per second per address, and as many at once
    cluster = make_cluster(gateway={"login_rate": rate})
    _, gateway, _ = cluster.start_spine()

    async def login_from(address: str, account: int) -> int:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", cluster.game_port, local_addr=(address, 0)
        )
        client = GameClient(reader, writer, CODEC)
        status = (await client.login(account)).status
        await client.close()
        return status

    async def scenario():
        # Logins one after another until the limit refuses one: however fast or slow this
        # machine is, the allowance (the burst, then `rate` more per second) runs out.
        loop = asyncio.get_running_loop()
        started = loop.time()
        burst = []
        while GameLoginStatus.FAIL not in burst and len(burst) < 500:
            burst.append(await login_from("127.0.0.1", len(burst) + 1))
        spent = loop.time() - started
        other = await login_from("127.0.0.2", 1000)  # another address has its own allowance
        return burst, spent, other

    burst, spent, other = run(scenario())
    assert set(burst) <= {GameLoginStatus.OK, GameLoginStatus.FAIL}, burst
    assert burst[:3] == [GameLoginStatus.OK] * 3  # the burst is honoured
    assert burst[-1] == GameLoginStatus.FAIL  # and the limit refuses what goes beyond it
    # No more were let through than the token bucket holds: the burst plus what refilled.
    assert burst.count(GameLoginStatus.OK) <= rate + rate * spent + 1, (burst, spent)
    assert other == GameLoginStatus.OK
    gateway.wait_log(r"game session \d+ closed: login_rate_limited\b")


def test_auth_worker_killed_with_a_login_in_flight_answers_that_client_noserver(
    make_cluster, backend
):
    from tests.test_login import make_login_cluster

    lc = make_login_cluster(make_cluster, backend, "systemlink", auth={"link_timeout": 30.0},
                            broker={"heartbeat_interval": 0.5})  # fmt: skip
    account = lc.accounts[0]
    lc.roles["game"].send_signal(signal.SIGSTOP)  # the push waits: the login stays in flight

    async def scenario():
        login = asyncio.create_task(
            login_once("127.0.0.1", lc.login_port, account.no, account.key, timeout=20)
        )
        await asyncio.to_thread(
            lc.roles["auth"].wait_log, rf"pushed the key of account {account.no} ", 10
        )
        lc.roles["auth"].kill()
        return await login

    try:
        reply = run(scenario())
    finally:
        lc.roles["game"].send_signal(signal.SIGCONT)
    assert reply.status == LoginStatus.NOSERVER
    lc.roles["gateway"].wait_log(r"login session \d+ closed: worker_gone\b")


def test_monitor_killed_and_restarted(make_cluster):
    cluster = make_cluster()
    cluster.start_spine()
    monitor = cluster.start("monitor")
    monitor.kill()
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "status", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1 and "monitor" in result.stderr

    async def echo() -> list:
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        await client.login(5)
        return await client.echo(2)

    assert run(echo()) == [GameResEcho(5, 0), GameResEcho(5, 1)]  # serving without a monitor
    cluster.start("monitor")

    def every_role_reported() -> bool:  # to the restarted monitor
        roles = {p["role"] for p in _status(cluster).get("processes", [])}
        return {"broker", "gateway", "game", "monitor"} <= roles

    wait_until(every_role_reported, "every role in `cluster status`")


# -- fuzzing a live gateway ------------------------------------------------------------------------


def _mutate(packet: bytes, data: st.DataObject) -> bytes:
    raw = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    return bytes(raw)


VALID = [
    CODEC.encode(GameReqLogin(9, b"\0" * 64, 1)),
    CODEC.encode(GameReqEcho(9, 1)),
    CODEC.encode(GameReqHeartbeat()),
]


def test_live_gateway_survives_fuzzed_streams(tmp_path_factory):
    cluster = ClusterUnderTest(tmp_path_factory.mktemp("fuzz"), gateway={"login_timeout": 2.0})
    try:
        _, gateway, _ = cluster.start_spine()
        cluster.start("monitor")

        @settings(max_examples=60, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
        @given(data=st.data())
        def one_stream(data: st.DataObject) -> None:
            kind = data.draw(st.sampled_from(["random", "mutated", "valid"]))
            if kind == "random":
                stream = data.draw(st.binary(min_size=1, max_size=3 * MAX_PACKET))
            else:
                packets = data.draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=20))
                stream = b"".join(packets)
                if kind == "mutated":
                    stream = _mutate(stream, data)
            cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))

            async def send() -> None:
                _reader, writer = await asyncio.open_connection("127.0.0.1", cluster.game_port)
                last = 0
                try:
                    for cut in [*cuts, len(stream)]:
                        writer.write(stream[last:cut])
                        last = cut
                        await writer.drain()
                except ConnectionError:
                    pass  # the gateway dropped this client: what it is meant to do
                writer.close()

            run(send())

        one_stream()

        async def neighbour() -> list:
            client = await GameClient.connect("127.0.0.1", cluster.game_port)
            await client.login(1)
            replies = await client.echo(5)
            # every fuzzed connection is gone, only this one is left: nothing leaked
            await asyncio.to_thread(
                wait_until, lambda: _gateway_sessions(cluster) == 1, "one gateway session left"
            )
            await client.close()
            return replies

        replies = run(neighbour())
        assert replies == [GameResEcho(1, i) for i in range(5)]
        assert gateway.proc.poll() is None
        assert "Traceback" not in gateway.log()
    finally:
        cluster.close()


def test_random_bytes_never_break_the_decoder_contract():
    rng = random.Random(7)
    for _ in range(2000):
        decoder = CODEC.decoder([GameReqLogin.TYPE, GameReqEcho.TYPE, GameReqHeartbeat.TYPE])
        stream = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        stream = struct.pack("<B", 119) + stream
        try:
            for i in range(0, len(stream), 7):
                decoder.feed(stream[i : i + 7])
                assert decoder.buffered < MAX_PACKET
        except Exception as exc:
            assert type(exc).__name__ == "RemoteProtocolError"
