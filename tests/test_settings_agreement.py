"""Processes of one cluster agree on the settings that shape it (cluster.config.AGREED_KEYS).

A worker or gateway started, on any host, with another link mode, other protocol keys, other
heartbeat rules or another app than the broker's is refused at registration: it logs one line
naming the keys and exits 2, and nothing else in the cluster notices. Without the check such a
process registers and then fails every client placed on it, one by one.
"""

from __future__ import annotations

import re
import time

import msgpack
import pytest
import zmq

from cluster import bus
from cluster.config import AGREED_KEYS, agreed_settings, load, settings_mismatch
from cluster.messages import GameResEcho
from tests.harness import run
from tests.test_failover import _logged_in

EXIT_TIMEOUT = 30.0


def _exit_code(process, timeout: float = EXIT_TIMEOUT) -> int:
    code = process.proc.wait(timeout)
    process._stderr.close()
    return code


def test_every_agreed_key_is_a_real_key_and_survives_the_bus():
    config = load(None)
    settings = bus.settings(config)
    assert set(settings) == {"bus.version", *AGREED_KEYS}
    # what the broker compares is what msgpack carried, so a default config agrees with itself
    carried = bus.unpack_info(bus.pack_info(settings))
    assert settings_mismatch(settings, carried) == ""
    assert agreed_settings(config)["cluster.link_mode"] == config.cluster.link_mode


def test_mismatch_names_each_differing_key_and_ignores_keys_one_side_does_not_know():
    ours = {"cluster.link_mode": "systemlink", "protocol.key1": 50, "game.app": "a"}
    theirs = {"cluster.link_mode": "non-systemlink", "protocol.key1": 51, "game.app": "a",
              "future.key": 1}  # fmt: skip
    reason = settings_mismatch(ours, theirs)
    assert "cluster.link_mode is 'non-systemlink' in the peer's config" in reason
    assert "'systemlink' in the broker's" in reason
    assert "protocol.key1 is 51" in reason
    assert "game.app" not in reason and "future.key" not in reason
    assert settings_mismatch(ours, {"cluster.link_mode": "systemlink"}) == ""


def test_a_worker_with_other_settings_is_refused_exits_2_and_costs_nobody_anything(
    make_cluster,
):
    cluster = make_cluster()
    broker, gateway, _ = cluster.start_spine()

    async def scenario():
        client = (await _logged_in(cluster.game_port, range(1, 2)))[0]
        other = cluster.variant("other", cluster={"link_mode": "non-systemlink"},
                                protocol={"key1": 51})  # fmt: skip
        stranger = cluster.start("game", wait_ready=False, config=other)
        assert _exit_code(stranger) == 2
        log = stranger.log()
        lines = [line for line in log.splitlines() if "refused this game" in line]
        assert len(lines) == 1, log
        assert "cluster.link_mode is 'non-systemlink'" in lines[0]
        assert "protocol.key1 is 51" in lines[0]
        assert "Traceback" not in log
        assert stranger.ready_line == ""  # never called itself ready
        broker.wait_log(r"refused game .*cluster\.link_mode")
        # The cluster never saw it: the session in game keeps echoing, new logins land on the
        # worker that agrees (a registered stranger would have taken half of them and failed
        # them with a checksum error).
        assert await client.echo(3) == [GameResEcho(1, i) for i in range(3)]
        fresh = await _logged_in(cluster.game_port, range(2, 8))
        for c in fresh:
            assert await c.echo(1) == [GameResEcho(c.account_no, 0)]
        # and one that agrees is welcome
        cluster.start("game")

    run(scenario())
    assert gateway.proc.poll() is None and broker.proc.poll() is None


def test_a_broker_restarted_with_other_settings_stops_the_gateway_it_refuses(make_cluster):
    cluster = make_cluster(broker={"heartbeat_interval": 0.3, "heartbeat_liveness": 3})
    broker = cluster.start("broker")
    gateway = cluster.start("gateway")
    broker.kill()
    cluster.reconfigure(game={"app": "workers.apps.tally"})
    restarted = cluster.start("broker")
    restarted.wait_log(r"refused gateway .*game\.app is 'workers\.apps\.echo'")
    assert _exit_code(gateway) == 2
    log = gateway.log()
    assert re.search(r"the broker at tcp://\S+ refused this gateway: game\.app is "
                     r"'workers\.apps\.echo' in the peer's config but 'workers\.apps\.tally' "
                     r"in the broker's", log), log  # fmt: skip
    assert "Traceback" not in log


@pytest.fixture
def dealer(make_cluster):
    cluster = make_cluster()
    cluster.start("broker")
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(cluster.endpoint)
    yield sock
    sock.close()


def _register(sock, info) -> list[bytes]:
    sock.send_multipart([bus.READY, b"game", msgpack.packb(info)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frames = sock.recv_multipart()
        if frames[0] in (bus.WELCOME, bus.REFUSED):
            return frames
    raise AssertionError("no answer to READY")


def test_a_peer_of_another_bus_version_or_with_junk_settings_is_refused(dealer):
    settings = bus.settings(load(None))
    settings["bus.version"] = bus.VERSION + 1
    frames = _register(dealer, {"settings": settings})
    assert frames[0] == bus.REFUSED and b"bus.version is 2" in frames[1]
    frames = _register(dealer, {"settings": ["not", "a", "map"]})
    assert frames[0] == bus.REFUSED and b"not a map" in frames[1]


def test_a_peer_that_sends_no_settings_is_welcome(dealer):
    """Tools and test peers that speak the bus without a config register as before."""
    assert _register(dealer, {"scripted": True})[0] == bus.WELCOME
