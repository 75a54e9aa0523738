"""A secured bus (CurveZMQ, address allow-list) and draining roles on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import zmq
import zmq.auth

from cluster import bus
from cluster.messages import GameLoginStatus, GameResEcho, LoginStatus
from dummy.client import GameClient, login_once
from tests.harness import run


def _keys(cluster) -> str:
    keys = cluster.dir / "keys"
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "keys", "generate", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=30, cwd=cluster.dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return str(keys)


def _welcomed(endpoint: str, configure=None, timeout: float = 2.0) -> bool:
    """Does a DEALER set up by `configure` get WELCOME for its READY?"""
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    # A refused handshake tears the pipe down; a DEALER with no pipe blocks
    # in send, so bound the send as well as the wait for WELCOME.
    sock.sndtimeo = int(timeout * 1000)
    if configure is not None:
        configure(sock)
    sock.connect(endpoint)
    try:
        try:
            sock.send_multipart([bus.READY, b"game", bus.pack_info({})])
        except zmq.Again:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sock.poll(100) and sock.recv_multipart()[0] == bus.WELCOME:
                return True
        return False
    finally:
        sock.close(linger=0)


def test_curve_bus_carries_the_cluster_and_refuses_strangers(make_cluster, tmp_path):
    cluster = make_cluster()
    keys = _keys(cluster)
    cluster.reconfigure(security={"curve": True, "keys_dir": keys})
    broker = cluster.start("broker")
    cluster.start("game")
    cluster.start("gateway")

    async def scenario():
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await client.login(1)).status == GameLoginStatus.OK
        return await client.echo(3)

    assert run(scenario()) == [GameResEcho(1, i) for i in range(3)]
    endpoint = cluster.endpoint
    server_key, _ = zmq.auth.load_certificate(f"{keys}/broker.key")
    assert not _welcomed(endpoint)  # no CURVE at all: the handshake fails

    _, secret = zmq.auth.create_certificates(str(tmp_path), "stranger")
    stranger_public, stranger_secret = zmq.auth.load_certificate(secret)

    def stranger(sock):
        sock.curve_publickey, sock.curve_secretkey = stranger_public, stranger_secret
        sock.curve_serverkey = server_key

    assert not _welcomed(endpoint, stranger)  # CURVE, but not the cluster's key
    broker.wait_log(r"refused a bus peer from 127\.0\.0\.1: unknown_key")
    client_public, client_secret = zmq.auth.load_certificate(f"{keys}/client.key_secret")

    def member(sock):
        sock.curve_publickey, sock.curve_secretkey = client_public, client_secret
        sock.curve_serverkey = server_key

    assert _welcomed(endpoint, member)


def test_curve_without_keys_is_one_clear_line(make_cluster):
    cluster = make_cluster(security={"curve": True, "keys_dir": "/nonexistent/keys"})
    for role in ("broker", "game"):
        result = subprocess.run(
            [sys.executable, "-m", "cluster", role, "--config", str(cluster.config)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 1
        assert "cluster keys generate" in result.stderr
        assert "Traceback" not in result.stderr


def test_address_allow_list_refuses_other_addresses(make_cluster):
    cluster = make_cluster(security={"allow_from": "127.0.0.5/32"})
    broker = cluster.start("broker")
    endpoint = cluster.endpoint
    assert not _welcomed(endpoint)  # from 127.0.0.1
    broker.wait_log(r"refused a bus peer from 127\.0\.0\.1: address_not_allowed")
    port = endpoint.rsplit(":", 1)[1]
    assert _welcomed(f"tcp://127.0.0.5:0;127.0.0.1:{port}")  # from 127.0.0.5


def test_keys_generate_refuses_to_overwrite(make_cluster):
    cluster = make_cluster()
    _keys(cluster)
    again = subprocess.run(
        [sys.executable, "-m", "cluster", "keys", "generate", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=30, cwd=cluster.dir,
    )  # fmt: skip
    assert again.returncode == 1
    assert "--force" in again.stderr


# -- draining -----------------------------------------------------------------------------------


def test_draining_game_worker_takes_no_new_sessions_and_exits_0(make_cluster):
    cluster = make_cluster()
    broker = cluster.start("broker")
    leaving = cluster.start("game")
    cluster.start("gateway")

    async def scenario():
        old = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await old.login(1)).status == GameLoginStatus.OK
        staying = cluster.start("game")  # joins: takes work within one heartbeat
        leaving.send_signal(signal.SIGTERM)
        assert await old.wait_closed(10)  # closed cleanly by the drain
        assert leaving.proc.wait(15) == 0
        fresh = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await fresh.login(2)).status == GameLoginStatus.OK
        return staying, await fresh.echo(2)

    staying, echoes = run(scenario())
    assert echoes == [GameResEcho(2, 0), GameResEcho(2, 1)]
    broker.wait_log(r"game game@\S+ draining")
    assert staying.proc.poll() is None


def test_draining_gateway_answers_the_login_in_flight_before_it_exits(make_cluster, backend):
    from tests.test_login import make_login_cluster

    lc = make_login_cluster(
        make_cluster,
        backend,
        "systemlink",
        auth={"link_timeout": 2.0},
        broker={"heartbeat_interval": 1.0, "heartbeat_liveness": 10},
    )
    account = lc.accounts[0]
    lc.roles["game"].send_signal(signal.SIGSTOP)  # the ACK will not come: the login waits 2 s

    async def scenario():
        login = asyncio.create_task(login_once("127.0.0.1", lc.login_port, account.no, account.key))
        # in flight: the key is pushed, and the frozen game worker will not ACK for 2 s
        await asyncio.to_thread(
            lc.roles["auth"].wait_log, rf"pushed the key of account {account.no} ", 10
        )
        lc.roles["gateway"].send_signal(signal.SIGTERM)
        reply = await login
        return reply

    try:
        reply = run(scenario())
    finally:
        lc.roles["game"].send_signal(signal.SIGCONT)
    assert reply.status == LoginStatus.NOSERVER  # answered, not dropped, by the draining gateway
    assert lc.roles["gateway"].proc.wait(15) == 0
