"""Apps: the game logic a worker runs on the one worker runtime (:mod:`workers.host`).

The runtime owns everything a session needs that is not game logic: the session table, the
AUTH -> GAME modes, the key check of the link mode, pushed keys (systemlink), status rows,
placement by account (HOLD / FREE), relayed packets and their decoding, replies, closes, drain and
counters. An **app** is what differs between the echo game and the chat: a message table and the
handlers of its messages. An app module (named in config: ``[game] app`` / ``[chat] app``)
defines ``create(config) -> App``; see ``docs/apps.md`` for a worked example.

The contract, as the runtime calls it (all on the worker's one thread):

- ``messages``: the client message types a session in game may send (the decoder's table);
  ``login_type``: the opening request, which must come first;
- ``login(session, fields) -> (account_no, session_key, refusal)``: the opening request's fields;
  `refusal` names a reason to refuse before the key check (e.g. ``"version_miss"``) or is "";
- ``login_reply(account_no, reason) -> [type, *fields]``: the item answering the login: `reason`
  is "" for a login admitted, else the close reason;
- ``handlers[type](session, fields, packet) -> bytes | None``: one message of a session in game,
  in the order the client sent them. `packet` is the whole packet as received when the session
  is relayed (for :meth:`cluster.codec.Codec.retype`), None when it came as a decoded item. The
  return value is an encoded reply to that session; anything else goes through the host
  (:meth:`Host.deliver`, :meth:`Host.cast`). Raise :class:`Violation` to close the session;
- ``joined(session)`` / ``left(session)``: a session entered GAME mode / is gone (after a
  violation too);
- ``peer_item(source, mtype, fields)``: an item of ``peer_types`` from another worker of the
  same role (chat: messages said on that worker); ``end_frame()``: the frame's handlers are done
  and its output is about to go (the chat fans out what was said in it);
- ``collect() -> dict``: the app's fields of the worker's 1-second sample; ``totals()``: its
  counters, for the worker's last log line.

``tracks_status``: the app owns ``accountdb.status`` (one game per account; the echo game does,
the chat does not, as the original ChatServer did not).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from cluster.config import Config

if TYPE_CHECKING:
    from workers.host import Host, PlayerSession

#: A message handler: ``(session, fields, packet or None) -> reply or None``.
Handler = Callable[["PlayerSession", "tuple[Any, ...] | list[Any]", "bytes | None"], "bytes | None"]


class Violation(Exception):
    """Raised by a handler: the session broke a rule; it is closed and `reason` counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class App:
    """Base class of apps: override what the app needs (see the module docstring)."""

    name: ClassVar[str] = "app"
    messages: frozenset[int] = frozenset()
    login_type: int = 0
    tracks_status: ClassVar[bool] = False
    peer_types: ClassVar[frozenset[int]] = frozenset()

    def __init__(self) -> None:
        self.handlers: dict[int, Handler] = {}
        self.host: Host | None = None

    def bind(self, host: Host) -> None:
        """Called once, before any session: the runtime the app runs on."""
        self.host = host

    def login(self, session: PlayerSession, fields: list[Any]) -> tuple[int, bytes, str]:
        raise NotImplementedError

    def login_reply(self, account_no: int, reason: str) -> list[Any]:
        raise NotImplementedError

    def joined(self, session: PlayerSession) -> None:
        pass

    def left(self, session: PlayerSession) -> None:
        pass

    def peer_item(self, source: bytes, mtype: int, fields: list[Any]) -> None:
        pass

    def end_frame(self) -> None:
        pass

    def collect(self) -> dict[str, Any]:
        return {}

    def totals(self) -> dict[str, int]:
        """The app's counters since start, for the worker's last log line."""
        return {}


class AppError(ValueError):
    """An app module that cannot be loaded (one line, naming the module and the problem)."""


def load_app(module_name: str, config: Config, key: str) -> App:
    """The App of module `module_name`'s ``create(config)``; AppError naming `key` (the config
    key that named it) when it cannot be imported or made."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"{key}: cannot import {module_name!r}: {exc}") from None
    create = getattr(module, "create", None)
    if not callable(create):
        raise AppError(f"{key}: {module_name!r} has no create(config) function")
    app = create(config)
    if not isinstance(app, App):
        raise AppError(f"{key}: {module_name}.create() did not return a workers.apps.App")
    if app.login_type not in app.messages:
        raise AppError(f"{key}: {module_name}: login_type {app.login_type} is not in messages")
    return app
