"""Log files under ``cluster.log_dir``: one per role and instance, rotated daily or by size."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import runtime
from cluster.logfiles import SizeRotatingFileHandler, rotated_files
from cluster.testkit import wait_until

FULL_DATE = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Give the root logger back as it was after a test that set up logging in-process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_each_role_writes_its_own_file_with_its_startup_lines(make_cluster, tmp_path):
    logs = tmp_path / "logs" / "deep"  # made, parents too
    cluster = make_cluster(cluster={"log_dir": str(logs)})
    broker, gateway, (game,) = cluster.start_spine()
    for role, process in (("broker", broker), ("game", game), ("gateway", gateway)):
        path = logs / f"{role}.log"  # started by hand, without an instance: <role>.log
        # stderr keeps working, with the time of day; the file has the same lines, full date
        said = [line.split(" ", 1)[1] for line in process.log().splitlines()]
        assert said and all(line.startswith(f"{role}[{process.pid}] ") for line in said)

        def has_all(p: Path = path, said: list[str] = said) -> bool:
            written = [line.split(" ", 2)[2] for line in _lines(p)]
            return written[: len(said)] == said

        wait_until(has_all, f"{said} in {path}", timeout=20, detail=lambda p=path: _lines(p))
        assert all(re.match(rf"{FULL_DATE} {role}\[{process.pid}\] [A-Z]+ ", line)
                   for line in _lines(path)), _lines(path)  # fmt: skip


def test_cluster_up_writes_one_file_per_child_instance(make_cluster, tmp_path):
    logs = tmp_path / "logs"
    cluster = make_cluster(cluster={"log_dir": str(logs)}, workers={"game": 2, "auth": 1})
    ready_file = tmp_path / "up-ready"
    up = cluster.start("up", env={"CLUSTER_READY_FILE": str(ready_file)})
    names = ["up.log", "broker-1.log", "monitor-1.log", "game-1.log", "game-2.log",
             "auth-1.log", "gateway-1.log"]  # fmt: skip
    wait_until(lambda: all(_lines(logs / n) for n in names), f"lines in each of {names}",
               timeout=30, detail=lambda: sorted(p.name for p in logs.iterdir()))  # fmt: skip
    pids = {}
    for name in names:
        match = re.match(rf"{FULL_DATE} (\w+)\[(\d+)\]", _lines(logs / name)[0])
        assert match and match[1] == name.split("-")[0].removesuffix(".log"), name
        pids[name] = match[2]
    assert len(set(pids.values())) == len(names)  # each file is one process's
    assert not (logs / "game.log").exists()  # no shared file for the two game workers
    # the ready file is `cluster up`'s own: a child restarted later does not overwrite it
    # (its children never see the variable: they would write their own lines there)
    os.kill(int(pids["game-1.log"]), signal.SIGKILL)
    restarted = int(up.wait_log(r"game#1 restarted \(pid (\d+)\)", timeout=30)[1])
    environ = Path(f"/proc/{restarted}/environ").read_bytes().split(b"\0")
    assert b"CLUSTER_INSTANCE=1" in environ
    assert not any(v.startswith(b"CLUSTER_READY_FILE=") for v in environ)
    wait_until(lambda: any(f"[{restarted}]" in line and "data link" in line
                           for line in _lines(logs / "game-1.log")), "the restarted game-1",
               timeout=30, detail=lambda: _lines(logs / "game-1.log")[-5:])  # fmt: skip
    assert ready_file.read_text() == up.ready_line + "\n"


@pytest.mark.parametrize(
    ("log_dir", "why"), [("FILE", "is not a directory"), ("FILE/sub", "cannot create")]
)
def test_an_unusable_log_dir_is_one_line_and_exit_2(tmp_path, log_dir, why):
    blocker = tmp_path / "FILE"
    blocker.write_text("a file, not a directory\n")
    config = tmp_path / "cluster.toml"
    config.write_text(f'[cluster]\nlog_dir = "{tmp_path / log_dir}"\n')
    result = subprocess.run([sys.executable, "-m", "cluster", "broker", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cluster.log_dir" in result.stderr and why in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_size_rotation_rotates_and_keeps_log_keep_files(tmp_path, root_logging):
    handler = runtime.setup_logging("game", "debug", log_dir=str(tmp_path), rotate="size",
                                    max_bytes=4096, keep=3)  # fmt: skip
    assert isinstance(handler, SizeRotatingFileHandler)
    log = logging.getLogger("workers.game")
    for n in range(400):  # about 40 KB: some ten rotations
        log.debug("line %04d %s", n, "x" * 60)
    base = tmp_path / "game.log"
    rotated = rotated_files(base)
    assert len(rotated) == 3  # log_keep; the older ones are gone
    assert base.stat().st_size <= 4096 and all(p.stat().st_size <= 4096 for p in rotated)
    kept = [line for p in [*rotated, base] for line in _lines(p)]
    numbers = [int(re.search(r"line (\d{4})", line)[1]) for line in kept]  # type: ignore[index]
    # the newest lines, in order, none lost between the kept files
    assert numbers == list(range(numbers[0], 400)) and numbers[0] > 0


def test_size_rotation_with_log_keep_0_keeps_every_file(tmp_path, root_logging):
    runtime.setup_logging("auth", "info", log_dir=str(tmp_path), rotate="size", max_bytes=4096,
                          keep=0)  # fmt: skip
    for n in range(300):
        logging.getLogger("x").info("line %04d %s", n, "y" * 60)
    lines = [line for p in [*rotated_files(tmp_path / "auth.log"), tmp_path / "auth.log"]
             for line in _lines(p)]  # fmt: skip
    assert len(lines) == 300 and len(rotated_files(tmp_path / "auth.log")) >= 4


def test_daily_rotation_rolls_over_at_midnight_and_keeps_log_keep_files(tmp_path, root_logging):
    base = tmp_path / "chat.log"
    for day in range(1, 6):  # files of earlier days
        (tmp_path / f"chat.log.2026-01-0{day}").write_text(f"day {day}\n")
    handler = runtime.setup_logging("chat", "info", log_dir=str(tmp_path), keep=2)
    assert isinstance(handler, logging.handlers.TimedRotatingFileHandler)
    assert handler.when == "MIDNIGHT" and handler.backupCount == 2
    # Its next rollover is the coming local midnight: from 23:59:59, one second later.
    evening = time.mktime((2026, 3, 10, 23, 59, 59, 0, 0, -1))
    assert handler.computeRollover(int(evening)) == int(evening) + 1
    logging.getLogger("x").info("before midnight")
    # The clock crosses midnight: the file becomes that of the day before, the next line starts
    # a new one, and only log_keep (2) earlier days are left.
    midnight = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
    handler.rolloverAt = int(midnight)
    logging.getLogger("x").info("after midnight")
    yesterday = time.strftime("%Y-%m-%d", time.localtime(midnight - 86400))
    rotated = rotated_files(base)
    assert [p.name for p in rotated] == ["chat.log.2026-01-05", f"chat.log.{yesterday}"]
    assert "before midnight" in (tmp_path / f"chat.log.{yesterday}").read_text()
    assert [line.endswith("after midnight") for line in _lines(base)] == [True]
