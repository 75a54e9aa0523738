"""The console keys of `cluster up`, as the original servers had them: U unlock, L lock, Q quit.

The console starts LOCKED: Q quits (a graceful stop, the same as SIGINT) only once U unlocked it,
so a stray Q typed into a production console does nothing but show a one-line hint; L locks it
again. Keys are case-insensitive; any other key is ignored.

:class:`ConsoleLock` is the state (pure); :class:`KeyReader` reads single keys from a terminal
(stdin in cbreak mode: no echo, no line buffering, Ctrl-C still signals) and restores the
terminal's mode when closed. `cluster up` reads keys only when stdin is a terminal: off one
(systemd, a pipe, /dev/null) nothing is read at all.
"""

from __future__ import annotations

import asyncio
import os
import termios
import tty
from collections.abc import Callable
from typing import Any

#: The line shown when Q is pressed while the console is locked.
LOCKED_HINT = "the console is locked: press U to unlock it, then Q to quit"
KEYS = "keys: U unlock  L lock  Q quit (when unlocked)"


class ConsoleLock:
    """The lock state of the console; `quit` is called once Q is pressed while unlocked."""

    def __init__(self, quit: Callable[[], None]) -> None:
        self.locked = True
        self.hint = ""
        self.quitting = False
        self._quit = quit

    def key(self, char: str) -> None:
        """Apply one key."""
        key = char.lower()
        if key == "u":
            self.locked, self.hint = False, ""
        elif key == "l":
            self.locked, self.hint = True, ""
        elif key == "q":
            if self.locked:
                self.hint = LOCKED_HINT
            elif not self.quitting:
                self.quitting, self.hint = True, "stopping the cluster..."
                self._quit()

    def status(self) -> str:
        """One line: the lock state, the keys, and the hint when there is one."""
        state = "LOCKED" if self.locked else "UNLOCKED"
        line = f"console {state}  {KEYS}"
        return f"{line}  |  {self.hint}" if self.hint else line


class KeyReader:
    """Reads the keys typed on the terminal `fd` (in cbreak mode from :meth:`start` until
    :meth:`close`, which restores the terminal's previous mode; idempotent) and hands each to
    `on_key`, then calls `changed` once per read."""

    def __init__(self, fd: int, on_key: Callable[[str], None], changed: Callable[[], None]) -> None:
        self.fd = fd
        self.on_key = on_key
        self.changed = changed
        self._saved: list[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Cbreak mode and start reading (call inside the running loop)."""
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the terminal is gone: no more keys
            self._stop_reading()
            return
        for char in data.decode("utf-8", "ignore"):
            self.on_key(char)
        self.changed()

    def _stop_reading(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None

    def close(self) -> None:
        """Stop reading and restore the terminal's mode."""
        self._stop_reading()
        if self._saved is not None:
            saved, self._saved = self._saved, None
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # the terminal is gone
