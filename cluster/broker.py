"""The broker: one ROUTER that every gateway and worker connects to (Majordomo-like).

State is a registry of :class:`Peer` records (identity, role, expiry, reported load) grouped
into :class:`Service` pools (``game``, ``chat``, ``auth``). The loop is: receive, dispatch by
command, send heartbeats and purge silent peers once per interval. Timing rules are two named
numbers from ``[broker]``: ``heartbeat_interval`` and ``heartbeat_liveness`` (a peer silent for
their product is evicted).

Silence is judged only on what the broker could read: a purge first drains the socket until it
is empty (and is skipped while it cannot be emptied), and when the broker's own loop stalled
(the process was stopped or starved for more than :data:`STALL_AFTER` intervals) nobody can be
called silent, so every peer gets a fresh expiry instead. Until that expiry, a peer whose
connection is found closed is not evicted as unreachable either: peers that noticed the broker's
silence reconnect under the same identity, and their old connections close meanwhile.

Routing never decodes a body: TO is routed on its destination frame; PLACE on its service frame
and its keys frame (one int64 AccountNo per new session). On the game and chat services, an
account that a live worker of the service holds (``holders``, kept per service from placements
and the workers' HOLD / FREE) goes to that worker, so all logins and key pushes of one account
meet on one worker of each service; anything else goes to the service's
least-loaded live worker. Every body that cannot be delivered goes back to its sender as
UNROUTABLE, so the sender can answer its clients instead of letting them hang. When a peer is
evicted or says BYE, every other peer is told GONE (gateways then close that worker's clients).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq

from cluster import bus, runtime
from cluster.config import Config, settings_mismatch
from cluster.security import Gatekeeper, SecurityError, secure_server
from cluster.stats import ProcessSampler, Rates

log = logging.getLogger("cluster.broker")

#: Messages handled per receive burst before timers get a turn.
BURST = 5000
#: Seconds between two of the broker's own samples.
SAMPLE_INTERVAL = 1.0
#: Queue depth per peer inside the ROUTER before sends to it fail (and are returned).
PEER_HWM = 200_000
#: Heartbeat intervals between two looks at the clock after which the broker's own loop is
#: deemed stalled (it waits at most a quarter interval per poll, so this is a wide margin).
STALL_AFTER = 1.5


@dataclass
class Peer:
    """One registered process."""

    identity: bytes
    role: str
    info: dict[str, Any]
    expiry: float
    sessions: int = 0  # load the worker last reported
    placed: int = 0  # sessions placed on it since that report

    @property
    def load(self) -> int:
        return self.sessions + self.placed

    @property
    def name(self) -> str:
        return self.identity.decode(errors="replace")


@dataclass
class Service:
    """The live workers of one service, in registration order."""

    name: str
    workers: dict[bytes, Peer] = field(default_factory=dict)

    def least_loaded(self) -> Peer | None:
        if not self.workers:
            return None
        return min(self.workers.values(), key=lambda peer: peer.load)


class Broker:
    """The routing and registry logic around one bound ROUTER socket."""

    def __init__(self, config: Config, context: zmq.Context[Any] | None = None) -> None:
        self.interval = config.broker.heartbeat_interval
        self.liveness = config.broker.heartbeat_liveness
        #: what every peer's READY must agree with (bus.settings)
        self.settings = bus.settings(config)
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.socket.setsockopt(zmq.SNDHWM, PEER_HWM)
        self.socket.setsockopt(zmq.RCVHWM, PEER_HWM)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.gatekeeper: Gatekeeper | None = None
        if config.security.curve or config.security.allow_from:
            self.gatekeeper = Gatekeeper(self.context, config)
            self.gatekeeper.start()
        secure_server(self.socket, config)
        self.socket.bind(config.broker.bind)
        self._poller = zmq.Poller()  # Socket.poll() would build a new Poller on every call
        self._poller.register(self.socket, zmq.POLLIN)
        self.peers: dict[bytes, Peer] = {}
        self.services = {name: Service(name) for name in bus.SERVICES}
        #: per BY_ACCOUNT service: accounts -> the worker holding them; and the reverse index
        self.holders: dict[str, dict[int, bytes]] = {name: {} for name in bus.BY_ACCOUNT}
        self.held: dict[bytes, set[int]] = {}
        self._unreachable: set[bytes] = set()  # peers whose connection is gone, to evict
        self.counters: Counter[str] = Counter()
        self._stop = threading.Event()
        self.identity = f"broker@{socket.gethostname()}/{os.getpid()}"
        #: This broker run: peers that re-register within the same epoch were evicted.
        self.epoch = random.getrandbits(62)
        self._sampler = ProcessSampler(self.identity, "broker", self._collect)
        self._rates = Rates()
        self._last_tick = time.monotonic()  # when the loop last looked at the clock
        self._settle_until = 0.0  # after a stall: closed connections are not judged until then

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(self) -> None:
        """Serve until :meth:`stop`. Heartbeats go out every interval even under load."""
        next_beat = time.monotonic() + self.interval
        next_sample = time.monotonic() + SAMPLE_INTERVAL
        poll_ms = max(1, int(self.interval * 1000 / 4))
        self._last_tick = time.monotonic()
        while not self._stop.is_set():
            ready = self._poller.poll(poll_ms)
            self.tick()  # a stall is noticed before anything received is acted on
            if ready:
                self._drain()
            self._evict_unreachable()
            now = self.tick()
            if now >= next_beat:
                if self._drain_all(deadline=now + self.interval):
                    self.purge(self.tick())
                self.beat()
                next_beat = now + self.interval
            if now >= next_sample:
                self.report()
                next_sample = now + SAMPLE_INTERVAL
        self.socket.close(linger=0)
        if self.gatekeeper is not None:
            self.gatekeeper.stop()

    def _drain(self) -> bool:
        """Handle at most one BURST of received messages; True when the socket ran dry."""
        recv = self.socket.recv_multipart
        for _ in range(BURST):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return True
            self.handle(frames)
        return False

    def _drain_all(self, deadline: float) -> bool:
        """Handle every message already received (until EAGAIN), so that a purge counts them
        all. False when the socket could not be emptied by `deadline` (a flood): the caller must
        not judge silence on what it has not read."""
        while not self._drain():
            if self.tick() >= deadline:
                self.counters["purge_deferred"] += 1
                return False
        return True

    def tick(self) -> float:
        """The loop's look at the clock: returns now. A gap since the previous look longer than
        STALL_AFTER intervals means this process was not running (stopped, starved): it could
        not read what peers sent meanwhile, so every peer gets a fresh expiry (and, until then,
        is not evicted for a closed connection)."""
        now = time.monotonic()
        gap, self._last_tick = now - self._last_tick, now
        if gap > self.interval * STALL_AFTER:
            self.counters["stalled"] += 1
            self._settle_until = now + self.interval * self.liveness
            for peer in self.peers.values():
                peer.expiry = self._settle_until
            log.warning("broker loop stalled for %.1fs; peer expiries extended", gap)
        return now

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, frames: list[bytes]) -> None:
        """Dispatch one received message (``frames[0]`` is the sender's identity)."""
        if len(frames) < 2:
            self.counters["malformed"] += 1
            return
        identity, command = frames[0], frames[1]
        peer = self.peers.get(identity)
        if command == bus.READY:
            self._ready(identity, frames[2:])
            return
        if peer is None:
            # Unknown sender: we restarted, or evicted it. Have it register again, and hand back
            # anything it wanted delivered so it can answer its clients.
            self.counters["unknown_peer"] += 1
            if command == bus.TO and len(frames) >= 3:
                self._send(identity, [bus.UNROUTABLE, frames[2], *frames[3:]])
            elif command == bus.PLACE and len(frames) >= 4:
                self._send(identity, [bus.UNROUTABLE, frames[2], *frames[4:]])
            if command != bus.DISCONNECT:
                self._send(identity, [bus.RESET])
            return
        peer.expiry = time.monotonic() + self.interval * self.liveness
        if command == bus.TO:
            self._route(peer, frames)
        elif command == bus.PLACE:
            self._place(peer, frames)
        elif command == bus.HEARTBEAT:
            if len(frames) >= 3 and len(frames[2]) == 4:
                peer.sessions, peer.placed = bus.unpack_load(frames[2]), 0
        elif command == bus.STATS:
            if len(frames) >= 3:
                self._to_monitors([bus.STATS, identity, frames[2]])
        elif command == bus.HOLD or command == bus.FREE:
            self._holding(peer, command == bus.HOLD, frames)
        elif command == bus.DISCONNECT:
            self.evict(peer, "disconnected")
        elif command == bus.DRAIN:
            self.drain(peer)
        else:
            self.counters["malformed"] += 1
            log.warning("unknown command %r from %s", command[:16], peer.name)

    def _ready(self, identity: bytes, args: list[bytes]) -> None:
        try:
            role = args[0].decode()
            info = bus.unpack_info(args[1]) if len(args) > 1 else {}
        except (IndexError, UnicodeDecodeError, ValueError):
            role, info = "", {}
        if role not in bus.ROLES:
            self.counters["malformed"] += 1
            log.warning("READY with bad role %r from %r", args[:1], identity[:32])
            return
        theirs = info.get("settings")  # absent: a tool or test peer without a config
        if theirs is not None:
            if isinstance(theirs, dict):
                mismatch = settings_mismatch(self.settings, theirs)
            else:
                mismatch = "READY's settings are not a map"
            if mismatch:
                self._refuse(identity, role, info, mismatch)
                return
        old = self.peers.get(identity)
        if old is not None and old.role != role:
            self.evict(old, "re-registered with another role")
        peer = Peer(identity, role, info, time.monotonic() + self.interval * self.liveness)
        if old is not None and old.role == role:
            peer.sessions = old.sessions
        self.peers[identity] = peer
        if role in self.services:
            self.services[role].workers[identity] = peer
        if old is None:
            log.info("%s registered: %s", role, peer.name)
        welcome = {"heartbeat_interval": self.interval, "epoch": self.epoch,
                   "known": old is not None}  # fmt: skip
        self._send(identity, [bus.WELCOME, bus.pack_info(welcome)])
        if role in bus.ROSTER_ROLES and old is None:
            self.announce_roster()
        else:
            self._send(identity, [bus.ROSTER, self._roster()])

    def _refuse(self, identity: bytes, role: str, info: dict[str, Any], reason: str) -> None:
        """Refuse a READY whose settings differ from ours. The peer stops asking (and exits),
        so this is logged once per peer process; a peer we knew under that identity is evicted."""
        self.counters["refused_settings"] += 1
        old = self.peers.get(identity)
        if old is not None:
            self.evict(old, "re-registered with other settings")
        log.warning("refused %s %s (host %s, pid %s): %s", role, identity[:32],
                    info.get("host", "?"), info.get("pid", "?"), reason)  # fmt: skip
        self._send(identity, [bus.REFUSED, reason.encode()])

    def _roster(self) -> bytes:
        roster: dict[str, Any] = {role: [] for role in bus.ROSTER_ROLES}
        data: dict[str, str] = {}
        for peer in self.peers.values():
            draining = peer.role in self.services and peer.identity not in (
                self.services[peer.role].workers
            )
            if peer.role in roster and not draining:
                roster[peer.role].append(peer.name)
                endpoint = peer.info.get("data")
                if isinstance(endpoint, str) and endpoint:
                    data[peer.name] = endpoint  # a gateway's data port (cluster.datalink)
        roster["data"] = data
        return bus.pack_info(roster)

    def announce_roster(self) -> None:
        """Tell every peer which workers and monitors are live (auth workers and CLIs need it)."""
        roster = self._roster()
        for identity in list(self.peers):
            self._send(identity, [bus.ROSTER, roster])

    def _holding(self, peer: Peer, hold: bool, frames: list[bytes]) -> None:
        holders = self.holders.get(peer.role)
        try:
            accounts = bus.unpack_keys(frames[2])
        except (IndexError, ValueError):
            accounts = ()
            holders = None
        if holders is None:  # a bad keys frame, or a peer whose service is not placed by account
            self.counters["malformed"] += 1
            return
        held = self.held.setdefault(peer.identity, set())
        for account in accounts:
            if hold:
                previous = holders.get(account)
                if previous is not None and previous != peer.identity:
                    self.held.get(previous, set()).discard(account)
                holders[account] = peer.identity
                held.add(account)
            elif holders.get(account) == peer.identity:
                del holders[account]
                held.discard(account)

    def _route(self, sender: Peer, frames: list[bytes]) -> None:
        if len(frames) < 4:
            self.counters["malformed"] += 1
            return
        dest = frames[2]
        if dest in self.peers and self._send(dest, [bus.FROM, sender.identity, *frames[3:]]):
            self.counters["routed"] += 1
            return
        self.counters["unroutable"] += 1
        self._send(sender.identity, [bus.UNROUTABLE, dest, *frames[3:]])

    def _place(self, sender: Peer, frames: list[bytes]) -> None:
        if len(frames) < 5:
            self.counters["malformed"] += 1
            return
        service_name, bodies = frames[2], frames[4:]
        try:
            keys = bus.unpack_keys(frames[3])
            service = self.services[service_name.decode()]
        except (ValueError, KeyError, UnicodeDecodeError):
            keys, service = (), None
        if service is None or len(keys) != len(bodies):
            self.counters["malformed"] += 1
            self._send(sender.identity, [bus.UNROUTABLE, service_name, *bodies])
            return
        undelivered = self._place_on(service, sender, list(zip(keys, bodies, strict=True)))
        if undelivered:
            self.counters["unplaceable"] += len(undelivered)
            self._send(sender.identity, [bus.UNROUTABLE, service_name, *undelivered])

    def _place_on(self, service: Service, sender: Peer,
                  entries: list[tuple[int, bytes]]) -> list[bytes]:  # fmt: skip
        """Deliver each ``(key, body)`` to its worker; returns the bodies nobody took. A worker
        found unreachable while sending (it died and we have not evicted it yet) is taken out of
        placement and its share goes to the others, so a worker's death costs no login."""
        holders = self.holders.get(service.name)  # None: least-loaded placement only
        given_back: list[bytes] = []
        for _attempt in range(3):
            batches: dict[bytes, list[tuple[int, bytes]]] = {}
            for entry in entries:
                key = entry[0]
                worker = None
                if holders is not None:
                    holder = holders.get(key)
                    worker = service.workers.get(holder) if holder is not None else None
                if worker is None:
                    worker = service.least_loaded()
                    if worker is None:
                        return given_back + [body for _, body in entries]
                    if holders is not None:
                        holders[key] = worker.identity
                        self.held.setdefault(worker.identity, set()).add(key)
                worker.placed += 1
                batches.setdefault(worker.identity, []).append(entry)
            entries = []
            for identity, group in batches.items():
                if self._send(identity, [bus.FROM, sender.identity, *(b for _, b in group)]):
                    self.counters["placed"] += len(group)
                elif identity in self._unreachable:
                    entries += group  # placed again on the next attempt
                else:
                    given_back += [body for _, body in group]  # its queue is full
            if not entries:
                return given_back
        return given_back + [body for _, body in entries]

    def _send(self, identity: bytes, frames: list[bytes]) -> bool:
        """Send to one peer; False when it cannot take it. A peer whose connection is gone is
        evicted once the messages already received are handled (its BYE may be among them)."""
        try:
            self.socket.send_multipart([identity, *frames], zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.counters["peer_queue_full"] += 1
            return False
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self.counters["peer_unreachable"] += 1
            if time.monotonic() < self._settle_until:
                return False  # replaced during our stall, most likely: its expiry judges it
            peer = self.peers.get(identity)
            if peer is not None:
                self._unplace(peer)  # nothing new goes there meanwhile
                self._unreachable.add(identity)
            return False

    def _evict_unreachable(self) -> None:
        while self._unreachable:
            self._drain()  # what they said before their connection closed comes first
            gone, self._unreachable = self._unreachable, set()
            for identity in gone:
                peer = self.peers.get(identity)
                if peer is not None:
                    self.evict(peer, "unreachable")

    # -- heartbeats and eviction ------------------------------------------------------------------

    def _to_monitors(self, frames: list[bytes]) -> None:
        for peer in list(self.peers.values()):
            if peer.role == "monitor":
                self._send(peer.identity, frames)

    def _collect(self) -> dict[str, Any]:
        rates = self._rates.update(
            {"routed": self.counters["routed"], "placed": self.counters["placed"]}
        )
        return {
            "peers": len(self.peers),
            "routed_tps": rates["routed"],
            "placed_tps": rates["placed"],
            "holders": sum(len(holders) for holders in self.holders.values()),
        }

    def report(self) -> None:
        """Send this broker's own 1-second sample to the monitors."""
        sample = bus.pack_info(self._sampler.sample())
        self._to_monitors([bus.STATS, self.identity.encode(), sample])

    def beat(self) -> None:
        for identity in list(self.peers):
            self._send(identity, [bus.HEARTBEAT])

    def purge(self, now: float) -> None:
        for peer in [p for p in self.peers.values() if p.expiry < now]:
            self.evict(peer, "silent")

    def _unplace(self, peer: Peer) -> None:
        """Take a worker out of placement: its pool and the accounts it holds."""
        if peer.role in self.services:
            self.services[peer.role].workers.pop(peer.identity, None)
        holders = self.holders.get(peer.role, {})
        for account in self.held.pop(peer.identity, ()):
            if holders.get(account) == peer.identity:
                del holders[account]

    def drain(self, peer: Peer) -> None:
        """A worker that is stopping: no new placements, but its sessions are still routed."""
        if peer.role not in self.services or peer.identity not in self.services[peer.role].workers:
            return
        self._unplace(peer)
        self.counters["drained"] += 1
        log.info("%s %s draining", peer.role, peer.name)
        self.announce_roster()

    def evict(self, peer: Peer, why: str) -> None:
        """Forget a peer and tell every other peer it is GONE."""
        if self.peers.pop(peer.identity, None) is None:
            return
        self._unplace(peer)
        self.counters[f"evicted_{why}"] += 1
        log.info("%s %s gone (%s)", peer.role, peer.name, why)
        for identity in list(self.peers):
            self._send(identity, [bus.GONE, peer.identity, peer.role.encode()])
        if peer.role in bus.ROSTER_ROLES:
            self.announce_roster()


def serve(config: Config) -> int:
    """Run a broker in the foreground until SIGINT/SIGTERM; returns the exit code."""
    try:
        broker = Broker(config)
    except zmq.ZMQError as exc:
        log.error("cannot bind broker.bind %s: %s", config.broker.bind, exc)
        return 1
    except SecurityError as exc:
        log.error("%s", exc)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: broker.stop())
    runtime.announce_ready(role="broker", bind=config.broker.bind)
    broker.run()
    log.info("broker stopped; counters: %s", dict(broker.counters))
    return 0
