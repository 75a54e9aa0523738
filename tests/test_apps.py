"""A third app on the worker runtime (docs/apps.md): the example tally app, run by a real game
worker behind a real gateway, and the one-line errors of an app that cannot be loaded."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from cluster.codec import Codec
from cluster.messages import SPECS, GameLoginStatus, GameReqEcho, MessageSpec, register
from dummy.client import GameClient
from tests.harness import run
from workers.apps.tally import TallyReqAdd, TallyResTotal


def test_the_tally_app_answers_its_own_messages_and_keeps_the_rules(make_cluster):
    cluster = make_cluster(game={"app": "workers.apps.tally"})
    cluster.start("broker")
    worker = cluster.start("game")
    assert "app=tally" in worker.ready_line
    gateway = cluster.start("gateway")

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        client.decoder = client.codec.decoder({*client.decoder._accept, TallyResTotal.TYPE})
        assert (await client.login(7)).status == GameLoginStatus.OK
        for amount in (5, -2, 40):
            client.send(TallyReqAdd(7, amount))
        totals = [await client.recv() for _ in range(3)]
        client.heartbeat()
        client.send(TallyReqAdd(8, 1))  # someone else's account: closed
        cheat_closed = await client.wait_closed()
        # The echo is not in the tally's message table: an unknown type to this app.
        other = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await other.login(9)).status == GameLoginStatus.OK
        other.send(GameReqEcho(9, 1))
        return totals, cheat_closed, await other.wait_closed()

    totals, cheat_closed, echo_closed = run(scenario())
    assert totals == [TallyResTotal(7, 5), TallyResTotal(7, 3), TallyResTotal(7, 43)]
    assert cheat_closed and echo_closed
    gateway.stop()
    drops = gateway.wait_log(r"stopped: .*drops: (.*)").group(1)
    assert "account_mismatch=1" in drops and "unknown_type=1" in drops


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("no.such.module", "game.app: cannot import 'no.such.module'"),
        ("workers.apps", "game.app: 'workers.apps' has no create(config) function"),
    ],
)
def test_an_app_that_cannot_be_loaded_is_one_clear_line(make_cluster, module, message):
    cluster = make_cluster(game={"app": module})
    cluster.start("broker")
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "game", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_module_name_is_refused_by_the_config(make_cluster):
    cluster = make_cluster(chat={"app": "not a module"})
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "chat", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "chat.app: 'not a module' is not a module name" in result.stderr


def test_register_refuses_a_second_layout_for_a_known_type():
    assert register(MessageSpec(TallyReqAdd, struct.Struct("<qi"))) is SPECS[TallyReqAdd.TYPE]
    with pytest.raises(ValueError, match="6001"):
        register(MessageSpec(TallyReqAdd, struct.Struct("<qq")))
    # The codec encodes and decodes a registered type like a built-in one.
    codec = Codec()
    packet = codec.encode(TallyReqAdd(1, -7))
    assert codec.decoder({TallyReqAdd.TYPE}).feed(packet) == [TallyReqAdd(1, -7)]
