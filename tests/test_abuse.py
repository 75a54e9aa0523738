"""Hostile clients and hostile bus peers beside honest sessions: the honest ones never notice.

What a cheater or a broken client would try: pipelining echoes as fast as TCP allows (reading
the replies or not), dribbling a packet one byte at a time to stay connected, holding many
connections from one address, guessing another player's pushed key, and a bus peer that sends
malformed items. Each gets a counted, specific answer; honest sessions see 0 errors.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from urllib.parse import urlsplit

import msgpack
import psutil

from cluster import bus
from cluster.codec import Codec
from cluster.datalink_stream import DATA, HELLO, frame
from cluster.messages import (
    SERVER_MESSAGES,
    GameLoginStatus,
    GameReqEcho,
    GameReqHeartbeat,
    GameReqLogin,
    GameResEcho,
    LoginStatus,
)
from dummy.client import GameClient, login_once
from gateway.sessions import TURN_BUDGET
from tests.backends import Backend
from tests.harness import ScriptedPeer, run
from tests.test_failover import _logged_in
from tests.test_login import make_login_cluster

CODEC = Codec()
#: What the gateway may grow by while flooded (README: per client one read of 256 KiB, the
#: requests in flight and max_outbound bytes of replies; six flooders need ~8 MB of that).
FLOOD_GROWTH_BOUND = 64 * 1024 * 1024
#: Echoes a reading flooder keeps unanswered at most (the gateway holds it at max_inflight = 256;
#: the rest waits in kernel buffers): bounds how long the final drain takes on a slow machine.
FLOOD_BACKLOG = 20_000
#: Seconds without a single answer after which a flooder's session counts as stuck.
STALL_LIMIT = 15.0


async def _honest_rounds(clients: list[GameClient], stop: asyncio.Event) -> int:
    """Echo rounds on every honest client until `stop`; every reply checked. Returns echoes."""

    async def one(client: GameClient) -> int:
        done, tick = 0, 0
        while not stop.is_set():
            replies = await client.echo(20, first_tick=tick, timeout=20)
            assert replies == [GameResEcho(client.account_no, tick + i) for i in range(20)]
            tick += 20
            done += 20
        return done

    return sum(await asyncio.gather(*(one(c) for c in clients)))


async def _reading_flooder(port: int, account: int, stop: asyncio.Event) -> tuple[int, int]:
    """Logs in, then writes echoes as fast as TCP takes them and reads every reply, checking
    their order. Returns (sent, answered in order)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(CODEC.encode(GameReqLogin(account, b"\0" * 64, 1)))
    decoder = CODEC.decoder(SERVER_MESSAGES)
    answered = 0

    async def read() -> None:
        nonlocal answered
        while data := await reader.read(65536):
            for message in decoder.feed(data):
                if isinstance(message, GameResEcho):
                    assert message == GameResEcho(account, answered)
                    answered += 1

    reading = asyncio.create_task(read())
    sent = 0
    while not stop.is_set():
        if sent - answered >= FLOOD_BACKLOG:  # far past max_inflight: the gateway holds us
            await asyncio.sleep(0.01)
            continue
        writer.write(b"".join(CODEC.encode(GameReqEcho(account, sent + i)) for i in range(500)))
        sent += 500
        await writer.drain()
        await asyncio.sleep(0)  # drain() does not yield while the kernel takes it all
    # Every echo must be answered, in order: wait while answers keep coming (a slow machine
    # drains the backlog slowly; a stuck session stops making progress).
    progress_at, seen = time.monotonic(), answered
    while answered < sent and time.monotonic() - progress_at < STALL_LIMIT:
        await asyncio.sleep(0.05)
        if answered != seen:
            progress_at, seen = time.monotonic(), answered
    reading.cancel()
    writer.transport.abort()
    if reading.done() and not reading.cancelled() and reading.exception() is not None:
        raise reading.exception()
    return sent, answered


async def _blind_flooder(port: int, account: int, stop: asyncio.Event) -> None:
    """Logs in, then writes echoes and never reads a byte (a tiny receive window)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    _reader, writer = await asyncio.open_connection(sock=raw)
    writer.write(CODEC.encode(GameReqLogin(account, b"\0" * 64, 1)))
    echoes = CODEC.encode(GameReqEcho(account, 7)) * 500
    try:
        while not stop.is_set():
            writer.write(echoes)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                await stop.wait()  # the gateway stopped reading us: just sit there
    except ConnectionError:
        pass  # dropped
    writer.transport.abort()


def test_flooders_reading_or_not_are_held_back_and_honest_sessions_see_nothing(make_cluster):
    # A tiny worker inbox, so that the worker's pressure reaches the gateway as well.
    cluster = make_cluster(gateway={"stall_timeout": 1.5}, game={"max_inbox": 100})
    _, gateway, (worker,) = cluster.start_spine()
    process = psutil.Process(gateway.pid)

    async def scenario():
        honest = await _logged_in(cluster.game_port, range(1, 6))
        before = process.memory_info().rss
        peak = before
        stop = asyncio.Event()
        flooders = [
            *(asyncio.create_task(_reading_flooder(cluster.game_port, 100 + i, stop))
              for i in range(3)),
            *(asyncio.create_task(_blind_flooder(cluster.game_port, 200 + i, stop))
              for i in range(3)),
        ]  # fmt: skip
        rounds = asyncio.create_task(_honest_rounds(honest, stop))
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.1)
        stop.set()
        echoed = await rounds
        results = await asyncio.gather(*flooders)
        still_open = [not await c.wait_closed(0.2) for c in honest]
        return echoed, results[:3], peak - before, still_open

    echoed, readers, growth, still_open = run(scenario())
    assert echoed > 0
    assert still_open == [True] * 5  # no honest session was closed
    for sent, answered in readers:  # a flooder that reads is slowed down, never dropped
        assert sent > 0 and answered == sent
    assert growth < FLOOD_GROWTH_BOUND, f"gateway grew by {growth / 1e6:.0f} MB"
    # The blind flooders were dropped for not reading; the readers were held at max_inflight.
    deadline = time.monotonic() + 20
    while len(re.findall(r"closed: slow_reader\b", gateway.log())) < 3:
        assert time.monotonic() < deadline, gateway.log()[-3000:]
        time.sleep(0.1)
    assert gateway.stop() == 0
    held = gateway.wait_log(r"held: (.*)").group(1)
    assert int(re.search(r"\binflight=(\d+)", held).group(1)) > 0, held
    drops = gateway.wait_log(r"stopped: .*drops: (.*)").group(1)
    assert "bus_unavailable" not in drops and "worker_gone" not in drops, drops
    assert worker.stop() == 0
    assert re.search(r"'inbox_full': [1-9]", worker.log()), worker.log()[-2000:]


def _gateway_inflight(metrics_port: int) -> list[int]:
    """The `inflight` of every gateway sample the monitor holds now."""
    url = f"http://127.0.0.1:{metrics_port}/status.json"
    with urllib.request.urlopen(url, timeout=5) as response:
        snapshot = json.loads(response.read())
    return [p["inflight"] for p in snapshot["processes"] if p["role"] == "gateway"]


def test_a_congested_gateway_holds_pipelining_clients_to_their_fair_share(make_cluster):
    """Five clients pipelining as fast as TCP allows would keep 5 x max_inflight requests in
    front of everybody's (the queue an honest echo waits in); once the gateway has more than
    2 x max_inflight unanswered they may have only fair_inflight each. They lose nothing (every
    echo answered, in order), honest sessions see no error, and the hold is counted (fair)."""
    max_inflight, fair = 256, 16
    bound = 2 * max_inflight + 5 * TURN_BUDGET + 5 * 20  # congestion line + one turn each + honest
    cluster = make_cluster(gateway={"max_inflight": max_inflight, "fair_inflight": fair})
    cluster.start("broker")
    cluster.start("monitor")
    cluster.start("game")
    gateway = cluster.start("gateway")

    async def scenario():
        honest = await _logged_in(cluster.game_port, range(1, 6))
        stop = asyncio.Event()
        flooders = [asyncio.create_task(_reading_flooder(cluster.game_port, 100 + i, stop))
                    for i in range(5)]  # fmt: skip
        rounds = asyncio.create_task(_honest_rounds(honest, stop))
        seen: list[int] = []  # the gateway's samples (one a second)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            seen += await asyncio.to_thread(_gateway_inflight, cluster.metrics_port)
            await asyncio.sleep(0.2)
        stop.set()
        return seen, await rounds, await asyncio.gather(*flooders)

    seen, echoed, readers = run(scenario())
    assert echoed > 0
    for sent, answered in readers:
        assert sent > 0 and answered == sent
    assert max(seen) > fair, seen  # the flood was on
    assert max(seen) <= bound, (bound, seen)  # not 5 x 256
    assert gateway.stop() == 0
    held = gateway.wait_log(r"held: (.*)").group(1)
    assert int(re.search(r"\bfair=(\d+)", held).group(1)) > 0, held


def test_a_client_dribbling_partial_packets_is_closed_at_the_heartbeat_timeout(make_cluster):
    cluster = make_cluster(gateway={"heartbeat_timeout": 1.0})
    _, gateway, _ = cluster.start_spine()

    async def scenario():
        dribbler = await GameClient.connect("127.0.0.1", cluster.game_port)
        beating = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await dribbler.login(1)).status == GameLoginStatus.OK
        assert (await beating.login(2)).status == GameLoginStatus.OK
        packet = CODEC.encode(GameReqEcho(1, 1))  # 23 bytes: one every 0.25 s takes 5.75 s
        closed_after = None
        started = time.monotonic()
        for byte in packet[:-1]:
            dribbler.send_raw(bytes([byte]))
            beating.heartbeat()  # whole packets: this one stays
            if await dribbler.wait_closed(0.25):
                closed_after = time.monotonic() - started
                break
        beating_open = not await beating.wait_closed(0.1)
        echo = await beating.echo(1)
        return closed_after, beating_open, echo

    closed_after, beating_open, echo = run(scenario())
    assert closed_after is not None, "a dribbling client was never closed"
    assert beating_open and echo == [GameResEcho(2, 0)]
    gateway.wait_log(r"game session \d+ closed: heartbeat_timeout\b")


def test_one_address_cannot_hold_more_than_max_per_address_connections(make_cluster):
    cluster = make_cluster(gateway={"max_per_address": 3})
    _, gateway, _ = cluster.start_spine()

    async def connect_from(address: str) -> GameClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", cluster.game_port, local_addr=(address, 0)
        )
        return GameClient(reader, writer, CODEC)

    async def scenario():
        held = [await connect_from("127.0.0.1") for _ in range(3)]
        for i, client in enumerate(held):
            assert (await client.login(10 + i)).status == GameLoginStatus.OK
        extra = await connect_from("127.0.0.1")
        refused = await extra.wait_closed(5)
        other = await connect_from("127.0.0.2")  # another address has its own allowance
        other_ok = (await other.login(20)).status == GameLoginStatus.OK
        await held[0].close()
        deadline = time.monotonic() + 10
        while True:  # the freed slot is given again once the gateway saw the close
            again = await connect_from("127.0.0.1")
            if not await again.wait_closed(0.3):
                break
            assert time.monotonic() < deadline, "the freed slot was never given again"
        again_ok = (await again.login(30)).status == GameLoginStatus.OK
        echoes = await held[1].echo(3)
        return refused, other_ok, again_ok, echoes

    refused, other_ok, again_ok, echoes = run(scenario())
    assert refused and other_ok and again_ok
    assert echoes == [GameResEcho(11, i) for i in range(3)]
    gateway.stop()
    assert re.search(r"drops: .*\bmax_per_address=[1-9]", gateway.log()), gateway.log()[-2000:]


def _malformed_bodies() -> list[bytes]:
    return [
        b"\xc1\xc1",  # not msgpack
        msgpack.packb({"not": "an array"}),
        msgpack.packb([[{"sid": 1}, 5001, 1, 2]]),  # a map where a session id belongs
        msgpack.packb([[1, "echo", 1, 2]]),
        msgpack.packb([[1, 5001, "x", 2]]),  # a field of the wrong type
        msgpack.packb([[1, 5001, 1]]),  # too few fields
        msgpack.packb([[1, 99999]]),  # an unknown type
        msgpack.packb([7, None, "x"]),
    ]


def test_malformed_bus_items_from_a_rogue_peer_cost_honest_sessions_nothing(make_cluster):
    cluster = make_cluster()
    _, gateway, (worker,) = cluster.start_spine()
    endpoint = re.search(r'bind = "([^"]+)"', cluster.config.read_text()).group(1)
    rogue = ScriptedPeer(endpoint, "cli", 0.3)
    roster = bus.unpack_info(rogue.expect(bus.ROSTER)[1])
    gateway_id = roster["gateway"][0].encode()
    worker_id = roster["game"][0].encode()
    data_host, data_port_no = urlsplit(roster["data"][roster["gateway"][0]]).netloc.split(":")

    async def scenario():
        honest = await _logged_in(cluster.game_port, range(1, 4))
        stop = asyncio.Event()
        rounds = asyncio.create_task(_honest_rounds(honest, stop))
        # Straight at the gateway's data port: a peer that says HELLO, then sends garbage items
        # and unknown frame kinds; and one that breaks the framing at once.
        _, data_port = await asyncio.open_connection(data_host, int(data_port_no))
        data_port.write(frame(HELLO, b"rogue"))
        _, breaker = await asyncio.open_connection(data_host, int(data_port_no))
        breaker.write(b"\xff" * 64)
        for _ in range(40):  # every 50 ms for 2 s, to the gateway and the worker, both ways in
            for body in _malformed_bodies():
                rogue.send([bus.TO, gateway_id, body])
                rogue.send([bus.TO, worker_id, body])
                data_port.write(frame(DATA, body))
            rogue.send([bus.TO, gateway_id])  # no body at all
            data_port.write(frame(ord("?"), b"nonsense"))
            await asyncio.sleep(0.05)
        data_port.close()
        fresh = await GameClient.connect("127.0.0.1", cluster.game_port)  # logins still work
        fresh_login = (await fresh.login(50)).status
        stop.set()
        echoed = await rounds
        still_open = [not await c.wait_closed(0.2) for c in honest]
        return echoed, fresh_login, still_open, await fresh.echo(2)

    try:
        echoed, fresh_login, still_open, fresh_echo = run(scenario())
    finally:
        rogue.close()
    assert echoed > 0 and still_open == [True] * 3
    assert fresh_login == GameLoginStatus.OK
    assert fresh_echo == [GameResEcho(50, 0), GameResEcho(50, 1)]
    assert gateway.stop() == 0 and worker.stop() == 0
    counted = re.search(r"bus: .*\bbad_bus_item=(\d+)", gateway.log())
    assert counted and int(counted.group(1)) > 0, gateway.log()[-2000:]
    assert re.search(r"\bbad_bus_message=[1-9]", gateway.log()), gateway.log()[-2000:]
    assert re.search(r"'bad_bus_item': [1-9]", worker.log()), worker.log()[-2000:]
    assert "Traceback" not in gateway.log() + worker.log()


def test_a_stranger_guessing_a_pushed_key_does_not_lock_the_player_out(make_cluster, tmp_path):
    backend = Backend("sqlite", tmp_path)
    lc = make_login_cluster(make_cluster, backend, "systemlink")
    account = lc.accounts[0]

    async def scenario():
        reply = await login_once("127.0.0.1", lc.login_port, account.no, account.key)
        assert reply.status == LoginStatus.OK  # the key is pushed to a game worker now
        guesses = []
        for guess in range(5):  # a stranger who knows only the AccountNo
            stranger = await GameClient.connect("127.0.0.1", lc.game_port)
            wrong = bytes([guess]) * 64
            guesses.append((await stranger.login(account.no, wrong)).status)
            await stranger.wait_closed(5)
        player = await GameClient.connect("127.0.0.1", lc.game_port)
        real = (await player.login(account.no, account.key)).status
        return guesses, real, await player.echo(1)

    guesses, real, echo = run(scenario())
    assert guesses == [GameLoginStatus.FAIL] * 5
    assert real == GameLoginStatus.OK and echo == [GameResEcho(account.no, 0)]
    backend.close()


def test_relayed_heartbeats_count_in_flight_until_the_worker_handled_them(make_cluster):
    """A session in game is relayed: its heartbeats reach the worker with its echoes and count
    against max_inflight until the worker says it handled them, so 1,000 of them under a limit
    of 8 hold the client back without ever wedging it: the echo behind them is answered."""
    cluster = make_cluster(gateway={"max_inflight": 8})
    _, gateway, (worker,) = cluster.start_spine()

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await client.login(1)).status == GameLoginStatus.OK
        client.send_raw(CODEC.encode(GameReqHeartbeat()) * 1000)
        return await client.echo(1)

    assert run(scenario()) == [GameResEcho(1, 0)]
    gateway.stop()
    worker.stop()
    assert "'heartbeat': 1000" in worker.log()  # every one handled by the worker
    assert re.search(r"held: .*inflight=[1-9]", gateway.log())  # it was held, then let go
