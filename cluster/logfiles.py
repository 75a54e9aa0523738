"""Log files: each process's log lines also written to ``<log_dir>/<name>.log``, rotated.

``cluster.log_dir`` turns them on ("" = off, stderr only). The file of a process is named after
its role and instance: ``cluster up`` passes each child its index in :data:`INSTANCE_ENV`, so the
two game workers of a host write ``game-1.log`` and ``game-2.log`` (and ``broker-1.log``...); a
role started by hand without that variable writes ``<role>.log`` (set ``CLUSTER_INSTANCE=N`` when
several processes of one role run on one host by hand, e.g. ``Environment=CLUSTER_INSTANCE=%i`` in
a systemd template unit). ``cluster up`` itself writes ``up.log``.

Rotation (``cluster.log_rotate``):

- ``daily``: at local midnight the file becomes ``<name>.log.YYYY-MM-DD`` (the day it covers);
- ``size``: when a line would take the file past ``cluster.log_max_bytes`` it becomes
  ``<name>.log.YYYY-MM-DD_HHMMSS`` (``-2``, ``-3``... when several rotations fall in one second).

Either way ``cluster.log_keep`` rotated files are kept per name, the oldest deleted first
(0 keeps every file). Lines carry the full date: ``2026-11-29 21:54:39.123 game[4242] INFO ...``.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import time
from pathlib import Path

#: The variable ``cluster up`` sets to the index of each child it starts (1, 2, ...).
INSTANCE_ENV = "CLUSTER_INSTANCE"

FILE_DATEFMT = "%Y-%m-%d %H:%M:%S"


class LogDirError(Exception):
    """``cluster.log_dir`` cannot be used; the message is one line naming the key."""


def file_name(role: str, instance: str | None = None) -> str:
    """``<role>-<instance>.log``, or ``<role>.log`` without an instance (`instance` None reads
    :data:`INSTANCE_ENV`). An instance that is not a plain name is ignored."""
    if instance is None:
        instance = os.environ.get(INSTANCE_ENV, "")
    instance = instance.strip()
    if instance and re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", instance) and instance not in (".", ".."):
        return f"{role}-{instance}.log"
    return f"{role}.log"


def prepare_dir(log_dir: str) -> Path:
    """Create `log_dir` (and its parents) and check a file can be written there; LogDirError
    otherwise."""
    path = Path(log_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LogDirError(f"cluster.log_dir: {log_dir!r} is not a directory") from None
    except OSError as exc:
        raise LogDirError(f"cluster.log_dir: cannot create {log_dir!r}: "
                          f"{exc.strerror or exc}") from None  # fmt: skip
    if not path.is_dir():
        raise LogDirError(f"cluster.log_dir: {log_dir!r} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise LogDirError(f"cluster.log_dir: {log_dir!r} is not writable")
    return path


class SizeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotates when the file would pass `max_bytes`, to a time-stamped name, keeping `keep`
    rotated files (0: all of them). The stdlib's numbered scheme cannot keep every file."""

    def __init__(self, filename: Path, max_bytes: int, keep: int) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=0, encoding="utf-8")
        self.keep = keep

    def doRollover(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None
        base = self.baseFilename
        stamp = time.strftime("%Y-%m-%d_%H%M%S")
        # Within one second: -2, -3... after the highest still there (never a name that would
        # sort before a newer file's).
        taken = [n for s, n, _ in _rotated(Path(base)) if s == stamp]
        n = max(taken, default=0) + 1
        target = f"{base}.{stamp}" if n == 1 else f"{base}.{stamp}-{n}"
        if os.path.exists(base):
            os.rename(base, target)
        prune(Path(base), self.keep)
        self.stream = self._open()


def _rotated(base: Path) -> list[tuple[str, int, Path]]:
    """(stamp, n, path) of each rotated file of `base`, oldest first."""
    pattern = re.compile(re.escape(base.name) + r"\.(\d{4}-\d{2}-\d{2}(?:_\d{6})?)(?:-(\d+))?")
    found = []
    for path in base.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match:
            found.append((match[1], int(match[2] or 1), path))
    return sorted(found)


def rotated_files(base: Path) -> list[Path]:
    """The rotated files of `base` (``<base>.<date>[_<time>[-<n>]]``), oldest first."""
    return [path for *_, path in _rotated(base)]


def prune(base: Path, keep: int) -> None:
    """Delete the oldest rotated files of `base` beyond `keep` (0: keep all)."""
    if keep <= 0:
        return
    files = rotated_files(base)
    for old in files[: max(0, len(files) - keep)]:
        try:
            old.unlink()
        except FileNotFoundError:
            pass


def file_handler(
    log_dir: str, name: str, rotate: str, max_bytes: int, keep: int
) -> logging.Handler:
    """The rotating handler of ``<log_dir>/<name>`` (LogDirError when it cannot be opened)."""
    path = prepare_dir(log_dir) / name
    handler: logging.Handler
    try:
        if rotate == "size":
            handler = SizeRotatingFileHandler(path, max_bytes, keep)
        else:
            handler = logging.handlers.TimedRotatingFileHandler(
                path, when="midnight", backupCount=keep, encoding="utf-8"
            )
    except OSError as exc:
        raise LogDirError(f"cluster.log_dir: cannot open {path}: {exc.strerror or exc}") from None
    return handler
