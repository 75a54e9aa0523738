"""Every client message of PROTOCOL.md as a typed, immutable record, with its wire layout.

A message is a ``NamedTuple`` whose class attribute ``TYPE`` is its uint16 message type; its
fields are in wire order (the leading type is not a field). :data:`SPECS` maps each type to a
:class:`MessageSpec` that packs and unpacks the payload; the codec (:mod:`cluster.codec`) is the
only user of the layouts, everything else handles the records.

Text fields (``WCHAR name[N]``) are ``str`` here and UTF-16LE, NUL-padded on the wire; session keys
are exactly 64 raw ``bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

SESSION_KEY_SIZE = 64
GAME_VERSION = 1


class LoginStatus(IntEnum):
    """CS_LOGIN_RES_LOGIN Status (PROTOCOL.md). NONE (-1) is internal and never sent."""

    NONE = -1
    FAIL = 0
    OK = 1
    GAME = 2
    ACCOUNT_MISS = 3
    SESSION_MISS = 4
    STATUS_MISS = 5
    NOSERVER = 6


class GameLoginStatus(IntEnum):
    """CS_GAME_RES_LOGIN Status (PROTOCOL.md)."""

    FAIL = 0
    OK = 1
    NOCHARACTER = 2
    VERSION_MISS = 3


class LoginReqLogin(NamedTuple):
    """101 CS_LOGIN_REQ_LOGIN, client -> login port."""

    account_no: int
    session_key: bytes
    TYPE = 101


class LoginResLogin(NamedTuple):
    """102 CS_LOGIN_RES_LOGIN, login port -> client (then the server closes)."""

    account_no: int
    status: int
    user_id: str
    nickname: str
    game_server_ip: str
    game_server_port: int
    chat_server_ip: str
    chat_server_port: int
    TYPE = 102


class GameReqLogin(NamedTuple):
    """1001 CS_GAME_REQ_LOGIN, client -> game port; the only message allowed in AUTH mode."""

    account_no: int
    session_key: bytes
    version: int
    TYPE = 1001


class GameResLogin(NamedTuple):
    """1002 CS_GAME_RES_LOGIN, game port -> client."""

    status: int
    account_no: int
    TYPE = 1002


class GameReqEcho(NamedTuple):
    """5000 CS_GAME_REQ_ECHO, client -> game port (GAME mode)."""

    account_no: int
    send_tick: int
    TYPE = 5000


class GameResEcho(NamedTuple):
    """5001 CS_GAME_RES_ECHO, game port -> client: the request's fields, unchanged."""

    account_no: int
    send_tick: int
    TYPE = 5001


class GameReqHeartbeat(NamedTuple):
    """5002 CS_GAME_REQ_HEARTBEAT, client -> game port (GAME mode): refreshes the receive time."""

    TYPE = 5002


Message = Any  # any of the NamedTuple records above


def _text(size_chars: int) -> tuple[Callable[[str], bytes], Callable[[bytes], str]]:
    limit = size_chars * 2

    def to_wire(value: str) -> bytes:
        raw = value.encode("utf-16-le")
        if len(raw) > limit:
            raise ValueError(f"text {value!r} is longer than {size_chars} UTF-16 units")
        return raw

    def from_wire(raw: bytes) -> str:
        text = raw.decode("utf-16-le", errors="replace")
        return text.split("\x00", 1)[0]

    return to_wire, from_wire


def _key_to_wire(value: bytes) -> bytes:
    if len(value) != SESSION_KEY_SIZE:
        raise ValueError(f"session key must be {SESSION_KEY_SIZE} bytes, got {len(value)}")
    return value


@dataclass(frozen=True)
class MessageSpec:
    """The wire layout of one message type.

    ``body`` packs the fields after the uint16 type; ``size`` is the whole payload (type
    included), which must match exactly on receive. ``converters`` maps a field index to a
    ``(to_wire, from_wire)`` pair for fields whose Python form differs from the struct form."""

    cls: type
    body: struct.Struct
    converters: tuple[tuple[int, Callable[[Any], Any], Callable[[Any], Any]], ...] = ()
    type: int = field(init=False)
    size: int = field(init=False)
    whole: struct.Struct = field(init=False)  # the type and the body in one layout

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", self.cls.TYPE)  # type: ignore[attr-defined]
        object.__setattr__(self, "size", 2 + self.body.size)
        object.__setattr__(self, "whole", struct.Struct("<H" + self.body.format[1:]))

    @property
    def name(self) -> str:
        return self.cls.__name__

    def pack(self, fields: Iterable[Any]) -> bytes:
        """The plain payload (type included) for `fields`. Raises ValueError/struct.error."""
        if self.converters:
            fields = list(fields)
            for index, to_wire, _ in self.converters:
                fields[index] = to_wire(fields[index])
        return self.whole.pack(self.type, *fields)

    def unpack(self, plain: bytes) -> Message:
        """The record for a plain payload whose type and size were already checked."""
        return self.cls._make(self.unpack_fields(plain))  # type: ignore[attr-defined]

    def unpack_fields(self, plain: bytes) -> tuple[Any, ...]:
        """The fields, in wire order, of a plain payload whose type and size were checked."""
        values = self.body.unpack_from(plain, 2)
        if self.converters:
            converted = list(values)
            for index, _, from_wire in self.converters:
                converted[index] = from_wire(converted[index])
            return tuple(converted)
        return values


_KEY = (_key_to_wire, bytes)

SPECS: dict[int, MessageSpec] = {
    spec.type: spec
    for spec in (
        MessageSpec(LoginReqLogin, struct.Struct("<q64s"), ((1, *_KEY),)),
        MessageSpec(
            LoginResLogin,
            struct.Struct("<qB40s40s32sH32sH"),
            ((2, *_text(20)), (3, *_text(20)), (4, *_text(16)), (6, *_text(16))),
        ),
        MessageSpec(GameReqLogin, struct.Struct("<q64si"), ((1, *_KEY),)),
        MessageSpec(GameResLogin, struct.Struct("<Bq")),
        MessageSpec(GameReqEcho, struct.Struct("<qq")),
        MessageSpec(GameResEcho, struct.Struct("<qq")),
        MessageSpec(GameReqHeartbeat, struct.Struct("<")),
    )
}

#: What a game-port server accepts from clients.
GAME_CLIENT_MESSAGES = frozenset({GameReqLogin.TYPE, GameReqEcho.TYPE, GameReqHeartbeat.TYPE})
#: What a login-port server accepts from clients.
LOGIN_CLIENT_MESSAGES = frozenset({LoginReqLogin.TYPE})
#: What a client accepts from the servers (both ports).
SERVER_MESSAGES = frozenset({LoginResLogin.TYPE, GameResLogin.TYPE, GameResEcho.TYPE})
