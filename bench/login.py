#!/usr/bin/env python3
"""Complete logins per second through the cluster, as a ratio to the same DB work done directly.

    python bench/login.py [--quick] [--json] [--backend mariadb|sqlite|both] [--mysql-url URL]
                          [--logins N] [--concurrency C] [--runs R] [--warmup W]
                          [--game-workers G] [--auth-workers A] [--pool-size P]

One **complete login** is what a client of the original does: CS_LOGIN_REQ_LOGIN on the login
port (gateway -> broker -> auth worker -> ``accountdb.v_account`` -> systemlink push to the game
worker and its ACK -> CS_LOGIN_RES_LOGIN OK), then CS_GAME_REQ_LOGIN with the same key on the game
port it was given (game worker -> ``accountdb.status`` set to 1 -> CS_GAME_RES_LOGIN OK), then it
closes, and the game worker resets the status row to 0. Each login uses its own account, so no
account is reused before it has left the game.

**cluster**: per backend, a fresh database (MariaDB: a unique ``[db] prefix`` whose databases are
dropped at the end; SQLite: a temporary directory), ``cluster accounts create`` for every login,
and ``cluster up --only broker,game,auth,gateway`` in systemlink mode with 2 auth workers and
``--game-workers`` game workers (1 by default; no monitor) on free ports. C concurrent clients in
this process (uvloop; ``dummy.client.login_once`` and ``GameClient``) do complete logins back to
back, R runs of N logins each, after W warm-up logins.

**baseline**: in this process, the DB statements that one complete login costs the cluster, with
the same concurrency C: ``SELECT ... FROM accountdb.v_account WHERE accountno = ?`` (the auth
worker's check, judged as it does), ``UPDATE accountdb.status SET status = 1, owner = ?`` (the
game worker's entry) and ``UPDATE accountdb.status SET status = 0, owner = NULL WHERE owner = ?
AND accountno IN (?)`` (its reset when the session ends) -- the SQL text rendered by
``cluster.db.statements``. MariaDB: aiomysql directly, one pool of ``[db] pool_size`` connections
(autocommit, each statement on its own pooled connection, as the workers do). SQLite: the
project's SQLite backend (one connection on one DB thread, what each worker process has). The
cluster batches the resets of sessions that end together into one UPDATE; the baseline does one
per login.

Baseline and cluster runs alternate on the same accounts (the baseline leaves rows as it found
them); every figure is the median of the runs. Printed: logins/s of both, the ratio
cluster/baseline, p50/p99 of a complete login, and the CPU % (of one core) of the load client
(this process) and of each role during the cluster runs. Progress goes to stderr; ``--json``
prints ``{"backends": {"mariadb": {"cluster", "baseline", "ratio", "p50_ms", "p99_ms", ...},
"sqlite": {...}}}`` on stdout. ``--quick`` does runs of 2,000 logins instead of 10,000 (under
two minutes for both backends). An unreachable MariaDB is skipped with one line. Nothing here is
a test; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiomysql  # noqa: E402
import psutil  # noqa: E402
import pymysql  # noqa: E402
from pymysql.constants import CLIENT  # noqa: E402

from bench import common  # noqa: E402
from cluster import testkit  # noqa: E402
from cluster.codec import Codec  # noqa: E402
from cluster.config import load  # noqa: E402
from cluster.db import open_database, schema, statements  # noqa: E402
from cluster.db.accounts import read_accounts_file  # noqa: E402
from cluster.db.statements import to_account_row  # noqa: E402
from cluster.db.url import MysqlTarget, parse, redact  # noqa: E402
from cluster.messages import GameLoginStatus, LoginStatus  # noqa: E402
from dummy.client import GameClient, login_once  # noqa: E402
from workers.auth import judge  # noqa: E402

DEFAULT_MYSQL_URL = os.environ.get("CLUSTER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
BACKENDS = ("mariadb", "sqlite")
CLIENT_TIMEOUT = 10.0
PROGRESS_EVERY = 3.0
ROLES = ("broker", "game", "auth", "gateway")
DB_SERVER_NAMES = ("mariadbd", "mysqld")  # its CPU is shown when it runs on this host
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class LoginFailed(Exception):
    """A login that did not end in OK; the message is the error's label."""


@dataclass(frozen=True)
class Account:
    no: int
    key: bytes


@dataclass
class RunResult:
    """One run: how many logins succeeded in how long, their latencies, and what failed."""

    ok: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


# -- load ------------------------------------------------------------------------------------------


async def drive(
    label: str,
    accounts: Sequence[Account],
    concurrency: int,
    one: Callable[[Account], Awaitable[None]],
) -> RunResult:
    """`concurrency` tasks doing ``one(account)`` back to back until every account is done."""
    result = RunResult()
    pending: Iterator[Account] = iter(accounts)

    async def worker() -> None:
        for account in pending:
            started = time.perf_counter()
            try:
                await one(account)
            except LoginFailed as exc:
                result.errors[str(exc)] += 1
                continue
            except (OSError, TimeoutError, EOFError, AssertionError) as exc:
                result.errors[type(exc).__name__] += 1
                continue
            result.latencies.append(time.perf_counter() - started)
            result.ok += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            elapsed = time.perf_counter() - t0
            common.progress(
                f"  {label}: {result.ok}/{len(accounts)} in {elapsed:.0f}s "
                f"({result.ok / elapsed:,.0f}/s), errors {sum(result.errors.values())}"
            )

    t0 = time.perf_counter()
    ticker = asyncio.create_task(report())
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        ticker.cancel()
    result.seconds = time.perf_counter() - t0
    return result


def complete_login(host: str, login_port: int) -> Callable[[Account], Awaitable[None]]:
    """One complete login as a client does it (login port, then the game port it is given)."""
    codec = Codec()

    async def one(account: Account) -> None:
        answer = await login_once(host, login_port, account.no, account.key, codec, CLIENT_TIMEOUT)
        if answer.status != LoginStatus.OK:
            raise LoginFailed(f"login_{LoginStatus(answer.status).name.lower()}")
        client = await GameClient.connect(answer.game_server_ip, answer.game_server_port, codec)
        try:
            reply = await client.login(account.no, account.key, timeout=CLIENT_TIMEOUT)
        finally:
            await client.close()
        if reply.status != GameLoginStatus.OK:
            raise LoginFailed(f"game_{GameLoginStatus(reply.status).name.lower()}")

    return one


class MysqlBaseline:
    """The DB statements of one complete login, straight through an aiomysql pool."""

    def __init__(self, url: str, prefix: str, pool_size: int) -> None:
        target = parse(url)
        assert isinstance(target, MysqlTarget)
        self.target = target
        self.pool_size = pool_size
        self.sql = statements.mysql_statements(*schema.database_names(prefix))
        self.leave_sql = self.sql.leave_game(1)
        self.owner = f"bench-baseline@{os.uname().nodename}/{os.getpid()}"
        self.pool: Any = None

    async def open(self) -> None:
        self.pool = await aiomysql.create_pool(
            minsize=0,
            maxsize=self.pool_size,
            host=self.target.host,
            port=self.target.port,
            user=self.target.user,
            password=self.target.password,
            autocommit=True,
            charset="utf8mb4",
            client_flag=CLIENT.FOUND_ROWS,
        )

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            await self.pool.wait_closed()

    async def one(self, account: Account) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(self.sql.account, (account.no,))
            rows = await cur.fetchall()
        row = to_account_row(rows[0]) if rows else None
        status = judge(row, account.key)
        if status != LoginStatus.OK:
            raise LoginFailed(f"baseline_{status.name.lower()}")
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(self.sql.enter_game, (self.owner, account.no))
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(self.leave_sql, (self.owner, account.no))


class SqliteBaseline:
    """The DB calls of one complete login, through the project's SQLite backend."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.owner = f"bench-baseline@{os.uname().nodename}/{os.getpid()}"
        self.db: Any = None

    async def open(self) -> None:
        self.db = await open_database(load(self.config_path, env={}))

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()

    async def one(self, account: Account) -> None:
        status = judge(await self.db.account(account.no), account.key)
        if status != LoginStatus.OK:
            raise LoginFailed(f"baseline_{status.name.lower()}")
        await self.db.enter_game(account.no, self.owner)
        await self.db.leave_game([account.no], self.owner)


# -- one backend -----------------------------------------------------------------------------------


def mariadb_unreachable(url: str) -> str | None:
    """None when the server answers, else one line saying why not."""
    try:
        target = parse(url)
        if not isinstance(target, MysqlTarget):
            return f"--mysql-url {redact(url)!r} is not a mysql:// URL"
        pymysql.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            connect_timeout=3,
        ).close()
    except Exception as exc:  # any failure means: not usable here
        return f"MariaDB at {redact(url)} unreachable: {exc}"
    return None


def local_db_server(url: str) -> psutil.Process | None:
    """The MariaDB server process when `url` names this host (to show its CPU), else None."""
    target = parse(url)
    if isinstance(target, MysqlTarget) and target.host in LOCAL_HOSTS:
        return common.find_process(DB_SERVER_NAMES)
    return None


def drop_mariadb(url: str, prefix: str) -> None:
    target = parse(url)
    assert isinstance(target, MysqlTarget)
    conn = pymysql.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        autocommit=True,
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cursor:
            for name in ("accountdb", "status_server"):
                cursor.execute(f"DROP DATABASE IF EXISTS `{prefix}{name}`")
    finally:
        conn.close()


@dataclass(frozen=True)
class Settings:
    logins: int
    runs: int
    warmup: int
    concurrency: int
    game_workers: int
    auth_workers: int
    pool_size: int
    mysql_url: str


def write_cluster_config(workdir: Path, db: dict[str, Any], settings: Settings) -> tuple[Path, int]:
    """The cluster's config file, on free ports; returns it and the login port."""
    broker, login, game, metrics = testkit.free_ports(4)
    path = testkit.write_config(
        workdir / "cluster.toml",
        {
            "cluster": {
                "link_mode": "systemlink",
                "data_dir": str(workdir / "data"),
                "log_level": "warning",
            },
            "broker": {"bind": f"tcp://127.0.0.1:{broker}"},
            "gateway": {"host": "127.0.0.1", "login_port": login, "game_port": game},
            "workers": {"auth": settings.auth_workers, "game": settings.game_workers},
            # The original's login path to the game server (bench/chat.py measures the chat).
            "chat": {"enabled": False},
            "monitor": {"metrics_port": metrics, "summary_interval": 3600.0},
            "db": {**db, "pool_size": settings.pool_size},
        },
    )
    return path, login


def cpu_targets_of(cluster: common.Proc, db_server: psutil.Process | None) -> dict[str, Any]:
    """This process (the load client), each role of the cluster, and the DB server if seen."""
    targets = {"client": psutil.Process()}
    for role, processes in common.cluster_roles(cluster).items():
        for index, process in enumerate(processes, 1):
            targets[role if len(processes) == 1 else f"{role}{index}"] = process
    if db_server is not None:
        targets["db_server"] = db_server
    return targets


def summarize(label: str, result: RunResult) -> None:
    errors = f", errors {dict(result.errors)}" if result.errors else ""
    common.progress(
        f"  {label}: {result.ok} in {result.seconds:.2f}s = {result.rate:,.0f}/s, "
        f"p50 {common.percentile(result.latencies, 50) * 1000:.1f} ms, "
        f"p99 {common.percentile(result.latencies, 99) * 1000:.1f} ms{errors}"
    )


async def measure(
    settings: Settings,
    accounts: list[Account],
    baseline: MysqlBaseline | SqliteBaseline,
    cluster_one: Callable[[Account], Awaitable[None]],
    cluster_cpu: dict[str, psutil.Process],
    baseline_cpu: dict[str, psutil.Process],
) -> tuple[list[RunResult], list[RunResult]]:
    """Warm-up, then `runs` pairs of (baseline, cluster) on the same slices of accounts."""
    c = settings.concurrency
    await baseline.open()
    try:
        warm = accounts[: settings.warmup]
        if warm:
            common.progress(f"  warm-up: {len(warm)} baseline and {len(warm)} cluster logins")
            summarize("warm-up baseline", await drive("warm-up", warm, c, baseline.one))
            summarize("warm-up cluster ", await drive("warm-up", warm, c, cluster_one))
        baselines, clusters = [], []
        for run in range(settings.runs):
            start = settings.warmup + run * settings.logins
            chunk = accounts[start : start + settings.logins]
            tag = f"run {run + 1}/{settings.runs}"
            await asyncio.sleep(0.5)  # the cluster's last status resets land before we start
            meter = common.CpuMeter(baseline_cpu)
            meter.start()
            result = await drive(f"baseline {tag}", chunk, c, baseline.one)
            result.cpu = meter.stop()
            summarize(f"baseline {tag}", result)
            baselines.append(result)
            meter = common.CpuMeter(cluster_cpu)
            meter.start()
            result = await drive(f"cluster {tag}", chunk, c, cluster_one)
            result.cpu = meter.stop()
            summarize(f"cluster  {tag}", result)
            clusters.append(result)
    finally:
        await baseline.close()
    return baselines, clusters


def figures(baselines: list[RunResult], clusters: list[RunResult]) -> dict[str, Any]:
    """Medians over the runs, as printed and as JSON."""
    cluster = common.median(r.rate for r in clusters)
    baseline = common.median(r.rate for r in baselines)
    cpu_names = sorted({name for r in clusters for name in r.cpu})
    errors: Counter[str] = Counter()
    for r in (*clusters, *baselines):
        errors.update(r.errors)
    return {
        "cluster": round(cluster, 1),
        "baseline": round(baseline, 1),
        "ratio": round(cluster / baseline, 3) if baseline else 0.0,
        "p50_ms": round(
            common.median(common.percentile(r.latencies, 50) for r in clusters) * 1000, 2
        ),
        "p99_ms": round(
            common.median(common.percentile(r.latencies, 99) for r in clusters) * 1000, 2
        ),
        "baseline_p50_ms": round(
            common.median(common.percentile(r.latencies, 50) for r in baselines) * 1000, 2
        ),
        "baseline_p99_ms": round(
            common.median(common.percentile(r.latencies, 99) for r in baselines) * 1000, 2
        ),
        "client_cpu_percent": round(common.median(r.cpu.get("client", 0.0) for r in clusters)),
        "cpu_percent": {
            name: round(common.median(r.cpu.get(name, 0.0) for r in clusters)) for name in cpu_names
        },
        "baseline_cpu_percent": {
            name: round(common.median(r.cpu.get(name, 0.0) for r in baselines))
            for name in sorted({name for r in baselines for name in r.cpu})
        },
        "logins": sum(r.ok for r in clusters),
        "errors": dict(errors),
    }


def bench_backend(name: str, settings: Settings) -> dict[str, Any]:
    """Set up the database and the cluster for `name`, measure, tear everything down."""
    total = settings.warmup + settings.runs * settings.logins
    prefix = f"bench{secrets.token_hex(4)}_" if name == "mariadb" else ""
    with tempfile.TemporaryDirectory(prefix=f"bench-login-{name}-") as tmp:
        workdir = Path(tmp)
        if name == "mariadb":
            db = {"url": settings.mysql_url, "prefix": prefix}
        else:
            db = {"url": f"sqlite:///{workdir / 'db'}"}
        config, login_port = write_cluster_config(workdir, db, settings)
        cluster: common.Proc | None = None
        try:
            common.progress(f"{name}: creating {total:,} accounts")
            accounts_file = workdir / "accounts.tsv"
            common.run_cluster_command(
                config, "accounts", "create", "--count", str(total), "--out", str(accounts_file),
                "--no-passwords",  # the keys are used as listed: no argon2 work per account
            )
            accounts = [Account(no, key) for no, _, _, key in read_accounts_file(accounts_file)]
            common.progress(
                f"{name}: starting the cluster (systemlink, {settings.auth_workers} auth workers,"
                f" {settings.game_workers} game worker(s), pool_size {settings.pool_size})"
            )
            cluster = common.start_cluster(config, workdir / "cluster.log", ROLES, "--skip-db-init")
            db_server = local_db_server(settings.mysql_url) if name == "mariadb" else None
            baseline: MysqlBaseline | SqliteBaseline
            if name == "mariadb":
                baseline = MysqlBaseline(settings.mysql_url, prefix, settings.pool_size)
            else:
                baseline = SqliteBaseline(config)
            baseline_cpu: dict[str, Any] = {"client": psutil.Process()}
            if db_server is not None:
                baseline_cpu["db_server"] = db_server
            baselines, clusters = common.run_async(
                measure(
                    settings,
                    accounts,
                    baseline,
                    complete_login("127.0.0.1", login_port),
                    cpu_targets_of(cluster, db_server),
                    baseline_cpu,
                )
            )
            return figures(baselines, clusters)
        except BaseException:
            if cluster is not None and cluster.log_tail(10):
                common.progress(f"{name}: end of the cluster log:\n{cluster.log_tail(10)}")
            raise
        finally:
            if cluster is not None:
                common.progress(f"{name}: stopping the cluster")
                cluster.stop()
            if name == "mariadb":
                try:
                    drop_mariadb(settings.mysql_url, prefix)
                except Exception as exc:
                    common.progress(f"{name}: could not drop the {prefix}* databases: {exc}")


# -- output ----------------------------------------------------------------------------------------


def print_table(report: dict[str, Any]) -> None:
    backends = report["backends"]
    print(
        f"complete logins/s (median of {report['runs']} runs of {report['logins_per_run']:,}, "
        f"concurrency {report['concurrency']}, pool_size {report['pool_size']}, "
        f"{report['auth_workers']} auth + {report['game_workers']} game workers, systemlink)"
    )
    print(
        f"{'backend':8} {'cluster/s':>10} {'baseline/s':>11} {'ratio':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'base p50':>8} {'client CPU':>10}"
    )
    for name, f in backends.items():
        print(
            f"{name:8} {f['cluster']:>10,.0f} {f['baseline']:>11,.0f} {f['ratio']:>6.2f} "
            f"{f['p50_ms']:>7.1f} {f['p99_ms']:>7.1f} {f['baseline_p50_ms']:>8.1f} "
            f"{f['client_cpu_percent']:>9}%"
        )
    print(
        "baseline: the DB statements of one login (v_account read, status 1, status 0) from this"
        " process, same concurrency; ratio = cluster / baseline"
    )
    for name, f in backends.items():
        cpu = " ".join(f"{role}={pct}%" for role, pct in f["cpu_percent"].items())
        print(f"{name} CPU during the cluster runs (% of one core): {cpu}")
        if f["errors"]:
            print(f"{name} errors: {f['errors']}")
    for name, why in report["skipped"].items():
        print(f"{name}: skipped: {why}")
    for name, why in report["failed"].items():
        print(f"{name}: failed: {why}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 runs of 2,000 logins per backend (< 2 minutes for both)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument(
        "--mysql-url",
        default=DEFAULT_MYSQL_URL,
        help="MariaDB server (default $CLUSTER_TEST_MYSQL_URL or %(default)s)",
    )
    parser.add_argument("--logins", type=int, help="complete logins per run (default 10,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients")
    parser.add_argument("--runs", type=int, help="runs per system (default 3; median reported)")
    parser.add_argument("--warmup", type=int, help="warm-up logins per system (default 200)")
    parser.add_argument("--game-workers", type=int, default=1)
    parser.add_argument("--auth-workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=10, help="[db] pool_size")
    args = parser.parse_args(argv)
    quick = args.quick
    args.logins = args.logins or (2000 if quick else 10000)
    args.runs = args.runs or 3
    args.warmup = args.warmup if args.warmup is not None else 200
    for key in ("logins", "runs", "concurrency", "game_workers", "auth_workers", "pool_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.install_signal_handlers()
    settings = Settings(
        logins=args.logins,
        runs=args.runs,
        warmup=args.warmup,
        concurrency=args.concurrency,
        game_workers=args.game_workers,
        auth_workers=args.auth_workers,
        pool_size=args.pool_size,
        mysql_url=args.mysql_url,
    )
    names = BACKENDS if args.backend == "both" else (args.backend,)
    report: dict[str, Any] = {
        "backends": {},
        "skipped": {},
        "failed": {},
        "runs": settings.runs,
        "logins_per_run": settings.logins,
        "warmup": settings.warmup,
        "concurrency": settings.concurrency,
        "pool_size": settings.pool_size,
        "auth_workers": settings.auth_workers,
        "game_workers": settings.game_workers,
        "link_mode": "systemlink",
        "machine": common.machine(),
    }
    try:
        for name in names:
            if name == "mariadb":
                why = mariadb_unreachable(settings.mysql_url)
                if why is not None:
                    common.progress(f"mariadb: skipped: {why}")
                    report["skipped"][name] = why
                    continue
            try:
                report["backends"][name] = bench_backend(name, settings)
            except (RuntimeError, OSError, ValueError) as exc:
                common.progress(f"{name}: failed: {exc}")
                report["failed"][name] = str(exc).splitlines()[0]
    except KeyboardInterrupt:
        common.progress("interrupted; everything started was stopped")
        return 130
    finally:
        common.stop_all()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
