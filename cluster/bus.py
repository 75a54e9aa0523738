"""The bus envelope: the closed set of commands peers and the broker exchange over ZeroMQ.

Every process except the broker holds one DEALER socket connected to the broker's ROUTER. A
message is a list of frames whose first frame is the command. The broker reads only the command
and the small routing frames that follow it; the *bodies* (msgpack lists of session items) pass
through it untouched.

Peer -> broker (the ROUTER prepends the peer's identity):

==========  ==========================================  =========================================
command     frames after it                             meaning
==========  ==========================================  =========================================
READY       role, info (msgpack map)                    register (role: gateway, game, auth, ...);
                                                        info["settings"]: see :func:`settings`
HB          [sessions (u32 LE)]                         heartbeat; workers report their load
BYE         -                                           leaving cleanly
DRAIN       -                                           worker: place nothing new on me (I am
                                                        finishing my sessions and will say BYE)
TO          dest identity, body...                      deliver bodies to one peer
PLACE       service, keys (n x i64 LE), body x n        place n new sessions on the service's
                                                        workers (key: AccountNo; see below)
HOLD        keys (n x i64 LE)                           game/chat worker: I now hold these accounts
FREE        keys (n x i64 LE)                           game/chat worker: I no longer hold them
STATS       sample (msgpack map, see cluster.stats)     this process's 1-second sample
==========  ==========================================  =========================================

Placement on the ``game`` and ``chat`` services is by account (:data:`BY_ACCOUNT`): an account
that a live worker of the service holds (a pushed systemlink key or a session) is placed on that
worker, so every login and every key push of one account meets its state on one worker,
whichever gateway or auth worker sent it. Other accounts go to the least-loaded worker. ``auth``
placement is least-loaded only.

Broker -> peer:

===========  ====================================  ============================================
WELCOME      info (msgpack map)                    READY accepted: {"heartbeat_interval",
                                                   "epoch" (this broker run), "known" (whether
                                                   it had you registered already)}
REFUSED      reason (UTF-8)                        READY refused: the peer's "settings" differ
                                                   from the broker's (the reason names the keys)
HB           -                                     heartbeat
FROM         source identity, body...              bodies another peer sent with TO or PLACE
UNROUTABLE   dest identity or service, body...     bodies that could not be delivered, returned
GONE         identity, role                        a peer left or was evicted
RESET        -                                     the broker does not know you: send READY
ROSTER       roster (msgpack map)                  live workers and monitors, sent after WELCOME
                                                   and whenever it changes: {"game": [id, ...],
                                                   "chat": [...], "auth": [...], "monitor": [...]}
STATS        source identity, sample               (monitors only) a process's 1-second sample
===========  ====================================  ============================================

A *body* is a msgpack array of *session items*, each ``[session_id, type, *fields]``: ``type`` is
a client message type (docs/protocol.md) with its fields in wire order, a server-link type from
:class:`LinkType` (whose session id is its Parameter), or a negative control type from
:class:`Control`. :func:`parse_items` checks a body once, on receipt, into :class:`Item` records
(every field's Python type and the item's arity from :data:`ITEM_FIELDS`); a malformed item is
counted and skipped, never handed on.

The data link (:mod:`cluster.datalink`): a game worker also connects a DEALER straight to every
gateway's data port (the gateway's READY info names it as ``"data"``; the ROSTER passes it on), so
the traffic of bound sessions does not pass through the broker:

==========  ===============================  ===============================================
command     frames after it                  meaning
==========  ===============================  ===============================================
HELLO       -                                worker -> gateway, first: I am here
HB          -                                either way, every heartbeat interval
DATA        body...                          session items, as FROM / TO carry them
==========  ===============================  ===============================================
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import msgpack

from cluster.config import Config, agreed_settings
from cluster.messages import (
    SPECS,
    ChatReqLogin,
    GameReqEcho,
    GameReqLogin,
    LoginReqLogin,
    MessageSpec,
)

READY = b"READY"
HEARTBEAT = b"HB"
DISCONNECT = b"BYE"
DRAIN = b"DRAIN"
TO = b"TO"
PLACE = b"PLACE"
WELCOME = b"WELCOME"
REFUSED = b"REFUSED"
FROM = b"FROM"
UNROUTABLE = b"UNROUTABLE"
GONE = b"GONE"
RESET = b"RESET"
HOLD = b"HOLD"
FREE = b"FREE"
ROSTER = b"ROSTER"
STATS = b"STATS"
HELLO = b"HELLO"
DATA = b"DATA"
#: Not sent on the wire: what a BusLink tells its owner when the broker (same run, see WELCOME's
#: epoch) no longer knew it, i.e. it was evicted and every other peer was told it is GONE.
EVICTED = b"EVICTED"
#: Not sent on the wire: a BusLink was welcomed by the broker (``[REGISTERED, fresh]``, fresh is
#: b"1" when that broker run did not know us yet: a restarted broker, whose state must be rebuilt).
REGISTERED = b"REGISTERED"

#: Roles a peer may register with. Workers of SERVICES are placement targets.
ROLES = ("gateway", "game", "chat", "auth", "monitor", "web", "cli")
#: This bus protocol's version: raise it with any change old peers cannot follow. READY carries it
#: in its settings, so a peer of another release is refused at registration, not misread later.
VERSION = 1


def settings(config: Config) -> dict[str, Any]:
    """What READY's ``info["settings"]`` carries: the bus version and `config`'s values of the
    keys every process of one cluster must share (:data:`cluster.config.AGREED_KEYS`). The
    broker compares them with its own (:func:`cluster.config.settings_mismatch`)."""
    return {"bus.version": VERSION, **agreed_settings(config)}


SERVICES = ("game", "chat", "auth")
#: Services whose sessions are placed by account: an account held by a live worker goes to it.
BY_ACCOUNT = ("game", "chat")
#: Roles listed in ROSTER (gateways with their data port, under "data").
ROSTER_ROLES = ("game", "chat", "auth", "monitor", "gateway")

_LOAD = struct.Struct("<I")

#: Client requests a gateway counts in a session's ``max_inflight`` when it forwards them as
#: decoded items (each is answered: a worker that handles one as an item says so in its ANSWER).
#: Relayed packets are all counted, whatever their type (see Control.ANSWER).
COUNTED = frozenset({GameReqEcho.TYPE, GameReqLogin.TYPE, LoginReqLogin.TYPE, ChatReqLogin.TYPE})


class Control(IntEnum):
    """Negative item types: bus-internal events about a session."""

    #: ``[sid, CLOSE, reason]``. Gateway -> worker: the client is gone. Worker -> gateway:
    #: close the client after the replies already queued for it (reason is counted).
    CLOSE = -1
    #: ``[parameter, CANCEL_KEY, account_no, parameter]``, auth -> game: the login that pushed
    #: this key gave up waiting for the ACK; drop the pending key if it is still that push's.
    CANCEL_KEY = -2
    #: ``[0, STATUS]`` cli -> monitor: what do you know? Answer: ``[0, STATUS, snapshot]`` with
    #: snapshot ``{"processes": [sample + "heartbeat_age_s", ...], "gone": [...]}``.
    STATUS = -3
    #: ``[sid, ACCEPTED]`` worker -> gateway: this new session is mine (sent as soon as a worker
    #: takes a login, so the gateway knows where every request in flight is, and a worker's death
    #: is answered for exactly its own sessions).
    ACCEPTED = -4
    #: ``[parameter, IN_GAME, account_no, parameter]`` auth -> game (placed by account): is this
    #: account's session really here? Answer ``[parameter, IN_GAME, account_no, 0 | 1]``. Asked
    #: when the status row says "in game", since the row may be a moment behind.
    IN_GAME = -5
    #: ``[sid, PACKETS, packets]`` gateway -> game worker: whole client packets of a session in
    #: game, exactly as the client sent them (still masked). The worker decodes and checks them
    #: (a violation is answered with CLOSE naming it), so the gateway only walks their headers.
    PACKETS = -6
    #: ``[sid, ANSWER, packets, consumed, count]`` game worker -> gateway: `count` encoded reply
    #: packets for the client, to be written as they are, and how many of the session's PACKETS
    #: packets the worker has now handled (what the gateway's ``max_inflight`` counts).
    ANSWER = -7
    #: ``[sid, LOGIN_RESULT, account_no, status, user_id, nickname]`` auth worker -> gateway: the
    #: answer to a login-port request. The gateway makes the client's RES_LOGIN of it with its own
    #: public game address (only the gateway knows where its clients reach it), then closes.
    LOGIN_RESULT = -8
    #: ``[0, DELIVER, packets, count, sids]`` worker -> gateway: write `packets` (`count` whole
    #: encoded packets) to every session listed in `sids` (little-endian int64 session ids of that
    #: gateway). The chat messages of one frame around a sector are encoded once and written to
    #: all their receivers on a gateway this way.
    DELIVER = -9
    #: ``[0, CAST, cells, packets]`` chat worker -> every other chat worker: the chat messages
    #: (encoded RES_MESSAGEs) said on the sender in one frame: `cells` packs one little-endian
    #: ``(cell, count, length)`` int32 triple per sector (cell = x * 100 + y), `packets` holds
    #: their packets in that order; each receiver DELIVERs them to its own sessions around.
    CAST = -10


class LinkType(IntEnum):
    """The original's server-link messages (docs/protocol.md), carried as session items."""

    #: ``[parameter, 10002, account_no, session_key, parameter]``, auth -> game
    REQ_NEW_CLIENT_LOGIN = 10002
    #: ``[parameter, 10003, account_no, parameter]``, game -> auth
    RES_NEW_CLIENT_LOGIN = 10003


#: One checked session item, ``(sid, type, fields)``: ``fields`` in wire order (for link and
#: control types, as their docstrings above list them after the type). A plain tuple (a
#: NamedTuple costs twice as much to make, on every item of the hot path): call sites unpack it,
#: ``for sid, mtype, fields in items``.
Item = tuple[int, int, list[Any]]


def _fields_of(spec: MessageSpec) -> tuple[type, ...]:
    kinds: list[type] = []
    for index, code in enumerate(re.findall(r"\d*[a-zA-Z]", spec.body.format[1:])):
        kinds.append(bytes if code.endswith("s") else int)
        for converted, _, from_wire in spec.converters:
            if converted == index and from_wire is not bytes:
                kinds[-1] = str
    if spec.tail:
        kinds[-1] = bytes  # the record carries the tail's bytes, not their count
    return tuple(kinds)


#: The Python type of every field of every item type the bus carries; None: any fields (a map).
ITEM_FIELDS: dict[int, tuple[type, ...] | None] = {
    **{mtype: _fields_of(spec) for mtype, spec in SPECS.items()},
    Control.CLOSE: (str,),
    Control.CANCEL_KEY: (int, int),
    Control.STATUS: None,
    Control.ACCEPTED: (),
    Control.IN_GAME: (int, int),
    Control.PACKETS: (bytes,),
    Control.ANSWER: (bytes, int, int),
    Control.LOGIN_RESULT: (int, int, str, str),
    Control.DELIVER: (bytes, int, bytes),
    Control.CAST: (bytes, bytes),
    LinkType.REQ_NEW_CLIENT_LOGIN: (int, bytes, int),
    LinkType.RES_NEW_CLIENT_LOGIN: (int, int),
}


def _maker(kinds: tuple[type, ...] | None) -> Callable[[list[Any]], Item | None]:
    """The Item of one raw item of a given type, or None when its session id, type, arity or a
    field's Python type is wrong. Built once per item type as one flat expression: this runs for
    every item on the hot path."""
    terms = ["type(e[0]) is int", "type(e[1]) is int"]
    if kinds is not None:
        names = {int: "int", bytes: "bytes", str: "str"}
        terms.insert(0, f"len(e) == {len(kinds) + 2}")
        terms += [f"type(e[{i + 2}]) is {names[kind]}" for i, kind in enumerate(kinds)]
    source = f"lambda e: (e[0], e[1], e[2:]) if {' and '.join(terms)} else None"
    return eval(source)  # type: ignore[no-any-return]


_MAKERS = {mtype: _maker(kinds) for mtype, kinds in ITEM_FIELDS.items()}
#: For a receiver that encodes client messages itself (the gateway): their fields are checked
#: by the encoding (a reply that cannot be encoded is counted and dropped there), so only the
#: session id and the type are checked here; control and link items are checked in full.
_ENCODED_MAKERS = {**_MAKERS, **{mtype: _maker(None) for mtype in SPECS}}


def parse_items(frame: bytes, encoded: bool = False) -> tuple[list[Item], int]:
    """The checked items of one body frame, and how many items (or 1 for the whole frame) were
    malformed and left out. Never raises. `encoded`: the client-message items will go through
    the codec's encoder, which checks their fields (see ``_ENCODED_MAKERS``)."""
    try:
        raw = msgpack.unpackb(frame, raw=False)
    except Exception:
        return [], 1
    if type(raw) is not list:
        return [], 1
    items: list[Item] = []
    append = items.append
    makers = _ENCODED_MAKERS if encoded else _MAKERS
    bad = 0
    for entry in raw:
        try:
            item = makers[entry[1]](entry) if type(entry) is list else None
        except (KeyError, IndexError, TypeError):  # unknown type, too short, unhashable type
            item = None
        if item is None:
            bad += 1
        else:
            append(item)
    return items, bad


_packer = msgpack.Packer(use_bin_type=True)


def pack_body(items: list[Any]) -> bytes:
    """One body frame for a list of session items."""
    return _packer.pack(items)


def unpack_body(frame: bytes) -> list[Any]:
    """The session items of one body frame. Raises ValueError on a malformed frame."""
    items = msgpack.unpackb(frame, raw=False)
    if not isinstance(items, list):
        raise ValueError("body is not an array")
    return items


def pack_info(info: dict[str, Any]) -> bytes:
    return _packer.pack(info)


def unpack_info(frame: bytes) -> dict[str, Any]:
    info = msgpack.unpackb(frame, raw=False)
    if not isinstance(info, dict):
        raise ValueError("info is not a map")
    return info


def pack_keys(keys: list[int]) -> bytes:
    """The routing frame of PLACE: one little-endian int64 per session."""
    return struct.pack(f"<{len(keys)}q", *keys)


def unpack_keys(frame: bytes) -> tuple[int, ...]:
    if len(frame) % 8:
        raise ValueError("keys frame is not a whole number of int64")
    return struct.unpack(f"<{len(frame) // 8}q", frame)


def pack_load(sessions: int) -> bytes:
    return _LOAD.pack(min(sessions, 0xFFFFFFFF))


def unpack_load(frame: bytes) -> int:
    return _LOAD.unpack(frame)[0]  # type: ignore[no-any-return]
