"""Take docs/dashboard.png: the monitor's dashboard of a small live cluster under dummy load.

Runs ``cluster demo`` (every role on this machine, a fresh SQLite database, the dummy through the
login port, clients disconnecting and reconnecting at random so that logins go on) on free
loopback ports, plus a client that sends a malformed packet to the game port every second (so
that the drops chart has something to show), waits until the charts have some history, and
screenshots the whole page in headless Chromium (selenium; the same flags as
tests/test_dashboard.py). Usage, from the repository root::

    .venv/bin/python docs/screenshot_dashboard.py [--out docs/dashboard.png] [--settle 45]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from cluster.testkit import free_ports, wait_until, write_config

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def malformed(port: int, stop: threading.Event) -> None:
    """Every second, a client whose first packet is garbage (the gateway drops it)."""
    while not stop.wait(1.0):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"\xff" * 64)
                conn.recv(1)
        except OSError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("dashboard.png")))
    parser.add_argument(
        "--settle",
        type=float,
        default=45.0,
        help="seconds of load before the screenshot (default %(default)s)",
    )
    parser.add_argument("--clients", type=int, default=60)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dashboard-shot-"))
    ports = free_ports(6)
    config = write_config(work / "cluster.toml", {
        "cluster": {"data_dir": str(work / "data")},
        "broker": {"bind": f"tcp://127.0.0.1:{ports[0]}"},
        "gateway": {"game_port": ports[1], "login_port": ports[2], "chat_port": ports[3]},
        "monitor": {"metrics_port": ports[4], "db_interval": 5.0},
        "web": {"port": ports[5]},
    })  # fmt: skip
    duration = args.settle + 120
    demo = subprocess.Popen(
        [sys.executable, "-m", "cluster", "demo", "--config", str(config), "--path", "login",
          "--clients", str(args.clients), "--rand-disconnect", "2", "--rand-connect", "50",
         "--duration", str(duration)],
        stdout=subprocess.DEVNULL, stderr=(work / "demo.log").open("w"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{ports[4]}/"
    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    try:

        def sessions() -> float:
            try:
                with urllib.request.urlopen(url + "status.json", timeout=2) as answer:
                    status = json.load(answer)
            except OSError:
                return 0
            return sum(p.get("sessions", 0) for p in status["processes"] if p["role"] == "game")

        wait_until(lambda: sessions() > 0, "the dummy's clients in game", timeout=180,
                   interval=1.0)  # fmt: skip
        stop = threading.Event()
        threading.Thread(target=malformed, args=(ports[1], stop), daemon=True).start()
        time.sleep(args.settle)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                     f"--user-data-dir={profile}", "--window-size=1400,1000"):  # fmt: skip
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.get(url)
            wait_until(lambda: driver.execute_script(
                "return window.dashboard.polls > 2 && window.dashboard.charts.proc_cpu.points > 0"
            ), "the page charting", timeout=60, interval=0.5)  # fmt: skip
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False,
            })  # fmt: skip
            time.sleep(2)  # a redraw at the new size
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
        stop.set()
        print(f"wrote {args.out}")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
