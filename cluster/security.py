"""Securing the bus: CurveZMQ keys and the broker's address allow-list (``[security]``).

With ``curve = true`` the broker is a CURVE server and every other process a CURVE client: the
traffic is encrypted, and the broker admits only clients whose public key is the cluster's
(``keys_dir/client.key``) or is listed in ``keys_dir/authorized/``. ``allow_from`` (addresses or
networks, comma separated) restricts which addresses may connect at all, with or without CURVE.
Both checks run in the broker's ZAP handler; a refused peer is logged and counted, never served.

``cluster keys generate`` writes the two key pairs into ``keys_dir``: ``broker.key`` /
``broker.key_secret`` (for the broker host) and ``client.key`` / ``client.key_secret`` (for every
other host). Copy the directory to every host; keep the ``*_secret`` files private.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from cluster.config import Config

log = logging.getLogger("cluster.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"cluster"


class SecurityError(RuntimeError):
    """Keys missing or unreadable, or CURVE unavailable in this libzmq."""


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server: bytes  # the broker's public key


def networks(allow_from: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of an ``allow_from`` string; ValueError naming a bad entry."""
    out = []
    for entry in (e.strip() for e in allow_from.split(",")):
        if entry:
            out.append(ipaddress.ip_network(entry, strict=False))
    return out


def address_allowed(nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
                    address: str) -> bool:  # fmt: skip
    """Whether `address` is in one of `nets` (an empty list allows every address)."""
    if not nets:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in nets)


def generate_keys(directory: Path, force: bool = False) -> list[Path]:
    """Create the broker and client key pairs in `directory`; returns the files written."""
    if not zmq.has("curve"):
        raise SecurityError("this libzmq was built without CURVE support")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("broker", "client"):
        public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
        if (public.exists() or secret.exists()) and not force:
            raise SecurityError(f"{public} already exists (use --force to replace the keys)")
        zmq.auth.create_certificates(str(directory), name)
        secret.chmod(0o600)
        written += [public, secret]
    (directory / "authorized").mkdir(exist_ok=True)
    return written


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise SecurityError(f"security.keys_dir: {path} not found (run 'cluster keys generate')")
    try:
        public, private = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"{path}: unreadable key file: {exc}") from None
    if secret and private is None:
        raise SecurityError(f"{path}: holds no secret key")
    return public, private


def client_keys(config: Config) -> ClientKeys | None:
    """What a bus client needs, or None when CURVE is off."""
    if not config.security.curve:
        return None
    keys = Path(config.security.keys_dir)
    public, secret = _load(keys / "client.key_secret", secret=True)
    server, _ = _load(keys / "broker.key", secret=False)
    assert secret is not None
    return ClientKeys(public, secret, server)


def secure_client(socket: zmq.Socket[Any], keys: ClientKeys | None) -> None:
    """Make `socket` a CURVE client of the broker (before connect)."""
    if keys is not None:
        socket.curve_publickey = keys.public
        socket.curve_secretkey = keys.secret
        socket.curve_serverkey = keys.server


class Gatekeeper:
    """The broker's ZAP handler: admits a peer when its address is allowed and, with CURVE, its
    public key is authorized. Runs on its own thread; ``refused`` counts refusals by reason."""

    def __init__(self, context: zmq.Context[Any], config: Config) -> None:
        security = config.security
        self.networks = networks(security.allow_from)
        self.curve = security.curve
        self.authorized: set[bytes] = set()
        if self.curve:
            keys = Path(security.keys_dir)
            self.authorized.add(_load(keys / "client.key", secret=False)[0])
            authorized = keys / "authorized"
            if authorized.is_dir():
                for path in sorted(authorized.glob("*.key")):
                    self.authorized.add(_load(path, secret=False)[0])
        self.refused: Counter[str] = Counter()
        self._socket = context.socket(zmq.REP)
        self._socket.linger = 0
        self._socket.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close(linger=0)

    def _allowed_address(self, address: str) -> bool:
        return address_allowed(self.networks, address)

    def decide(self, address: str, mechanism: bytes, credentials: list[bytes]) -> str | None:
        """None to admit, else the refusal reason."""
        if not self._allowed_address(address):
            return "address_not_allowed"
        if self.curve:
            if mechanism != b"CURVE" or not credentials:
                return "no_curve"
            if z85.encode(credentials[0]) not in self.authorized:  # ZAP gives the raw 32 bytes
                return "unknown_key"
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(200):
                continue
            request = self._socket.recv_multipart()
            if len(request) < 6:
                continue
            version, request_id, _, address, _, mechanism = request[:6]
            why = self.decide(address.decode(errors="replace"), mechanism, request[6:])
            if why is None:
                reply = [version, request_id, b"200", b"OK", b"peer", b""]
            else:
                self.refused[why] += 1
                log.warning("refused a bus peer from %s: %s", address.decode(errors="replace"),
                            why)  # fmt: skip
                reply = [version, request_id, b"400", why.encode(), b"", b""]
            self._socket.send_multipart(reply)


def secure_server(socket: zmq.Socket[Any], config: Config) -> None:
    """Make the broker's socket a CURVE server and route its handshakes through ZAP (before
    bind). Raises SecurityError when the broker's keys are missing."""
    security = config.security
    if security.curve:
        public, secret = _load(Path(security.keys_dir) / "broker.key_secret", secret=True)
        socket.curve_server = True
        socket.curve_publickey = public
        socket.curve_secretkey = secret
    if security.curve or security.allow_from:
        socket.zap_domain = ZAP_DOMAIN
