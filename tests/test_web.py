"""The web login (``POST /v1/login``, gateway/web.py) and account passwords, on real processes:
keys it issues work on the login and game ports, refusals all look alike, lockout, rate limit,
expiry, replacement, bad bodies, ``cluster accounts passwd`` and ``create --password-file``."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cluster import passwords
from cluster.config import ConfigError, load
from cluster.messages import GameLoginStatus, LoginStatus
from cluster.testkit import wait_until
from dummy.client import GameClient, login_once
from gateway.web import AddressLimiter, Lockouts
from tests.backends import Backend
from tests.harness import ClusterUnderTest, RoleProcess, run

PASSWORDS = ["correct horse 1", "battery staple 2", "tr0ub4dor&3xyz"]


@dataclass
class Listed:
    no: int
    user_id: str
    nick: str
    key: bytes
    password: str


@dataclass
class WebCluster:
    cluster: ClusterUnderTest
    backend: Backend
    accounts: list[Listed]
    roles: dict[str, RoleProcess]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cluster.web_port}/v1/login"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                          text=True, timeout=120, input=stdin)  # fmt: skip


def read_listing(path: Path) -> list[Listed]:
    out = []
    for line in path.read_text().splitlines():
        no, user_id, nick, key, password = line.split("\t")
        out.append(Listed(int(no), user_id, nick, key.encode(), password))
    return out


def make_web_cluster(
    make_cluster, backend: Backend, mode: str = "non-systemlink",
    start: tuple[str, ...] = ("broker", "game", "auth", "gateway", "web"), **sections: Any,
) -> WebCluster:  # fmt: skip
    sections.setdefault("cluster", {})["link_mode"] = mode
    sections.setdefault("game", {})["verify_key"] = True
    sections.setdefault("web", {})["enabled"] = True
    sections["db"] = {**backend.db_section, "timeout": 2.0}
    cluster = make_cluster(**sections)
    password_file = cluster.dir / "passwords.txt"
    password_file.write_text("".join(p + "\n" for p in PASSWORDS))
    out = cluster.dir / "accounts.tsv"
    created = cli("accounts", "create", "--config", str(cluster.config),
                  "--password-file", str(password_file), "--out", str(out))  # fmt: skip
    assert created.returncode == 0, created.stderr
    roles = {role: cluster.start(role) for role in start}
    return WebCluster(cluster, backend, read_listing(out), roles)


async def post(url: str, body: Any, raw: bytes | None = None) -> tuple[int, Any, float]:
    """(status, parsed JSON answer, seconds) of one POST."""
    data = raw if raw is not None else json.dumps(body).encode()
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(url, data=data) as response:
        text = await response.text()
        assert response.content_type == "application/json", text
        return response.status, json.loads(text), time.monotonic() - started


def web_login(wc: WebCluster, user_id: str, password: str) -> tuple[int, Any]:
    status, answer, _ = run(post(wc.url, {"userid": user_id, "password": password}))
    return status, answer


@pytest.fixture
def wc(make_cluster, backend: Backend) -> WebCluster:
    return make_web_cluster(make_cluster, backend)


# -- the happy path -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["systemlink", "non-systemlink"])
def test_a_web_login_issues_a_key_that_logs_in_on_the_login_and_game_ports(
    make_cluster, backend, mode
):
    wc = make_web_cluster(make_cluster, backend, mode, auth={"key_ttl": 300})
    account = wc.accounts[0]
    status, answer = web_login(wc, account.user_id, account.password)

    assert status == 200, answer
    c = wc.cluster
    assert answer == {
        "account_no": account.no, "session_key": answer["session_key"],
        "login": f"127.0.0.1:{c.login_port}", "game": f"127.0.0.1:{c.game_port}", "chat": None,
        "expires_in": 300,
    }  # fmt: skip
    key = bytes.fromhex(answer["session_key"])
    assert len(key) == 64 and key != account.key
    expires = wc.backend.execute(
        f"SELECT expires FROM accountdb.sessionkey WHERE accountno = {account.no}"
    )[0][0]
    assert abs(int(expires) - (time.time() + 300)) < 10

    async def scenario() -> tuple[Any, Any]:
        reply = await login_once("127.0.0.1", c.login_port, account.no, key)
        client = await GameClient.connect(reply.game_server_ip, reply.game_server_port)
        game = await client.login(account.no, key)
        await client.close()
        return reply, game

    reply, game = run(scenario())
    assert (reply.status, reply.user_id, reply.nickname) == (
        LoginStatus.OK, account.user_id, account.nick
    )
    assert (game.status, game.account_no) == (GameLoginStatus.OK, account.no)
    # the password is never in a log
    for process in wc.roles.values():
        assert account.password not in process.log()
    assert "web=127.0.0.1:" in wc.roles["web"].ready_line


def test_a_new_login_replaces_the_previous_key(wc):
    account = wc.accounts[1]
    first = web_login(wc, account.user_id, account.password)[1]["session_key"]
    second = web_login(wc, account.user_id, account.password)[1]["session_key"]
    assert first != second
    port = wc.cluster.login_port

    async def scenario() -> list[LoginStatus]:
        old = await login_once("127.0.0.1", port, account.no, bytes.fromhex(first))
        new = await login_once("127.0.0.1", port, account.no, bytes.fromhex(second))
        listed = await login_once("127.0.0.1", port, account.no, account.key)
        return [old.status, new.status, listed.status]

    assert run(scenario()) == [LoginStatus.FAIL, LoginStatus.OK, LoginStatus.FAIL]


def test_an_expired_key_is_refused_on_the_login_and_game_ports(make_cluster, backend):
    wc = make_web_cluster(make_cluster, backend, auth={"key_ttl": 1})
    account = wc.accounts[0]
    status, answer = web_login(wc, account.user_id, account.password)
    assert status == 200 and answer["expires_in"] == 1
    key = bytes.fromhex(answer["session_key"])
    time.sleep(2.2)  # expires is rounded up to the next whole second

    async def scenario() -> tuple[Any, Any]:
        reply = await login_once("127.0.0.1", wc.cluster.login_port, account.no, key)
        client = await GameClient.connect("127.0.0.1", wc.cluster.game_port)
        game = await client.login(account.no, key)
        await client.close()
        return reply, game

    reply, game = run(scenario())
    assert reply.status == LoginStatus.SESSION_MISS  # no (valid) key: get a new one
    assert game.status == GameLoginStatus.FAIL  # non-systemlink: the DB key has expired


# -- refusals -------------------------------------------------------------------------------------


def test_wrong_password_unknown_user_and_locked_account_answer_alike(make_cluster, backend):
    wc = make_web_cluster(make_cluster, backend, web={"lockout_failures": 3})
    victim, other = wc.accounts[0], wc.accounts[1]

    async def attempts() -> dict[str, list[tuple[int, Any, float]]]:
        out: dict[str, list[tuple[int, Any, float]]] = {"wrong": [], "unknown": [], "locked": []}
        for _ in range(3):
            out["unknown"].append(await post(wc.url, {"userid": "ID_999", "password": "x" * 9}))
            out["wrong"].append(
                await post(wc.url, {"userid": other.user_id, "password": "wrong one"})
            )
        for _ in range(3):  # locks the victim
            await post(wc.url, {"userid": victim.user_id, "password": "wrong again"})
        for _ in range(3):  # locked: even the right password is refused
            out["locked"].append(
                await post(wc.url, {"userid": victim.user_id, "password": victim.password})
            )
        return out

    results = run(attempts())
    answers = {(code, json.dumps(body)) for group in results.values() for code, body, _ in group}
    assert answers == {(401, '{"error": "invalid credentials"}')}
    # one argon2 check each: the same time class (the fastest of three, within a factor 3)
    fastest = {name: min(t for *_, t in group) for name, group in results.items()}
    assert max(fastest.values()) < 3 * min(fastest.values()), fastest
    # failures are per account: a third account is not locked
    assert web_login(wc, wc.accounts[2].user_id, wc.accounts[2].password)[0] == 200
    log = wc.roles["web"].wait_log(r"account \d+: web login locked")
    assert victim.password not in wc.roles["web"].log(), log


def test_a_lockout_ends_after_its_duration_and_is_counted(make_cluster, backend):
    wc = make_web_cluster(
        make_cluster, backend, start=("broker", "monitor", "web"),
        web={"lockout_failures": 2, "lockout_window": 60, "lockout_duration": 2},
    )  # fmt: skip
    account = wc.accounts[0]
    assert web_login(wc, account.user_id, "not it 1")[0] == 401
    assert web_login(wc, account.user_id, "not it 2")[0] == 401
    assert web_login(wc, account.user_id, account.password)[0] == 401  # locked
    time.sleep(2.2)
    assert web_login(wc, account.user_id, account.password)[0] == 200
    metrics = wait_metrics(
        wc, lambda text: sample_value(text, "cluster_web_logins_total", "ok") >= 1
    )
    assert sample_value(metrics, "cluster_web_logins_total", "invalid") == 2
    assert sample_value(metrics, "cluster_web_logins_total", "locked") == 1
    assert sample_value(metrics, "cluster_web_lockouts_total") == 1
    assert "# HELP cluster_web_logins_total Web login:" in metrics
    assert "# TYPE cluster_web_logins_total counter" in metrics


def test_an_address_over_its_rate_is_refused_and_counted(make_cluster, backend):
    wc = make_web_cluster(
        make_cluster, backend, start=("broker", "monitor", "web"),
        web={"address_rate": 0.5, "address_burst": 3},
    )  # fmt: skip

    async def burst() -> list[int]:
        bodies = [{"userid": "ID_1", "password": "whatever1"}] * 5
        return [(await post(wc.url, body))[0] for body in bodies]

    assert run(burst()) == [401, 401, 401, 429, 429]
    metrics = wait_metrics(
        wc, lambda text: sample_value(text, "cluster_web_logins_total", "rate_limited") >= 2
    )
    assert sample_value(metrics, "cluster_web_logins_total", "rate_limited") == 2
    assert "# HELP cluster_web_logins_total Web login:" in metrics


BAD_BODIES = [
    (b"userid=ID_1&password=x", "the body is not JSON"),
    (b"", "the body is not JSON"),
    (b"\xff\xfe", "the body is not JSON"),
    (b'["ID_1", "pw"]', 'the body must be a JSON object {"userid": ..., "password": ...}'),
    (b'{"userid": "ID_1"}', "'password' must be a non-empty string"),
    (b'{"userid": 7, "password": "x"}', "'userid' must be a non-empty string"),
    (b'{"userid": "ID_1", "password": ""}', "'password' must be a non-empty string"),
]


@pytest.fixture
def sqlite_wc(make_cluster, tmp_path: Path) -> WebCluster:
    return make_web_cluster(make_cluster, Backend("sqlite", tmp_path), start=("broker", "web"))


def test_a_bad_body_is_400_with_one_error(sqlite_wc):
    async def scenario() -> list[tuple[int, Any]]:
        return [(await post(sqlite_wc.url, None, raw))[:2] for raw, _ in BAD_BODIES]

    assert run(scenario()) == [(400, {"error": error}) for _, error in BAD_BODIES]


def test_other_paths_methods_and_big_bodies_answer_json_errors(sqlite_wc):
    async def scenario() -> list[int]:
        async with aiohttp.ClientSession() as session:
            out = []
            for method, path in (("GET", "/v1/login"), ("POST", "/v2/login")):
                url = sqlite_wc.url.replace("/v1/login", path)
                async with session.request(method, url) as r:
                    assert "error" in await r.json()
                    out.append(r.status)
            async with session.post(sqlite_wc.url, data=b"x" * 10_000) as r:
                assert "error" in await r.json()
                out.append(r.status)
            return out

    assert run(scenario()) == [405, 404, 413]


# -- accounts and passwords -----------------------------------------------------------------------


def test_accounts_create_with_a_password_file_lists_and_hashes_them(make_cluster, backend):
    cluster = make_cluster(db=backend.db_section)
    password_file = cluster.dir / "pw.txt"
    password_file.write_text("first password\r\nsecond password\n")
    out = cluster.dir / "accounts.tsv"
    result = cli("accounts", "create", "--config", str(cluster.config), "--password-file",
                 str(password_file), "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = read_listing(out)
    assert [(a.no, a.password) for a in listed] == [(1, "first password"), (2, "second password")]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    userpass = backend.execute("SELECT userpass FROM accountdb.account ORDER BY accountno")
    assert all(row[0].startswith("$argon2id$v=19$m=19456,t=2,p=1$") for row in userpass)
    assert "first password" not in result.stdout + result.stderr

    generated = cli("accounts", "create", "--config", str(cluster.config), "--count", "3",
                    "--out", str(cluster.dir / "more.tsv"))  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    more = read_listing(cluster.dir / "more.tsv")
    assert [a.no for a in more] == [3, 4, 5]
    assert all(len(a.password) == passwords.GENERATED_LENGTH for a in more)
    assert len({a.password for a in more}) == 3

    bare = cli("accounts", "create", "--config", str(cluster.config), "--count", "1",
               "--no-passwords", "--out", str(cluster.dir / "bare.tsv"))  # fmt: skip
    assert bare.returncode == 0, bare.stderr
    assert read_listing(cluster.dir / "bare.tsv")[0].password == ""


@pytest.mark.parametrize(
    ("lines", "args", "problem"),
    [
        ("short\n", (), ":1: a password needs at least 8 characters"),
        ("long enough\nwith\ta tab\n", (), ":2: a password may not hold a tab"),
        ("long enough\n", ("--count", "2"), "--count 2 but .* holds 1 passwords"),
        ("", (), "holds no password"),
    ],
)
def test_a_bad_password_file_is_one_line_naming_the_line(tmp_path, lines, args, problem):
    password_file = tmp_path / "pw.txt"
    password_file.write_text(lines)
    env_config = tmp_path / "c.toml"
    env_config.write_text(f'[cluster]\ndata_dir = "{tmp_path / "data"}"\n')
    result = cli("accounts", "create", "--config", str(env_config), "--password-file",
                 str(password_file), "--out", str(tmp_path / "a.tsv"), *args)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and re.search(problem, result.stderr)
    assert "with\ta tab" not in result.stderr and "short" not in result.stderr.split(":")[-1]


def test_accounts_passwd_sets_a_new_password(wc):
    account = wc.accounts[0]
    config = str(wc.cluster.config)
    result = cli("accounts", "passwd", "--config", config, str(account.no),
                 stdin="a brand new one\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"password of account {account.no} set\n"
    assert "a brand new one" not in result.stdout + result.stderr
    assert web_login(wc, account.user_id, account.password)[0] == 401
    assert web_login(wc, account.user_id, "a brand new one")[0] == 200

    from_file = wc.cluster.dir / "new.txt"
    from_file.write_text("from a file 123\n")
    result = cli("accounts", "passwd", "--config", config, str(account.no), "--password-file",
                 str(from_file))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert web_login(wc, account.user_id, "from a file 123")[0] == 200

    missing = cli("accounts", "passwd", "--config", config, "999", stdin="long enough\n")
    assert missing.returncode == 1
    assert missing.stderr.endswith("\ncluster accounts: no account 999\n")
    short = cli("accounts", "passwd", "--config", config, str(account.no), stdin="tiny\n")
    assert short.returncode == 1 and "at least 8" in short.stderr


def test_an_account_without_a_password_cannot_log_in_on_the_web(wc):
    bare = wc.cluster.dir / "bare.tsv"
    result = cli("accounts", "create", "--config", str(wc.cluster.config), "--count", "1",
                 "--no-passwords", "--out", str(bare))  # fmt: skip
    assert result.returncode == 0, result.stderr
    account = read_listing(bare)[0]
    assert web_login(wc, account.user_id, "anything at all") == (
        401, {"error": "invalid credentials"}
    )


# -- cluster up, config, the pieces ---------------------------------------------------------------


def test_up_starts_the_web_login_and_names_it_in_its_ready_line(make_cluster):
    cluster = make_cluster(web={"enabled": True})
    up = cluster.start("up", "--only", "broker,web")
    assert f"web=127.0.0.1:{cluster.web_port}" in up.ready_line
    assert "roles=broker,web " in up.ready_line
    assert up.stop() == 0
    cluster.reconfigure(web={"enabled": False})
    up = cluster.start("up", "--only", "broker,web")
    assert up.ready_line.startswith("ready roles=broker") and "web" not in up.ready_line
    assert up.stop() == 0


def test_the_web_port_may_not_be_a_gateway_port():
    with pytest.raises(ConfigError, match=r"web\.port: 8091 is also the gateway\.login_port"):
        load(None, env={"CLUSTER_WEB_PORT": "8091"})
    assert load(None, env={"CLUSTER_WEB_PORT": "8091", "CLUSTER_WEB_ENABLED": "false"})


def test_the_address_limiter_is_a_token_bucket():
    limiter = AddressLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # per address
    assert limiter.allow("a", 0.5) and not limiter.allow("a", 0.5)  # 2 per second
    limiter.prune(10.0)
    assert len(limiter) == 0
    assert AddressLimiter(rate=0, burst=1).allow("a", 0.0)  # off


def test_lockouts_count_failures_in_a_window():
    lockouts = Lockouts(failures=3, window=10.0, duration=60.0)
    assert not lockouts.failed(1, 0.0) and not lockouts.failed(1, 1.0)
    assert not lockouts.failed(1, 20.0)  # the first two fell out of the window
    lockouts.succeeded(1)
    assert [lockouts.failed(1, t) for t in (21.0, 22.0, 23.0)] == [False, False, True]
    assert lockouts.locked(1, 50.0) and not lockouts.locked(2, 50.0)
    assert not lockouts.locked(1, 83.0) and lockouts.locks == 1
    assert not Lockouts(failures=0, window=1, duration=1).failed(1, 0.0)


# -- helpers --------------------------------------------------------------------------------------


def sample_value(text: str, name: str, result: str | None = None) -> float:
    """The value of the web role's series of `name` (with ``result`` label `result`, if given)
    in a /metrics text (0 when absent)."""
    for line in text.splitlines():
        if (
            line.startswith(name + "{")
            and 'role="web"' in line
            and (result is None or f'result="{result}"' in line)
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_metrics(wc: WebCluster, predicate: Any) -> str:
    url = f"http://127.0.0.1:{wc.cluster.metrics_port}/metrics"

    def scrape() -> str | None:
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        return text if predicate(text) else None

    return wait_until(scrape, "the web role's counters on /metrics", timeout=15)

