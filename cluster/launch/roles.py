"""The role table: every process kind the launcher can start, and where its code lives.

A role's entry is ``name -> RoleEntry(target, help)``; ``target`` is ``"module:function"`` of a
function ``serve(config) -> exit code`` (for bus peers, a :class:`cluster.role.Role` run by
:func:`cluster.role.serve`). Modules are imported only when their role runs, so ``cluster
gateway`` never loads the workers' code. ``cluster up`` starts them in :data:`START_ORDER` and
stops them in reverse. Adding a role is one line here (and a ``Role`` subclass).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

from cluster.config import Config


class RoleEntry(NamedTuple):
    target: str  # "module:function", the function being serve(config) -> exit code
    help: str


ROLES: dict[str, RoleEntry] = {
    "broker": RoleEntry(
        "cluster.broker:serve", "run the broker (the ZeroMQ ROUTER every process connects to)"
    ),
    "gateway": RoleEntry(
        "gateway.server:serve", "run a gateway (the TCP login and game ports clients connect to)"
    ),
    "auth": RoleEntry("workers.auth:serve", "run one auth (login) worker"),
    "game": RoleEntry("workers.game:serve", "run one game (echo) worker"),
    "chat": RoleEntry("workers.chat:serve", "run one chat worker (sector chat)"),
    "web": RoleEntry(
        "gateway.web:serve", "run the web login (POST /v1/login: ID and password -> session key)"
    ),
    "monitor": RoleEntry(
        "cluster.monitor:serve",
        "run the monitor (counters of every process, status DB rows, /metrics)",
    ),
}

#: The order ``cluster up`` starts roles in (each one's peers are there when it registers).
START_ORDER = ("broker", "monitor", "game", "chat", "auth", "gateway", "web")


def entry_point(role: str) -> Callable[[Config], int]:
    """The ``serve(config)`` function of `role` (imported now)."""
    module, _, function = ROLES[role].target.partition(":")
    serve: Callable[[Config], int] = getattr(importlib.import_module(module), function)
    return serve
