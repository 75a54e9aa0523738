"""deploy/kubernetes must be valid Kubernetes and must match the code it runs.

Offline: every manifest (and what kustomization.yaml generates) validates strictly (unknown fields
fail) against the schemas kubernetes-validate bundles; every container's command parses with the
CLI; the ConfigMap's TOML loads with each pod's environment; probes, Services, HPAs and PDBs point
at what exists; grace periods cover the drains. Then the pods run as real processes with their
own environment and key files, their probes are run against them, and SIGTERM stops each one
cleanly within its grace period. ``CLUSTER_READY_FILE`` (the workers' exec probe) is tested on
real role processes.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cluster import config
from cluster.db.url import MysqlTarget, parse
from cluster.launch.cli import build_parser
from cluster.launch.roles import ROLES
from cluster.security import generate_keys
from cluster.testkit import free_ports, wait_until
from tests.harness import RoleProcess

KUBE = Path(__file__).parent.parent / "deploy" / "kubernetes"
#: The oldest version still widely run, and the newest the package bundles (strict schemas).
KUBE_VERSIONS = ("1.33", "1.37")
CONFIG_PATH = "/etc/iocp-cluster/cluster.toml"
READY_PROBE = ["sh", "-c", 'test -s "$CLUSTER_READY_FILE"']
WORKERS = ("auth", "game", "chat")
POD_IP = "10.1.2.3"
#: What an operator puts in secrets/db.env (README.md); the password as it stands in the URL.
DB_SECRET = {"user": "cluster", "password": "p%40ss%3Aword", "address": "mariadb:3306"}
KEY_FILES = ("broker.key", "broker.key_secret", "client.key", "client.key_secret")
FAKE_SECRETS = {"cluster-db": DB_SECRET, "cluster-curve-keys": {k: "x" for k in KEY_FILES}}
#: Environment names a manifest may set that are not config keys.
NOT_CONFIG = {"CLUSTER_READY_FILE"}


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return data


def _documents() -> list[dict[str, Any]]:
    docs = []
    for name in _kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((KUBE / name).read_text()) if d]
    return docs


DOCS = _documents()


def _of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] == kind}


DEPLOYMENTS = _of_kind("Deployment")
PODS = {**{f"Deployment/{n}": d["spec"]["template"] for n, d in DEPLOYMENTS.items()},
        **{f"Job/{n}": d["spec"]["template"] for n, d in _of_kind("Job").items()}}  # fmt: skip
CONTAINERS = [(f"{where}/{c['name']}", pod, c)
              for where, pod in PODS.items() for c in pod["spec"]["containers"]]  # fmt: skip
IDS = [where for where, _, _ in CONTAINERS]


def _role(container: dict[str, Any]) -> str:
    return str(container["command"][1])


def _generated() -> list[dict[str, Any]]:
    """The ConfigMap and Secrets kustomization.yaml generates (Secrets with stand-in data)."""
    kust = _kustomization()
    out: list[dict[str, Any]] = []
    for gen in kust["configMapGenerator"]:
        data = {Path(f).name: (KUBE / f).read_text() for f in gen["files"]}
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": gen["name"], "namespace": kust["namespace"]},
                    "data": data})  # fmt: skip
    for gen in kust["secretGenerator"]:
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": gen["name"], "namespace": kust["namespace"]},
                    "stringData": FAKE_SECRETS[gen["name"]]})  # fmt: skip
    return out


def _pod_env(container: dict[str, Any], pod_ip: str = POD_IP) -> dict[str, str]:
    """The environment Kubernetes gives `container`: values in order, ``$(VAR)`` expanded from
    the ones before (an unknown reference fails: Kubernetes would leave it unexpanded)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", item["value"]):
                assert ref in env, f"{item['name']}: $({ref}) is not defined before it"
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                       lambda m: env[m[1]], item["value"])  # fmt: skip
        elif "fieldRef" in item["valueFrom"]:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", item
            env[item["name"]] = pod_ip
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = FAKE_SECRETS[ref["name"]][ref["key"]]
    return env


def _named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in ports, f"port {port!r} is not a port of container {container['name']}"
    return int(ports[port])


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _selected(selector: dict[str, str]) -> list[str]:
    return [name for name, d in DEPLOYMENTS.items()
            if _matches(selector, d["spec"]["template"]["metadata"]["labels"])]  # fmt: skip


def _pre_stop_seconds(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if command is None:
        return 0.0
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


# -- the manifests are Kubernetes --------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(_kustomization()["resources"]) == sorted(files)
    assert _kustomization()["namespace"] == _of_kind("Namespace").popitem()[0]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_manifest_validates_strictly(version):
    for doc in DOCS + _generated():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} against {version}: {exc}")


@pytest.mark.parametrize(
    ("where", "path", "bad"),
    [
        ("Deployment/game", ["spec", "template", "spec", "containers", 0], "readynessProbe"),
        ("HorizontalPodAutoscaler/game", ["spec"], "targetCPUUtilizationPercentage"),
        ("PodDisruptionBudget/gateway", ["spec"], "maxUnavailabe"),
    ],
)
def test_strict_validation_rejects_a_misspelt_field(where, path, bad):
    """A typo would be silently dropped by a lenient check (and by kubectl without --validate)."""
    kind, name = where.split("/")
    doc = copy.deepcopy(_of_kind(kind)[name])
    node = doc
    for step in path:
        node = node[step]
    node[bad] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


# -- the manifests run the code's roles with the code's config ---------------------------------


def test_every_role_has_one_deployment():
    roles = [_role(c) for where, _, c in CONTAINERS if where.startswith("Deployment/")]
    assert sorted(roles) == sorted(ROLES)
    for name, deployment in DEPLOYMENTS.items():
        assert [_role(c) for c in deployment["spec"]["template"]["spec"]["containers"]] == [name]
    assert [c["command"][1:3] for w, _, c in CONTAINERS if w.startswith("Job/")] == [["db", "init"]]


@pytest.mark.parametrize(("where", "pod", "container"), CONTAINERS, ids=IDS)
def test_container_command_parses_with_the_cli_and_reads_the_configmap(where, pod, container):
    argv = container["command"]
    assert argv[0] == "cluster" and "args" not in container, where
    args = build_parser().parse_args(argv[1:])  # SystemExit (a failure) when it does not parse
    assert args.config == CONFIG_PATH
    assert container["image"] == "iocp-cluster:latest"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mount = mounts[CONFIG_PATH]
    assert mount["subPath"] == "cluster.toml" and mount["readOnly"]
    configmap = volumes[mount["name"]]["configMap"]["name"]
    generators = {g["name"]: g["files"] for g in _kustomization()["configMapGenerator"]}
    assert generators[configmap] == ["cluster.toml"]


@pytest.mark.parametrize(("where", "pod", "container"), CONTAINERS, ids=IDS)
def test_configmap_toml_loads_with_the_pods_environment(where, pod, container):
    env = _pod_env(container)
    loaded = config.load(KUBE / "cluster.toml", env=env)
    assert loaded.broker.endpoint == "tcp://broker:5555"
    assert loaded.security.curve
    target = parse(loaded.db.url)
    if _role(container) == "broker":  # the one role that opens no database
        assert "CLUSTER_DB_URL" not in env
        return
    assert isinstance(target, MysqlTarget), f"{where} has no CLUSTER_DB_URL from the Secret"
    assert (target.user, target.password, f"{target.host}:{target.port}") == (
        "cluster", "p@ss:word", "mariadb:3306")  # fmt: skip
    if _role(container) == "gateway":
        data_port = _named_port(container, "data")
        assert loaded.gateway.data_bind == f"tcp://{POD_IP}:{data_port}"
    keys = [m for m in container["volumeMounts"] if m["name"] == "keys"]
    if _role(container) != "db":
        assert [m["mountPath"] for m in keys] == [loaded.security.keys_dir]


@pytest.mark.parametrize(("where", "pod", "container"), CONTAINERS, ids=IDS)
def test_every_env_name_is_understood(where, pod, container):
    """CLUSTER_* names are config keys (a misspelt section would be ignored by the config, so it
    is checked here); the others exist only to be expanded into a later value."""
    names = [item["name"] for item in container.get("env", [])]
    assert len(names) == len(set(names)), f"{where}: a name is set twice"
    values = " ".join(item.get("value", "") for item in container.get("env", []))
    for name in names:
        if name in NOT_CONFIG:
            continue
        if name.startswith(config.ENV_PREFIX):
            rest = name[len(config.ENV_PREFIX):].lower()
            keys = {f"{s}_{k}" for s, cls in config.SECTIONS.items()
                    for k in cls.__dataclass_fields__}  # fmt: skip
            assert rest in keys, f"{where}: {name} is no config key"
        else:
            assert f"$({name})" in values, f"{where}: {name} is set but never used"


def test_the_db_url_survives_a_password_with_reserved_characters():
    """The README asks for the password percent-encoded in secrets/db.env: check what an
    operator who forgets gets (a clear error, not a login as someone else)."""
    container = next(c for _, _, c in CONTAINERS if _role(c) == "game")
    env = _pod_env(container)
    env["CLUSTER_DB_URL"] = env["CLUSTER_DB_URL"].replace("p%40ss%3Aword", "p@ss/word")
    with pytest.raises(ValueError, match=r"db\.url"):
        parse(config.load(KUBE / "cluster.toml", env=env).db.url)


def test_probes_and_ports_match_the_config():
    loaded = config.load(KUBE / "cluster.toml", env={})
    by_role = {_role(c): c for where, _, c in CONTAINERS if where.startswith("Deployment/")}

    def port(role: str, probe: str) -> int:
        spec = by_role[role][probe]
        action = spec.get("tcpSocket") or spec.get("httpGet")
        return _named_port(by_role[role], action["port"])

    gateway = by_role["gateway"]
    assert port("gateway", "readinessProbe") == loaded.gateway.game_port
    assert port("gateway", "livenessProbe") == loaded.gateway.login_port
    assert {_named_port(gateway, n) for n in ("login", "game", "chat")} == {
        loaded.gateway.login_port, loaded.gateway.game_port, loaded.gateway.chat_port}  # fmt: skip
    broker_port = int(loaded.broker.bind.rsplit(":", 1)[1])
    assert port("broker", "readinessProbe") == port("broker", "livenessProbe") == broker_port
    assert port("monitor", "readinessProbe") == loaded.monitor.metrics_port
    assert by_role["monitor"]["readinessProbe"]["httpGet"]["path"] == "/metrics"
    assert port("web", "readinessProbe") == loaded.web.port
    for role in WORKERS:
        worker = by_role[role]
        assert worker["readinessProbe"]["exec"]["command"] == READY_PROBE
        assert "CLUSTER_READY_FILE" in _pod_env(worker)
        assert "ports" not in worker


def test_services_select_pods_and_name_their_ports():
    loaded = config.load(KUBE / "cluster.toml", env={})
    services = _of_kind("Service")
    for name, service in services.items():
        selected = _selected(service["spec"]["selector"])
        assert len(selected) == 1, f"Service {name} selects {selected}"
        container = DEPLOYMENTS[selected[0]]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            assert _named_port(container, port["targetPort"]) == port["port"], (name, port)
    host, port = loaded.broker.endpoint.removeprefix("tcp://").rsplit(":", 1)
    assert host in services and [p["port"] for p in services[host]["spec"]["ports"]] == [int(port)]
    gateway = services["gateway"]["spec"]
    assert gateway["type"] == "LoadBalancer"
    assert {p["port"] for p in gateway["ports"]} == {
        loaded.gateway.login_port, loaded.gateway.game_port, loaded.gateway.chat_port}  # fmt: skip
    assert set(services) == {"broker", "gateway", "monitor", "web"}


def test_deployment_selectors_match_their_pods():
    for name, deployment in DEPLOYMENTS.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert _matches(selector, deployment["spec"]["template"]["metadata"]["labels"])
        assert _selected(selector) == [name], f"{name}'s selector also takes {_selected(selector)}"


def test_hpas_scale_the_worker_pools_on_cpu():
    hpas = _of_kind("HorizontalPodAutoscaler")
    assert sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()) == sorted(WORKERS)
    for name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
        target = DEPLOYMENTS[ref["name"]]
        # With `replicas` set, every `kubectl apply` would reset the count the HPA chose.
        assert "replicas" not in target["spec"], f"{ref['name']}: the HPA owns replicas"
        assert hpa["spec"]["minReplicas"] >= 2
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        for container in target["spec"]["template"]["spec"]["containers"]:
            assert container["resources"]["requests"]["cpu"], f"{name}: no CPU request"


def test_pdbs_cover_the_pools_and_the_gateway():
    pdbs = _of_kind("PodDisruptionBudget")
    covered = []
    for name, pdb in pdbs.items():
        selected = _selected(pdb["spec"]["selector"]["matchLabels"])
        assert len(selected) == 1, f"PDB {name} selects {selected}"
        covered += selected
        assert pdb["spec"]["maxUnavailable"] == 1
    assert sorted(covered) == sorted([*WORKERS, "gateway"])
    assert DEPLOYMENTS["gateway"]["spec"]["replicas"] >= 2  # else its PDB blocks every drain


def test_grace_periods_cover_the_drains():
    """kubelet sends SIGTERM after preStop, SIGKILL at the grace period's end: the drain bound
    the code sets (plus its preStop and a 5 s margin for closing) must fit."""
    from gateway.server import DRAIN_TIMEOUT as GATEWAY_DRAIN
    from gateway.web import SHUTDOWN_TIMEOUT as WEB_DRAIN
    from workers.auth import DRAIN_TIMEOUT as AUTH_DRAIN
    from workers.host import SHUTDOWN_GRACE

    loaded = config.load(KUBE / "cluster.toml", env={})
    drains = {"gateway": min(loaded.gateway.reply_timeout, GATEWAY_DRAIN), "auth": AUTH_DRAIN,
              "game": SHUTDOWN_GRACE, "chat": SHUTDOWN_GRACE, "web": WEB_DRAIN,
              "broker": 0.0, "monitor": 0.0}  # fmt: skip
    for name, deployment in DEPLOYMENTS.items():
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        needed = _pre_stop_seconds(container) + drains[name] + 5
        assert spec["terminationGracePeriodSeconds"] >= needed, name
    for name in ("gateway", "web"):  # behind a Service: let it drop the pod before it stops
        assert _pre_stop_seconds(DEPLOYMENTS[name]["spec"]["template"]["spec"]["containers"][0])
    for name in ("broker", "monitor"):  # one per cluster: never two at once
        assert DEPLOYMENTS[name]["spec"]["strategy"]["type"] == "Recreate"
        assert DEPLOYMENTS[name]["spec"]["replicas"] == 1


@pytest.mark.parametrize(("where", "pod", "container"), CONTAINERS, ids=IDS)
def test_pods_run_as_non_root_without_privileges(where, pod, container):
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["memory"]


def _key_items(pod: dict[str, Any]) -> list[str]:
    volumes = [v for v in pod["spec"]["volumes"] if v["name"] == "keys"]
    if not volumes:
        return []
    assert volumes[0]["secret"]["secretName"] == "cluster-curve-keys"
    items = volumes[0]["secret"]["items"]
    assert all(i["key"] == i["path"] for i in items)
    return sorted(i["key"] for i in items)


def _db_envs() -> list[str]:
    gen = {g["name"]: g for g in _kustomization()["secretGenerator"]}["cluster-db"]
    return list(gen["envs"])


def test_the_keys_secret_holds_what_cluster_keys_generate_writes(tmp_path):
    written = sorted(p.name for p in generate_keys(tmp_path / "keys"))
    gen = {g["name"]: g for g in _kustomization()["secretGenerator"]}["cluster-curve-keys"]
    assert sorted(Path(f).name for f in gen["files"]) == written == sorted(KEY_FILES)
    assert all(f.startswith("secrets/") for f in gen["files"] + _db_envs())
    assert "secrets/" in (KUBE / ".gitignore").read_text().splitlines()
    readme = (KUBE / "README.md").read_text()
    for key in DB_SECRET:
        assert f"{key}=" in readme, f"README.md does not say how to set {key} in secrets/db.env"


# -- the pods as real processes ----------------------------------------------------------------


def _run_probe(probe: dict[str, Any], env: dict[str, str], port: int) -> bool:
    """One probe, the way kubelet runs it, against a process on loopback."""
    if "exec" in probe:
        done = subprocess.run(probe["exec"]["command"], env=env, check=False, timeout=30)
        return done.returncode == 0
    if "tcpSocket" in probe:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            return False
        return True
    url = f"http://127.0.0.1:{port}{probe['httpGet']['path']}"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return 200 <= reply.status < 400
    except OSError:
        return False


def test_the_pods_start_pass_their_probes_and_stop_within_grace(tmp_path):
    """Each Deployment's container runs as a process with its pod's environment and only the
    key files its Secret volume mounts; what Kubernetes gives a pod (its own IP and ports, the
    broker Service, MySQL) is stood in for on loopback. The db-init Job runs first."""
    all_keys = tmp_path / "all-keys"
    generate_keys(all_keys)
    data = tmp_path / "data"
    bus, login, game, chat, web, metrics, data_port = free_ports(7)
    local = {
        "CLUSTER_BROKER_BIND": f"tcp://127.0.0.1:{bus}",
        "CLUSTER_BROKER_ENDPOINT": f"tcp://127.0.0.1:{bus}",
        "CLUSTER_CLUSTER_DATA_DIR": str(data),
        "CLUSTER_DB_URL": f"sqlite:///{data}",
        "CLUSTER_GATEWAY_HOST": "127.0.0.1",
        "CLUSTER_GATEWAY_LOGIN_PORT": str(login),
        "CLUSTER_GATEWAY_GAME_PORT": str(game),
        "CLUSTER_GATEWAY_CHAT_PORT": str(chat),
        "CLUSTER_GATEWAY_DATA_BIND": f"tcp://127.0.0.1:{data_port}",
        "CLUSTER_WEB_HOST": "127.0.0.1",
        "CLUSTER_WEB_PORT": str(web),
        "CLUSTER_MONITOR_METRICS_HOST": "127.0.0.1",
        "CLUSTER_MONITOR_METRICS_PORT": str(metrics),
    }
    configmap = tmp_path / "cluster.toml"
    configmap.write_text((KUBE / "cluster.toml").read_text())

    def pod_env(name: str, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        keys = tmp_path / f"{name}-keys"
        keys.mkdir()
        for item in _key_items(pod):
            (keys / item).write_bytes((all_keys / item).read_bytes())
        env = {**_pod_env(container, pod_ip="127.0.0.1"), **local}
        env["CLUSTER_SECURITY_KEYS_DIR"] = str(keys)
        if "CLUSTER_READY_FILE" in env:  # its own /tmp in a pod
            env["CLUSTER_READY_FILE"] = str(tmp_path / f"{name}-ready")
        return env

    def argv(container: dict[str, Any]) -> list[str]:
        return [a if a != CONFIG_PATH else str(configmap) for a in container["command"][1:]]

    job = PODS["Job/db-init"]
    job_env = {**os.environ, **pod_env("db-init", job, job["spec"]["containers"][0])}
    done = subprocess.run([sys.executable, "-m", "cluster", *argv(job["spec"]["containers"][0])],
                          env=job_env, capture_output=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")

    ports = {"broker": bus, "gateway": game, "web": web, "monitor": metrics}
    order = ["broker", "monitor", "game", "chat", "auth", "gateway", "web"]
    assert sorted(order) == sorted(DEPLOYMENTS)
    started: list[tuple[str, RoleProcess, dict[str, Any], float]] = []
    try:
        for name in order:
            pod = DEPLOYMENTS[name]["spec"]["template"]
            container = pod["spec"]["containers"][0]
            env = pod_env(name, pod, container)
            probe = container["readinessProbe"]
            full_env = {**os.environ, **env}
            if "exec" in probe:
                assert not _run_probe(probe, full_env, 0), f"{name} ready before it started"
            process = RoleProcess(argv(container), tmp_path / f"{name}.log", env, timeout=60)
            started.append((name, process, container, pod["spec"]["terminationGracePeriodSeconds"]))
            wait_until(lambda p=probe, e=full_env, n=name: _run_probe(p, e, ports.get(n, 0)),
                       f"{name}'s readiness probe passes", timeout=30,
                       detail=process.log)  # fmt: skip
            if "livenessProbe" in container:
                live = container["livenessProbe"]
                live_port = login if name == "gateway" else ports[name]
                assert _run_probe(live, full_env, live_port), f"{name}'s liveness probe fails"
        for name, process, container, grace in reversed(started):
            began = time.monotonic()
            code = process.stop(signal.SIGTERM, timeout=grace)
            assert code == 0, f"{name} exited {code} on SIGTERM:\n{process.log()}"
            assert time.monotonic() - began < grace - _pre_stop_seconds(container)
    finally:
        for _, process, _, _ in started:
            if process.proc.poll() is None:
                process.kill()


# -- CLUSTER_READY_FILE --------------------------------------------------------------------------


def _config(tmp_path: Path) -> tuple[Path, str]:
    (bus,) = free_ports(1)
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[broker]\nbind = "tcp://127.0.0.1:{bus}"\nheartbeat_interval = 0.5\n'
        '[game]\nverify_key = false\n'
    )
    return path, f"tcp://127.0.0.1:{bus}"


def test_a_role_writes_its_ready_line_to_the_ready_file(tmp_path):
    """The broker (cluster/broker.py) and a game worker (cluster/role.py) announce readiness
    through different callers: both write exactly the line they printed, and nothing else."""
    path, _ = _config(tmp_path)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    processes = []
    try:
        for role in ("broker", "game"):
            ready_file = probe_dir / f"{role}-ready"
            env = {"CLUSTER_READY_FILE": str(ready_file)}
            probe = subprocess.run(READY_PROBE, env={**os.environ, **env}, check=False)
            assert probe.returncode != 0
            process = RoleProcess([role, "--config", str(path)], tmp_path / f"{role}.log", env)
            processes.append(process)
            assert process.ready_line.startswith(f"ready role={role} ")
            assert ready_file.read_text() == process.ready_line + "\n"
            probe = subprocess.run(READY_PROBE, env={**os.environ, **env}, check=False)
            assert probe.returncode == 0
        assert sorted(p.name for p in probe_dir.iterdir()) == ["broker-ready", "game-ready"]
    finally:
        for process in reversed(processes):
            process.kill()


def test_a_ready_file_that_cannot_be_written_is_logged_and_the_role_goes_on(tmp_path):
    path, _ = _config(tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = {"CLUSTER_READY_FILE": str(blocker / "ready")}
    process = RoleProcess(["broker", "--config", str(path)], tmp_path / "broker.log", env)
    try:
        process.wait_log(r"cannot write CLUSTER_READY_FILE .*not-a-dir/ready")
        assert process.proc.poll() is None, "the role died of its ready file"
        assert process.ready_line.startswith("ready role=broker")
    finally:
        assert process.stop() == 0
    probe = subprocess.run(READY_PROBE, env={**os.environ, **env}, check=False)
    assert probe.returncode != 0


def test_an_empty_variable_writes_no_file(tmp_path):
    path, _ = _config(tmp_path)
    process = RoleProcess(["broker", "--config", str(path)], tmp_path / "broker.log",
                          {"CLUSTER_READY_FILE": ""})  # fmt: skip
    try:
        assert process.ready_line.startswith("ready role=broker ")
        assert "CLUSTER_READY_FILE" not in process.log()
    finally:
        assert process.stop() == 0
