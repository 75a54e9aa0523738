"""Where a dummy run shows itself: a screen redrawn each second with S/Q keys on a terminal, or
a progress line every few seconds in the log otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any, Protocol


class Shown(Protocol):
    """What the console shows: a view of one second (:mod:`dummy.report`)."""

    paused: bool

    def screen(self, title: str) -> str: ...

    def progress(self) -> str: ...

    def row(self) -> dict[str, Any]: ...


log = logging.getLogger("dummy")

CLEAR = "\x1b[H\x1b[2J"
PROGRESS_INTERVAL = 5.0


class Console:
    """Shows views; on a terminal, S calls `on_pause` and Q calls `on_quit`."""

    def __init__(self, title: str, on_pause: Callable[[], bool], on_quit: Callable[[], None]):
        self.title = title
        self.on_pause = on_pause
        self.on_quit = on_quit
        self.interactive = sys.stdout.isatty() and sys.stdin.isatty()
        self.paused = False
        self._next_progress = time.monotonic() + PROGRESS_INTERVAL

    def show(self, view: Shown) -> None:
        view.paused = self.paused
        if self.interactive:
            sys.stdout.write(CLEAR + view.screen(self.title) + "\n")
            sys.stdout.flush()
        elif time.monotonic() >= self._next_progress:
            self._next_progress = time.monotonic() + PROGRESS_INTERVAL
            log.info("%s", view.progress())

    def _key(self) -> None:
        try:
            key = os.read(sys.stdin.fileno(), 1).decode(errors="ignore").lower()
        except OSError:
            return
        if key == "s":
            self.paused = self.on_pause()
        elif key == "q":
            self.on_quit()

    @contextlib.contextmanager
    def keys(self) -> Iterator[None]:
        """Read single keys from the terminal while the run lasts (no-op off a terminal)."""
        if not self.interactive:
            yield
            return
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        loop = asyncio.get_running_loop()
        try:
            tty.setcbreak(fd)
            loop.add_reader(fd, self._key)
            yield
        finally:
            loop.remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
