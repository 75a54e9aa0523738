"""The container image and the compose stack (deploy/docker/), for real.

`test_container_smoke` runs deploy/container-smoke.sh: it builds the image on a debootstrapped
Debian with podman, runs compose.yaml under podman-compose with MariaDB, drives it from this host
with the dummy in both link modes (the second on a CurveZMQ bus, compose.curve.yaml), kills a
game container under load, stops the stack, and
removes what it made. It needs root, podman, runc, debootstrap and podman-compose (installed by
.ci/run): missing, it fails under ``CI=true`` and skips otherwise. The other tests check the
image's entrypoint and the compose file's contract without containers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.db.url import MysqlTarget, parse
from gateway.web import SHUTDOWN_TIMEOUT
from workers.auth import DRAIN_TIMEOUT

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "deploy" / "docker"
SMOKE = ROOT / "deploy" / "container-smoke.sh"
ROLES = ("broker", "monitor", "auth", "game", "chat", "gateway", "web")
STAGES = ("tools", "base", "images", "sqlite-volume", "up-systemlink", "accounts",
          "dummy-systemlink", "game-killed", "stop-drains", "up-non-systemlink",
          "dummy-non-systemlink")  # fmt: skip


def _entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """deploy/docker/entrypoint.sh as the image runs it, with this venv's `cluster` and python3
    first on PATH (the image's venv is on its PATH the same way)."""
    bin_dir = str(Path(sys.executable).parent)
    return subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), *args],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("password", [
    "plain-password",
    "p@ss:w/rd%?#",  # every character a URL gives meaning to
    "quote'double\"back\\slash",
    "spaces and\ttab",
    "ünïcødé-密码",
    "%41%40",  # looks percent-encoded already: must not be decoded
])  # fmt: skip
def test_entrypoint_makes_the_db_url_from_the_secret(tmp_path, password):
    secret = tmp_path / "db_password"
    secret.write_text(password + "\n", encoding="utf-8")  # the newline `echo >` leaves is dropped
    result = _entrypoint(tmp_path, "config", "--show-secrets", DB_PASSWORD_FILE=str(secret),
                         DB_USER="cluster", DB_ADDRESS="mariadb:3306")  # fmt: skip
    assert result.returncode == 0, result.stderr
    url = tomllib.loads(result.stdout)["db"]["url"]
    target = parse(url)
    assert isinstance(target, MysqlTarget)
    assert (target.user, target.password, target.host, target.port) == (
        "cluster", password, "mariadb", 3306)


def test_entrypoint_keeps_a_db_url_given_outright(tmp_path):
    secret = tmp_path / "db_password"
    secret.write_text("from-the-file\n")
    result = _entrypoint(tmp_path, "config", "--show-secrets", DB_PASSWORD_FILE=str(secret),
                         DB_USER="cluster", DB_ADDRESS="mariadb:3306",
                         CLUSTER_DB_URL="mysql://other:given@db.example:3307")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["db"]["url"] == "mysql://other:given@db.example:3307"


@pytest.mark.parametrize("case", ["missing", "empty", "no-user", "no-address"])
def test_entrypoint_refuses_an_unusable_secret_with_one_line(tmp_path, case):
    secret = tmp_path / "db_password"
    if case != "missing":
        secret.write_text("" if case == "empty" else "pw\n")
    env = {"DB_PASSWORD_FILE": str(secret), "DB_USER": "cluster", "DB_ADDRESS": "mariadb:3306"}
    env.pop({"no-user": "DB_USER", "no-address": "DB_ADDRESS"}.get(case, ""), None)
    result = _entrypoint(tmp_path, "config", **env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "DB_PASSWORD_FILE" in result.stderr


def test_entrypoint_removes_a_stale_ready_file_as_the_main_process(tmp_path):
    """A container restarted by its restart policy keeps its /tmp: the ready line of the run
    before must not make the new run look healthy. The entrypoint is then PID 1 (here: in a new
    PID namespace, as in a container)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a PID namespace")
    ready = tmp_path / "cluster-ready"
    ready.write_text("ready role=game pid=1\n")
    bin_dir = str(Path(sys.executable).parent)
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "sh", str(DOCKER / "entrypoint.sh"), "config"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CLUSTER_READY_FILE": str(ready)},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not ready.exists()


def test_entrypoint_run_beside_the_role_keeps_its_ready_file(tmp_path):
    """`docker compose exec broker cluster-entrypoint accounts ...` (not PID 1, its parent outside
    the container) must not make the broker's container unhealthy."""
    ready = tmp_path / "cluster-ready"
    ready.write_text("ready role=broker pid=1\n")
    result = _entrypoint(tmp_path, "config", CLUSTER_READY_FILE=str(ready))
    assert result.returncode == 0, result.stderr
    assert ready.read_text() == "ready role=broker pid=1\n"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def _seconds(duration: str) -> float:
    assert duration.endswith("s") and duration[:-1].isdigit(), duration
    return float(duration[:-1])


def test_compose_runs_every_role_after_the_database_is_initialised():
    services = _compose()["services"]
    assert set(services) == {"mariadb", "dbinit", *ROLES}
    assert services["mariadb"]["image"] == "${IOCP_MARIADB_IMAGE:-mariadb:11}"
    assert services["mariadb"]["healthcheck"]["test"][0] == "CMD"
    assert services["dbinit"]["command"][:2] == ["db", "init"]
    assert services["dbinit"]["restart"] == "no"
    assert services["dbinit"]["depends_on"] == {"mariadb": {"condition": "service_healthy"}}
    for role in ROLES:
        service = services[role]
        assert service["command"][0] == role
        assert service["depends_on"] == {
            "dbinit": {"condition": "service_completed_successfully"}}
        assert service["restart"] == "unless-stopped"
        assert "db_password" in service["secrets"]
        assert service["environment"]["DB_PASSWORD_FILE"] == "/run/secrets/db_password"
        assert "network_mode" not in service  # a bridge network for users
    for pool in ("auth", "game", "chat"):  # podman-compose scales only with mode: replicated
        assert services[pool]["deploy"] == {"mode": "replicated", "replicas": 2}


def test_compose_stop_grace_periods_cover_the_drains():
    """SIGKILL must not cut a drain short: auth answers its logins in flight (DRAIN_TIMEOUT),
    the gateway its forwarded logins (gateway.reply_timeout, 10 s by default), web its requests
    (SHUTDOWN_TIMEOUT); game and chat close their sessions within a few seconds."""
    services = _compose()["services"]
    bounds = {"auth": DRAIN_TIMEOUT, "gateway": 10.0, "web": SHUTDOWN_TIMEOUT, "game": 5.0,
              "chat": 5.0, "broker": 1.0, "monitor": 1.0}  # fmt: skip
    for role, bound in bounds.items():
        grace = _seconds(services[role].get("stop_grace_period", "10s"))
        assert grace >= bound + 5, (role, grace, bound)


def test_compose_db_password_comes_from_a_secret_file_not_the_file():
    compose = _compose()
    assert compose["secrets"]["db_password"] == {
        "file": "${IOCP_DB_PASSWORD_FILE:-./secrets/db_password}"}
    text = (DOCKER / "compose.yaml").read_text() + (DOCKER / "cluster.toml").read_text()
    assert "mysql://" not in text and "MARIADB_PASSWORD:" not in text
    assert "secrets/" in (DOCKER / ".gitignore").read_text().split()


def _container_tools_missing() -> list[str]:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    venv_compose = Path(sys.executable).parent / "podman-compose"
    if shutil.which("podman-compose") is None and not venv_compose.exists():
        missing.append("podman-compose")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@pytest.mark.timeout(1020)
def test_container_smoke(tmp_path):
    missing = _container_tools_missing()
    if missing:
        why = f"container smoke test needs {', '.join(missing)} (.ci/run installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    logs = tmp_path / "logs"
    # The tools of the environment running the tests (its venv's cluster and podman-compose)
    # come first, wherever the checkout is.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "SMOKE_LOG_DIR": str(logs), "SMOKE_KEEP_BASE": "1"}
    # Its own process group: on a timeout SIGTERM reaches the script and whatever it runs, and
    # the script's trap still removes what it made.
    proc = subprocess.Popen(["bash", str(SMOKE)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=840)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        pytest.fail(f"container smoke test still running after 14 min:\n{stdout}{stderr}")
    output = stdout + stderr
    assert proc.returncode == 0, output
    lines = stdout.splitlines()
    for stage in STAGES:
        assert any(line.startswith(f"smoke: ok {stage}: ") for line in lines), (stage, output)
    assert lines[-1] == "smoke: PASS", output
    killed = next(line for line in lines if line.startswith("smoke: ok game-killed: "))
    assert "container restarted healthy" in killed and "no errors" in killed
