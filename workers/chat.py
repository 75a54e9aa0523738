"""The chat worker role: the worker runtime (:mod:`workers.host`) running ``[chat] app``, the
sector chat (:mod:`workers.apps.chat`) unless configured otherwise."""

from __future__ import annotations

from cluster import role
from cluster.config import Config
from workers.host import WorkerRole


def serve(config: Config) -> int:
    """Run one chat worker in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return role.serve(WorkerRole(config, "chat"))
