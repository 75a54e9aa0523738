#!/usr/bin/env python3
"""Soak: the whole cluster under moderate dummy load with random disconnects, for minutes.

    python bench/soak.py [--minutes 5] [--clients 200] [--json]

Starts every role with ``cluster up`` (embedded SQLite, systemlink), creates the accounts, runs
``cluster dummy run`` with ``--rand-disconnect`` for the whole time, and samples every process's
memory (RSS and USS) every 10 s. It reports, per process, the memory after warm-up (the first
fifth of the run) and at the end, and the dummy's report: errors, Down Client, and whether
connect_total equals accept_total. A healthy run has flat memory and no packet errors. It prints
figures and exits 1 only when the dummy reported packet errors or a connect mismatch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Proc,
    cluster_roles,
    install_signal_handlers,
    memory,
    progress,
    run_cluster_command,
    start_cluster,
    stop_all,
)
from cluster.testkit import free_ports, write_config  # noqa: E402

SAMPLE_EVERY = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    install_signal_handlers()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        work = Path(tmp)
        broker, login, game, metrics = free_ports(4)
        config = write_config(work / "cluster.toml", {
            "cluster": {"data_dir": str(work / "data")},
            "broker": {"bind": f"tcp://127.0.0.1:{broker}"},
            "gateway": {"login_port": login, "game_port": game},
            "chat": {"enabled": False},
            "web": {"enabled": False},  # the dummy uses the listed keys
            "monitor": {"metrics_port": metrics, "summary_interval": 3600.0},
        })  # fmt: skip
        try:
            run_cluster_command(config, "accounts", "create", "--count", str(args.clients),
                                "--out", str(work / "accounts.tsv"), "--no-passwords")  # fmt: skip
            cluster = start_cluster(config, work / "cluster.log")
            roles = cluster_roles(cluster)
            report_path = work / "report.json"
            dummy = Proc([
                sys.executable, "-m", "cluster", "dummy", "run", "--config", str(config),
                "--accounts", str(work / "accounts.tsv"),
                "--clients", str(args.clients), "--rand-disconnect", "2", "--echo-overlap", "5",
                "--duration", str(seconds), "--report", str(report_path),
            ], work / "dummy.log")  # fmt: skip
            samples: dict[str, list[tuple[float, int]]] = {}
            started = time.monotonic()
            while dummy.popen.poll() is None:
                elapsed = time.monotonic() - started
                for role, processes in roles.items():
                    for i, process in enumerate(processes):
                        rss = memory(process).get("uss") or memory(process).get("rss") or 0
                        samples.setdefault(f"{role}#{i + 1}", []).append((elapsed, rss))
                progress(f"{elapsed:5.0f}s of {seconds:.0f}s: " + ", ".join(
                    f"{name} {points[-1][1] / 2**20:.1f} MB" for name, points in samples.items()
                ))  # fmt: skip
                try:
                    dummy.popen.wait(SAMPLE_EVERY)
                except subprocess.TimeoutExpired:
                    pass
            if not report_path.exists():
                print(f"the dummy wrote no report:\n{dummy.log_tail()}", file=sys.stderr)
                return 1
            report = json.loads(report_path.read_text())
        finally:
            stop_all()
    warm = seconds / 5
    result: dict[str, Any] = {"seconds": seconds, "clients": args.clients, "memory_mb": {}}
    for name, points in samples.items():
        after = [rss for t, rss in points if t >= warm] or [points[-1][1]]
        result["memory_mb"][name] = {
            "after_warmup": round(after[0] / 2**20, 2),
            "end": round(after[-1] / 2**20, 2),
            "growth_percent": round(100 * (after[-1] - after[0]) / max(after[0], 1), 1),
        }
    result["dummy"] = {key: report[key] for key in (
        "connect_total", "accept_total", "connect_matches_accept", "down_client", "login_ok",
        "echo_sent", "echo_recv", "errors", "latency_ms",
    )}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{'process':12} {'MB after warm-up':>17} {'MB at end':>10} {'growth':>8}")
        for name, figures in result["memory_mb"].items():
            print(f"{name:12} {figures['after_warmup']:>17} {figures['end']:>10} "
                  f"{figures['growth_percent']:>7}%")  # fmt: skip
        print("dummy:", json.dumps(result["dummy"]))
    bad = report["errors"].get("packet_error") or report["connect_matches_accept"] is False
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
