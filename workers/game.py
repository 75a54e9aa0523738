"""The game worker role: the worker runtime (:mod:`workers.host`) running ``[game] app``, the
echo game (:mod:`workers.apps.echo`) unless configured otherwise."""

from __future__ import annotations

from cluster import role
from cluster.config import Config
from workers.host import WorkerRole


def serve(config: Config) -> int:
    """Run one game worker in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return role.serve(WorkerRole(config, "game"))
