"""Every client message of docs/protocol.md as a typed, immutable record, with its wire layout.

A message is a ``NamedTuple`` of its fields, in wire order (the leading type is not a field),
subclassed once to add the class attribute ``TYPE``, its uint16 message type. :data:`SPECS` maps
each type to a :class:`MessageSpec` that packs and unpacks the payload; the codec
(:mod:`cluster.codec`) is the only user of the layouts, everything else handles the records.

Text fields (``WCHAR name[N]``) are ``str`` here and UTF-16LE, NUL-padded on the wire; session keys
are exactly 64 raw ``bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple

SESSION_KEY_SIZE = 64
GAME_VERSION = 1


class LoginStatus(IntEnum):
    """CS_LOGIN_RES_LOGIN Status (docs/protocol.md). NONE (-1) is internal and never sent."""

    NONE = -1
    FAIL = 0
    OK = 1
    GAME = 2
    ACCOUNT_MISS = 3
    SESSION_MISS = 4
    STATUS_MISS = 5
    NOSERVER = 6


class GameLoginStatus(IntEnum):
    """CS_GAME_RES_LOGIN Status (docs/protocol.md)."""

    FAIL = 0
    OK = 1
    NOCHARACTER = 2
    VERSION_MISS = 3


# Each message is a NamedTuple of its fields (the private ``_...Fields`` class) subclassed to
# add ``TYPE``: a NamedTuple body may hold only fields (mypy rejects ``TYPE = 101`` there, and at
# runtime an annotated ``TYPE: ClassVar[int]`` would become a field). The subclass keeps
# ``__slots__ = ()``, so records are still plain tuples: creation, field access and ``_make``
# cost the same as on the NamedTuple itself.


class _LoginReqLoginFields(NamedTuple):
    account_no: int
    session_key: bytes


class LoginReqLogin(_LoginReqLoginFields):
    """101 CS_LOGIN_REQ_LOGIN, client -> login port."""

    __slots__ = ()
    TYPE: ClassVar[int] = 101


class _LoginResLoginFields(NamedTuple):
    account_no: int
    status: int
    user_id: str
    nickname: str
    game_server_ip: str
    game_server_port: int
    chat_server_ip: str
    chat_server_port: int


class LoginResLogin(_LoginResLoginFields):
    """102 CS_LOGIN_RES_LOGIN, login port -> client (then the server closes)."""

    __slots__ = ()
    TYPE: ClassVar[int] = 102


class _GameReqLoginFields(NamedTuple):
    account_no: int
    session_key: bytes
    version: int


class GameReqLogin(_GameReqLoginFields):
    """1001 CS_GAME_REQ_LOGIN, client -> game port; the only message allowed in AUTH mode."""

    __slots__ = ()
    TYPE: ClassVar[int] = 1001


class _GameResLoginFields(NamedTuple):
    status: int
    account_no: int


class GameResLogin(_GameResLoginFields):
    """1002 CS_GAME_RES_LOGIN, game port -> client."""

    __slots__ = ()
    TYPE: ClassVar[int] = 1002


class _GameReqEchoFields(NamedTuple):
    account_no: int
    send_tick: int


class GameReqEcho(_GameReqEchoFields):
    """5000 CS_GAME_REQ_ECHO, client -> game port (GAME mode)."""

    __slots__ = ()
    TYPE: ClassVar[int] = 5000


class _GameResEchoFields(NamedTuple):
    account_no: int
    send_tick: int


class GameResEcho(_GameResEchoFields):
    """5001 CS_GAME_RES_ECHO, game port -> client: the request's fields, unchanged."""

    __slots__ = ()
    TYPE: ClassVar[int] = 5001


class _GameReqHeartbeatFields(NamedTuple):
    pass


class GameReqHeartbeat(_GameReqHeartbeatFields):
    """5002 CS_GAME_REQ_HEARTBEAT, client -> game port (GAME mode): refreshes the receive time."""

    __slots__ = ()
    TYPE: ClassVar[int] = 5002


# -- the chat port (the original ChatServer's protocol; types 1-7) ------------------------------

#: Longest chat message, in bytes: the original server's buffer is WCHAR[256].
CHAT_MESSAGE_MAX = 512
#: The sector grid is SECTOR_MAX x SECTOR_MAX; a coordinate outside it is a violation.
SECTOR_MAX = 100


class _ChatReqLoginFields(NamedTuple):
    account_no: int
    user_id: str
    nickname: str
    session_key: bytes


class ChatReqLogin(_ChatReqLoginFields):
    """1 CS_CHAT_REQ_LOGIN, client -> chat port: the only message allowed before login. ID and
    Nickname are read up to their first NUL (original clients leave bytes after it)."""

    __slots__ = ()
    TYPE: ClassVar[int] = 1


class _ChatResLoginFields(NamedTuple):
    status: int
    account_no: int


class ChatResLogin(_ChatResLoginFields):
    """2 CS_CHAT_RES_LOGIN, chat port -> client: Status 0 (fail) or 1 (ok)."""

    __slots__ = ()
    TYPE: ClassVar[int] = 2


class _ChatSectorMoveFields(NamedTuple):
    account_no: int
    sector_x: int
    sector_y: int


class ChatReqSectorMove(_ChatSectorMoveFields):
    """3 CS_CHAT_REQ_SECTOR_MOVE, client -> chat port."""

    __slots__ = ()
    TYPE: ClassVar[int] = 3


class ChatResSectorMove(_ChatSectorMoveFields):
    """4 CS_CHAT_RES_SECTOR_MOVE, chat port -> client: the request's fields."""

    __slots__ = ()
    TYPE: ClassVar[int] = 4


class _ChatReqMessageFields(NamedTuple):
    account_no: int
    message: bytes  # UTF-16LE as the client sent it, no NUL; MessageLen on the wire


class ChatReqMessage(_ChatReqMessageFields):
    """5 CS_CHAT_REQ_MESSAGE, client -> chat port: ``AccountNo, MessageLen:u16, Message``; the
    payload must be exactly 12 + MessageLen bytes, MessageLen at most CHAT_MESSAGE_MAX."""

    __slots__ = ()
    TYPE: ClassVar[int] = 5


class _ChatResMessageFields(NamedTuple):
    account_no: int
    user_id: str
    nickname: str
    message: bytes


class ChatResMessage(_ChatResMessageFields):
    """6 CS_CHAT_RES_MESSAGE, chat port -> client: the sender's AccountNo, ID and Nickname and
    its message unchanged."""

    __slots__ = ()
    TYPE: ClassVar[int] = 6


class _ChatReqHeartbeatFields(NamedTuple):
    pass


class ChatReqHeartbeat(_ChatReqHeartbeatFields):
    """7 CS_CHAT_REQ_HEARTBEAT, client -> chat port: refreshes the receive time."""

    __slots__ = ()
    TYPE: ClassVar[int] = 7


#: The class of any message record; MessageSpec.cls is one.
MessageClass = (
    type[LoginReqLogin]
    | type[LoginResLogin]
    | type[GameReqLogin]
    | type[GameResLogin]
    | type[GameReqEcho]
    | type[GameResEcho]
    | type[GameReqHeartbeat]
    | type[ChatReqLogin]
    | type[ChatResLogin]
    | type[ChatReqSectorMove]
    | type[ChatResSectorMove]
    | type[ChatReqMessage]
    | type[ChatResMessage]
    | type[ChatReqHeartbeat]
    | type[Any]  # an app's own records (see register)
)

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
    ``(to_wire, from_wire)`` pair for fields whose Python form differs from the struct form.

    With ``tail`` (> 0) the layout ends in a variable part: the body's last item is a uint16
    byte count and that many raw bytes follow it (at most ``tail``); the record's last field is
    those bytes (the count is implied by their length), and ``size`` is the fixed part."""

    cls: MessageClass
    body: struct.Struct
    converters: tuple[tuple[int, Callable[[Any], Any], Callable[[Any], Any]], ...] = ()
    tail: int = 0
    type: int = field(init=False)
    size: int = field(init=False)
    whole: struct.Struct = field(init=False)  # the type and the body in one layout
    #: packs and unpacks with ``whole`` alone (no converters, no tail): the codec's fast path
    simple: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", self.cls.TYPE)
        object.__setattr__(self, "size", 2 + self.body.size)
        object.__setattr__(self, "whole", struct.Struct("<H" + self.body.format[1:]))
        object.__setattr__(self, "simple", not self.converters and not self.tail)
        if self.tail and not self.body.format.endswith("H"):
            raise ValueError(f"{self.name}: a tail needs a uint16 count as the last body item")

    @property
    def name(self) -> str:
        return self.cls.__name__

    def pack(self, fields: Iterable[Any]) -> bytes:
        """The plain payload (type included) for `fields`. Raises ValueError/struct.error."""
        if self.simple:
            return self.whole.pack(self.type, *fields)
        values = list(fields)
        for index, to_wire, _ in self.converters:
            values[index] = to_wire(values[index])
        if not self.tail:
            return self.whole.pack(self.type, *values)
        tail = bytes(values.pop())
        if len(tail) > self.tail:
            raise ValueError(f"{len(tail)} bytes in the last field, at most {self.tail}")
        return self.whole.pack(self.type, *values, len(tail)) + tail

    def unpack(self, plain: bytes) -> Message:
        """The record for a plain payload whose type and size were already checked."""
        return self.cls._make(self.unpack_fields(plain))

    def unpack_fields(self, plain: bytes) -> tuple[Any, ...]:
        """The fields, in wire order, of a plain payload whose type and size were checked."""
        values = self.body.unpack_from(plain, 2)
        if self.converters or self.tail:
            converted = list(values)
            for index, _, from_wire in self.converters:
                converted[index] = from_wire(converted[index])
            if self.tail:
                converted[-1] = plain[self.size : self.size + converted[-1]]
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
        MessageSpec(
            ChatReqLogin,
            struct.Struct("<q40s40s64s"),
            ((1, *_text(20)), (2, *_text(20)), (3, *_KEY)),
        ),
        MessageSpec(ChatResLogin, struct.Struct("<Bq")),
        MessageSpec(ChatReqSectorMove, struct.Struct("<qHH")),
        MessageSpec(ChatResSectorMove, struct.Struct("<qHH")),
        MessageSpec(ChatReqMessage, struct.Struct("<qH"), tail=CHAT_MESSAGE_MAX),
        MessageSpec(
            ChatResMessage,
            struct.Struct("<q40s40sH"),
            ((1, *_text(20)), (2, *_text(20))),
            tail=CHAT_MESSAGE_MAX,
        ),
        MessageSpec(ChatReqHeartbeat, struct.Struct("<")),
    )
}

#: The protocol's own message types (SPECS may grow: apps register theirs).
BUILTIN_TYPES = frozenset(SPECS)


def register(spec: MessageSpec) -> MessageSpec:
    """Add an app's own message type to the codec's table (docs/apps.md); returns `spec`.

    Its record class needs a ``TYPE`` and NamedTuple's ``_make``. Registering the same layout
    twice is allowed (a module imported twice); another layout under a type already known is a
    ValueError naming both."""
    known = SPECS.get(spec.type)
    if known is not None and (known.body.format, known.tail) != (spec.body.format, spec.tail):
        raise ValueError(f"message type {spec.type} ({spec.name}) is already {known.name}")
    if known is None:
        SPECS[spec.type] = spec
    return SPECS[spec.type]


#: What a game-port server accepts from clients.
GAME_CLIENT_MESSAGES = frozenset({GameReqLogin.TYPE, GameReqEcho.TYPE, GameReqHeartbeat.TYPE})
#: What a login-port server accepts from clients.
LOGIN_CLIENT_MESSAGES = frozenset({LoginReqLogin.TYPE})
#: What a client accepts from the servers (both ports).
SERVER_MESSAGES = frozenset({LoginResLogin.TYPE, GameResLogin.TYPE, GameResEcho.TYPE})
#: What a chat-port server accepts from clients.
CHAT_CLIENT_MESSAGES = frozenset({
    ChatReqLogin.TYPE, ChatReqSectorMove.TYPE, ChatReqMessage.TYPE, ChatReqHeartbeat.TYPE,
})  # fmt: skip
#: What a chat client accepts from the chat port.
CHAT_SERVER_MESSAGES = frozenset({ChatResLogin.TYPE, ChatResSectorMove.TYPE, ChatResMessage.TYPE})
