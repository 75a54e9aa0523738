#!/usr/bin/env bash
# Container smoke test: the image and the compose stack, for real, with MariaDB (podman).
#
#   deploy/container-smoke.sh
#
# Builds deploy/docker/Dockerfile on a Debian base made by debootstrap (cached as a tarball under
# $SMOKE_CACHE, default /var/cache/iocp-smoke, so a second run skips debootstrap), and a MariaDB
# image from deploy/docker/mariadb-debian on the same base (Docker Hub is not needed). Then runs
# deploy/docker/compose.yaml under podman-compose (bridge network, published ports, the
# db_password secret): mariadb -> db init -> broker, monitor, auth x2, game x2, chat x2, gateway,
# web; drives it from this host with `cluster dummy run --path login` in both link modes, the
# second with CurveZMQ on the bus (compose.curve.yaml): exit 0, connect_total == accept_total, no
# error. Under load it kills one game container and checks that
# its sessions log in again on the other processes and that the container is restarted, and
# checks that `podman-compose stop` drains every role to exit 0.
#
# Each stage prints one line, `smoke: ok STAGE: ...`; the first failure prints
# `smoke: FAIL STAGE: reason` and the script exits non-zero. The last line is `smoke: PASS` or
# `smoke: FAILED at stage STAGE`. Everything it made (containers, network, volumes, images) is
# removed on exit, also on failure or Ctrl-C; the base image too unless SMOKE_KEEP_BASE=1 (the
# tarball in $SMOKE_CACHE always stays).
#
# Needs root, podman and runc (Debian), debootstrap, podman-compose (PyPI), and `cluster` (the
# repository's .venv, else PATH). Environment: SMOKE_CACHE, SMOKE_KEEP_BASE, SMOKE_CLIENTS (40),
# SMOKE_MIRROR (the Debian mirror, default http://deb.debian.org/debian), SMOKE_LOG_DIR (where
# the build and compose logs go; default a temporary directory, removed unless the run failed).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DOCKER_DIR="$REPO/deploy/docker"
CACHE=${SMOKE_CACHE:-/var/cache/iocp-smoke}
CLIENTS=${SMOKE_CLIENTS:-40}
MIRROR=${SMOKE_MIRROR:-http://deb.debian.org/debian}
RUN_ID="$$-$(date +%s)"
PROJECT="iocp-smoke-$$"
BASE_TAR="$CACHE/debian-bookworm-minbase.tar.gz"
BASE_IMAGE="localhost/iocp-smoke-base:bookworm"
CLUSTER_IMAGE="localhost/iocp-cluster:smoke-$RUN_ID"
MARIADB_IMAGE="localhost/iocp-mariadb:smoke-$RUN_ID"
WORK=$(mktemp -d /tmp/iocp-smoke.XXXXXX)
LOGS=${SMOKE_LOG_DIR:-$WORK/logs}
mkdir -p "$LOGS"
STAGE=setup

# podman as this machine kind runs it: runc (crun's cgroup handling is refused), cgroupfs (no
# systemd), and explicit rlimits (the defaults are refused).
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=1024:1024)

say() { echo "smoke: $*"; }
ok() { say "ok $STAGE: $*"; }
fail() { say "FAIL $STAGE: $*" >&2; exit 1; }
podman_q() { "${PODMAN[@]}" "$@" 2> >(grep -v 'systemd' >&2); }

cluster_bin() {
  if [ -x "$REPO/.venv/bin/cluster" ]; then echo "$REPO/.venv/bin/cluster"
  else command -v cluster || true; fi
}
CLUSTER=$(cluster_bin)
PYTHON="$(dirname "${CLUSTER:-/usr/bin/python3}")/python3"
[ -x "$PYTHON" ] || PYTHON=python3
COMPOSE_BIN=$(command -v podman-compose || { [ -x "$REPO/.venv/bin/podman-compose" ] && echo "$REPO/.venv/bin/podman-compose"; } || true)

compose() {
  # The project's compose.yaml plus this run's override (link mode, limits); every podman call
  # of podman-compose gets the same global flags.
  "$COMPOSE_BIN" -p "$PROJECT" --podman-args "--runtime runc --cgroup-manager cgroupfs" \
    -f "$DOCKER_DIR/compose.yaml" "${CURVE_FILE[@]}" -f "$WORK/compose.smoke.yaml" "$@"
}
CURVE_FILE=()  # -f compose.curve.yaml once the run turns CurveZMQ on

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [ -n "${dummy_pid:-}" ] && kill "$dummy_pid" 2>/dev/null  # a dummy still running in the background
  if [ -n "${COMPOSE_BIN:-}" ] && [ -f "$WORK/compose.smoke.yaml" ]; then
    compose down -v -t 5 >>"$LOGS/compose.log" 2>&1
  fi
  local ids
  ids=$("${PODMAN[@]}" ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null)
  [ -n "$ids" ] && "${PODMAN[@]}" rm -f -v $ids >/dev/null 2>&1
  ids=$("${PODMAN[@]}" ps -aq --filter "label=iocp-smoke=$RUN_ID" 2>/dev/null)
  [ -n "$ids" ] && "${PODMAN[@]}" rm -f -v $ids >/dev/null 2>&1
  for v in $("${PODMAN[@]}" volume ls -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null) \
           "iocp-smoke-data-$RUN_ID"; do
    "${PODMAN[@]}" volume rm -f "$v" >/dev/null 2>&1
  done
  for n in $("${PODMAN[@]}" network ls -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null); do
    "${PODMAN[@]}" network rm -f "$n" >/dev/null 2>&1
  done
  "${PODMAN[@]}" rmi -f "$CLUSTER_IMAGE" "$MARIADB_IMAGE" >/dev/null 2>&1
  if [ "${SMOKE_KEEP_BASE:-0}" != 1 ]; then
    "${PODMAN[@]}" rmi -f "$BASE_IMAGE" >/dev/null 2>&1
  fi
  # The work directory (password, accounts, reports) goes, unless it holds the logs of a failure.
  if [ "$rc" -eq 0 ] || [ -n "${SMOKE_LOG_DIR:-}" ]; then rm -rf "$WORK"; fi
  if [ "$rc" -eq 0 ]; then
    say "PASS"
  else
    say "FAILED at stage $STAGE (exit $rc; logs in $LOGS)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# -- tools --------------------------------------------------------------------------------------
STAGE=tools
[ "$(id -u)" = 0 ] || fail "needs root (podman rootful, debootstrap)"
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (apt-get install podman runc debootstrap)"
done
[ -n "$COMPOSE_BIN" ] || fail "podman-compose is not installed (pip install podman-compose)"
[ -n "$CLUSTER" ] || fail "no cluster command (the repository's .venv or PATH)"
ok "podman $(podman --version | awk '{print $3}'), $("$COMPOSE_BIN" --version 2>/dev/null | head -1), $CLUSTER"

# -- base ---------------------------------------------------------------------------------------
STAGE=base
mkdir -p "$CACHE"
if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  made="the image kept by an earlier run"
else
  if [ -s "$BASE_TAR" ]; then
    made="imported from the cached $BASE_TAR"
  else
    rootfs="$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1 \
      || fail "debootstrap failed (see $LOGS/debootstrap.log)"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -czf "$BASE_TAR.part" . && mv "$BASE_TAR.part" "$BASE_TAR"
    rm -rf "$rootfs"
    made="debootstrapped, cached as $BASE_TAR"
  fi
  "${PODMAN[@]}" import "$BASE_TAR" "$BASE_IMAGE" >"$LOGS/import.log" 2>&1 \
    || fail "podman import of $BASE_TAR failed"
fi
ok "$BASE_IMAGE ($made)"

# -- images -------------------------------------------------------------------------------------
STAGE=images
build=("${PODMAN[@]}" build "${ULIMITS[@]}" --network host --format docker --layers=false
       --build-arg "BASE=$BASE_IMAGE" --label "iocp-smoke=$RUN_ID")
# Behind a TLS-inspecting proxy pip needs this host's CA bundle: the Dockerfile's build secret.
for bundle in "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$bundle" ] && [ -s "$bundle" ]; then build+=(--secret "id=pip_cert,src=$bundle"); break; fi
done
"${build[@]}" -f "$DOCKER_DIR/Dockerfile" -t "$CLUSTER_IMAGE" "$REPO" >"$LOGS/build-cluster.log" 2>&1 \
  || fail "building the cluster image failed (see $LOGS/build-cluster.log)"
"${build[@]}" -f "$DOCKER_DIR/mariadb-debian/Containerfile" -t "$MARIADB_IMAGE" \
  "$DOCKER_DIR/mariadb-debian" >"$LOGS/build-mariadb.log" 2>&1 \
  || fail "building the MariaDB image failed (see $LOGS/build-mariadb.log)"
user=$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$CLUSTER_IMAGE")
[ "$user" = cluster ] || fail "the image runs as '$user', not cluster"
health=$("${PODMAN[@]}" image inspect --format '{{json .HealthCheck}}' "$CLUSTER_IMAGE")
case "$health" in *CLUSTER_READY_FILE*) ;; *) fail "the image has no ready-file HEALTHCHECK: $health" ;; esac
inside=$(podman_q run --rm "${ULIMITS[@]}" --label "iocp-smoke=$RUN_ID" --entrypoint sh "$CLUSTER_IMAGE" -c \
  'id -u; stat -c %U /var/lib/iocp-cluster; test -d /opt/iocp-cluster/src && echo editable || echo wheel' | tr '\n' ' ')
[ "$inside" = "10001 cluster wheel " ] || fail "image user/data dir/install: '$inside' (want 10001 cluster wheel)"
ok "$CLUSTER_IMAGE (user cluster 10001, HEALTHCHECK on the ready file), $MARIADB_IMAGE"

# -- sqlite-volume: the embedded database on a named volume, as the cluster user ----------------
STAGE=sqlite-volume
"${PODMAN[@]}" volume create --label "iocp-smoke=$RUN_ID" "iocp-smoke-data-$RUN_ID" >/dev/null
out=$(podman_q run --rm "${ULIMITS[@]}" --label "iocp-smoke=$RUN_ID" \
  -v "iocp-smoke-data-$RUN_ID:/var/lib/iocp-cluster" "$CLUSTER_IMAGE" db init 2>&1) \
  || fail "cluster db init on the data volume failed: $out"
case "$out" in *"schema ready"*) ;; *) fail "unexpected db init output: $out" ;; esac
"${PODMAN[@]}" volume rm -f "iocp-smoke-data-$RUN_ID" >/dev/null
ok "db init wrote SQLite on a fresh named volume"

# -- the compose stack --------------------------------------------------------------------------
export IOCP_IMAGE="$CLUSTER_IMAGE" IOCP_MARIADB_IMAGE="$MARIADB_IMAGE"
export IOCP_DB_PASSWORD_FILE="$WORK/db_password"
# A password that needs percent-encoding in the URL, to prove the entrypoint's encoding.
printf "sm0ke'%s@:/%%\n" "$(head -c 9 /dev/urandom | base64 | tr -d '/+=')" >"$IOCP_DB_PASSWORD_FILE"
chmod 0644 "$IOCP_DB_PASSWORD_FILE"  # bind-mounted as the secret: read by uid 10001 and mysql
for var in IOCP_BROKER_PORT IOCP_LOGIN_PORT IOCP_GAME_PORT IOCP_CHAT_PORT IOCP_MONITOR_PORT IOCP_WEB_PORT; do
  port=$(free_port) || fail "no free port"
  export "$var=$port"
done
ROLE_SERVICES=(broker monitor auth game chat gateway web)

write_override() {  # $1: link mode. Every cluster role (and db init) gets it.
  {
    echo "# made by deploy/container-smoke.sh for one run"
    echo "services:"
    for s in dbinit "${ROLE_SERVICES[@]}"; do
      printf '  %s:\n    environment:\n      CLUSTER_CLUSTER_LINK_MODE: "%s"\n      CLUSTER_BROKER_HEARTBEAT_INTERVAL: "0.5"\n' "$s" "$1"
      printf '    ulimits: {nofile: {soft: 4096, hard: 4096}, nproc: {soft: 1024, hard: 1024}}\n'
    done
    printf '  mariadb:\n    ulimits: {nofile: {soft: 4096, hard: 4096}, nproc: {soft: 1024, hard: 1024}}\n'
  } >"$WORK/compose.smoke.yaml"
}

host_config() {  # $1: link mode. What the dummy on this host reads (with the Curve keys if on).
  {
    if [ "${#CURVE_FILE[@]}" -gt 0 ]; then
      printf '[security]\ncurve = true\nkeys_dir = "%s"\n\n' "$IOCP_KEYS_DIR"
    fi
    cat <<EOF
[cluster]
link_mode = "$1"
data_dir = "$WORK/host-data"

[broker]
endpoint = "tcp://127.0.0.1:$IOCP_BROKER_PORT"
heartbeat_interval = 0.5

[gateway]
public_host = "127.0.0.1"
login_port = $IOCP_LOGIN_PORT
game_port = $IOCP_GAME_PORT
chat_port = $IOCP_CHAT_PORT
EOF
  } >"$WORK/host.toml"
}

container_of() { "${PODMAN[@]}" ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=$1"; }

healthy() {  # $1: container; runs its HEALTHCHECK now (no systemd timers here)
  "${PODMAN[@]}" healthcheck run "$1" >/dev/null 2>&1
}

wait_healthy() {  # $1: seconds; every container of the project but dbinit
  local deadline=$((SECONDS + $1)) c pending
  while :; do
    pending=""
    for s in mariadb "${ROLE_SERVICES[@]}"; do
      for c in $(container_of "$s"); do
        healthy "$c" || pending="$pending $("${PODMAN[@]}" inspect --format '{{.Name}}' "$c")"
      done
    done
    [ -z "$pending" ] && return 0
    [ $SECONDS -ge $deadline ] && fail "not healthy after $1 s:$pending (logs: podman logs NAME)"
    sleep 1
  done
}

stack_up() {  # $1: link mode
  write_override "$1"
  compose up -d mariadb >>"$LOGS/compose.log" 2>&1 || fail "podman-compose up mariadb failed (see $LOGS/compose.log)"
  local deadline=$((SECONDS + 120)) db
  db=$(container_of mariadb)
  until healthy "$db"; do
    [ $SECONDS -ge $deadline ] && fail "mariadb not healthy after 120 s: $("${PODMAN[@]}" logs --tail 5 "$db" 2>&1)"
    sleep 1
  done
  # podman 4.3 cannot wait for service_healthy (podman-compose skips that condition), hence one
  # step at a time, each starting only its own services.
  compose up -d --no-deps dbinit >>"$LOGS/compose.log" 2>&1 || fail "podman-compose up dbinit failed"
  local init code
  init=$(container_of dbinit)
  code=$(timeout 120 "${PODMAN[@]}" wait "$init" 2>/dev/null) || fail "db init did not finish"
  [ "$code" = 0 ] || fail "db init exited $code: $("${PODMAN[@]}" logs --tail 5 "$init" 2>&1)"
  compose up -d --no-deps "${ROLE_SERVICES[@]}" >>"$LOGS/compose.log" 2>&1 || fail "podman-compose up failed (see $LOGS/compose.log)"
  wait_healthy 180
  host_config "$1"
  # Healthy = each process printed `ready`; the monitor must also see every role on the bus.
  local want="auth=2 broker=1 chat=2 game=2 gateway=1 monitor=1 web=1" got=""
  deadline=$((SECONDS + 60))
  until [ "$got" = "$want" ]; do
    got=$(status_json | "$PYTHON" -c '
import collections, json, sys
roles = collections.Counter(p["role"] for p in json.load(sys.stdin)["processes"])
print(" ".join(f"{r}={n}" for r, n in sorted(roles.items())))' 2>/dev/null || true)
    [ $SECONDS -ge $deadline ] && fail "cluster status from this host shows '$got', not '$want'"
    [ "$got" = "$want" ] || sleep 1
  done
}

status_json() { "$CLUSTER" status --json --config "$WORK/host.toml" 2>/dev/null || echo '{"processes": []}'; }

check_report() {  # $1: report, $2: what; the dummy's checks, restated here
  "$PYTHON" - "$1" "$2" "$CLIENTS" <<'EOF' || exit 1
import json, sys
path, what, clients = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.load(open(path))
errors = {k: v for k, v in r.get("errors", {}).items() if v}
problems = []
if r["connect_total"] != r.get("accept_total"):
    problems.append(f"connect_total {r['connect_total']} != accept_total {r.get('accept_total')}")
if errors:
    problems.append(f"errors {errors}")
if r.get("login_ok", 0) < clients or r.get("echo_recv", 0) <= 0:
    problems.append(f"login_ok {r.get('login_ok')} echo_recv {r.get('echo_recv')}")
if problems:
    print(f"smoke: FAIL {what}: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"connect_total {r['connect_total']} == accept_total {r['accept_total']}, "
      f"login_ok {r['login_ok']}, echo_recv {r['echo_recv']}, down_client {r['down_client']}, "
      "no errors")
EOF
}

make_accounts() {
  local broker
  broker=$(container_of broker)
  # cluster-entrypoint makes CLUSTER_DB_URL from the secret (and, not being the container's main
  # process, leaves the broker's ready file alone: checked below).
  "${PODMAN[@]}" exec "$broker" cluster-entrypoint accounts create \
    --config /etc/iocp-cluster/cluster.toml --count "$CLIENTS" --no-passwords \
    --out /tmp/accounts.tsv >"$LOGS/accounts.log" 2>&1 || fail "accounts create in the broker container failed"
  "${PODMAN[@]}" cp "$broker:/tmp/accounts.tsv" "$WORK/accounts.tsv" || fail "podman cp of the account list failed"
  [ "$(wc -l <"$WORK/accounts.tsv")" -eq "$CLIENTS" ] || fail "the account list does not hold $CLIENTS lines"
  healthy "$broker" || fail "the broker is unhealthy after an admin command ran beside it"
}

run_dummy() {  # $1: mode, $2: seconds, $3: report; the dummy from this host through the published ports
  "$CLUSTER" dummy run --config "$WORK/host.toml" --accounts "$WORK/accounts.tsv" --path login \
    --clients "$CLIENTS" --duration "$2" --report "$3" >"$LOGS/dummy-$1.log" 2>&1
}

# -- systemlink ---------------------------------------------------------------------------------
STAGE=up-systemlink
stack_up systemlink
ok "mariadb healthy, db init exit 0, the 10 role containers healthy, cluster status sees every role"

STAGE=accounts
make_accounts
ok "$CLIENTS accounts in MariaDB (cluster accounts create by exec in the broker container, still healthy)"

STAGE=dummy-systemlink
run_dummy systemlink 8 "$WORK/report-systemlink.json" || fail "the dummy exited non-zero (see $LOGS/dummy-systemlink.log)"
line=$(check_report "$WORK/report-systemlink.json" "$STAGE") || exit 1
ok "$line"

STAGE=game-killed
in_game() {
  status_json | "$PYTHON" -c '
import json, sys
print(sum(p.get("session_game", 0) for p in json.load(sys.stdin)["processes"] if p["role"] == "game"))'
}
deadline=$((SECONDS + 30))  # the previous run's sessions leave the monitor's samples within seconds
until [ "$(in_game)" = 0 ]; do
  [ $SECONDS -ge $deadline ] && fail "$(in_game) sessions still in game 30 s after the previous run"
  sleep 1
done
run_dummy failover 30 "$WORK/report-failover.json" &
dummy_pid=$!
sessions_by_host() {
  status_json | "$PYTHON" -c '
import json, sys
for p in json.load(sys.stdin)["processes"]:
    if p["role"] == "game":
        print(p["host"], p.get("pid", ""), p.get("session_game", 0))'
}
deadline=$((SECONDS + 60))
until [ "$(sessions_by_host | awk '{n += $3} END {print n + 0}')" = "$CLIENTS" ]; do
  [ $SECONDS -ge $deadline ] && { kill "$dummy_pid" 2>/dev/null; fail "the $CLIENTS dummies never were all in game: $(sessions_by_host | tr '\n' ';')"; }
  kill -0 "$dummy_pid" 2>/dev/null || fail "the dummy ended early (see $LOGS/dummy-failover.log)"
  sleep 0.5
done
before=$(sessions_by_host)
# The game container holding the most sessions (status names a process's host: its hostname).
read -r victim_host victim_pid victim_sessions < <(echo "$before" | sort -k3 -n -r | head -1)
victim=""
for c in $(container_of game); do
  [ "$("${PODMAN[@]}" inspect --format '{{.Config.Hostname}}' "$c")" = "$victim_host" ] && victim=$c
done
[ -n "$victim" ] || fail "no game container has the hostname $victim_host"
victim_name=$("${PODMAN[@]}" inspect --format '{{.Name}}' "$victim")
# SIGKILL to its process from this host: a crash (`podman kill` would count as a stop by the
# user, and the restart policy would leave the container down).
host_pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$victim")
kill -KILL "$host_pid" || fail "kill -KILL $host_pid ($victim_name) failed"
# Every session is back in game, none on the killed process.
deadline=$((SECONDS + 20))
while :; do
  after=$(sessions_by_host)
  back=$(echo "$after" | awk -v h="$victim_host" -v p="$victim_pid" '!($1 == h && $2 == p) {n += $3} END {print n + 0}')
  [ "$back" = "$CLIENTS" ] && break
  [ $SECONDS -ge $deadline ] && { kill "$dummy_pid" 2>/dev/null; fail "after the kill only $back of $CLIENTS in game: $(echo "$after" | tr '\n' ';')"; }
  sleep 0.5
done
dummy_rc=0
wait "$dummy_pid" || dummy_rc=$?
dummy_pid=""
[ "$dummy_rc" = 0 ] || fail "the dummy exited $dummy_rc across the kill (see $LOGS/dummy-failover.log)"
line=$(check_report "$WORK/report-failover.json" "$STAGE") || exit 1
down=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["down_client"])' "$WORK/report-failover.json")
[ "$down" -ge "$victim_sessions" ] || fail "down_client $down < the $victim_sessions sessions of $victim_name"
# The restart policy brings the killed container back, healthy (a new ready line).
deadline=$((SECONDS + 90))
until healthy "$victim"; do
  [ $SECONDS -ge $deadline ] && fail "$victim_name was not restarted healthy within 90 s"
  sleep 1
done
elsewhere=$(echo "$after" | awk -v h="$victim_host" -v p="$victim_pid" '!($1 == h && $2 == p) && $3 > 0 {printf " %s:%s", $1, $3}')
ok "killed $victim_name ($victim_sessions sessions); all $CLIENTS in game again on other processes (host:sessions$elsewhere); container restarted healthy; $line"

STAGE=stop-drains
compose stop >>"$LOGS/compose.log" 2>&1 || fail "podman-compose stop failed"
bad=""
for s in "${ROLE_SERVICES[@]}"; do
  for c in $(container_of "$s"); do
    code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$c")
    [ "$code" = 0 ] || bad="$bad $("${PODMAN[@]}" inspect --format '{{.Name}}' "$c")=$code"
  done
done
[ -z "$bad" ] || fail "roles that did not drain to exit 0 on SIGTERM:$bad"
compose down >>"$LOGS/compose.log" 2>&1 || fail "podman-compose down failed"
ok "every role drained to exit 0 on SIGTERM within its stop_grace_period"

# -- non-systemlink, with CurveZMQ: the stack recreated with the other link mode and
# compose.curve.yaml (keys from `cluster keys generate`, owned by the image's user), same MariaDB
# volume ---------------------------------------------------------------------------------------
STAGE=up-non-systemlink
export IOCP_KEYS_DIR="$WORK/keys"
CLUSTER_SECURITY_KEYS_DIR="$IOCP_KEYS_DIR" "$CLUSTER" keys generate >"$LOGS/keys.log" 2>&1 \
  || fail "cluster keys generate failed"
chown -R 10001:10001 "$IOCP_KEYS_DIR"
CURVE_FILE=(-f "$DOCKER_DIR/compose.curve.yaml")
stack_up non-systemlink
# The bus is closed to a process without the keys: `cluster status` with curve off gets nothing.
if CLUSTER_SECURITY_CURVE=false "$CLUSTER" status --timeout 3 --config "$WORK/host.toml" >"$LOGS/status-nokeys.log" 2>&1; then
  fail "cluster status without the Curve keys was answered: the bus is open"
fi
ok "recreated with CLUSTER_CLUSTER_LINK_MODE=non-systemlink and compose.curve.yaml: every role healthy on a CurveZMQ bus (a client without the keys is refused), MariaDB data kept"

STAGE=dummy-non-systemlink
run_dummy non-systemlink 8 "$WORK/report-non-systemlink.json" || fail "the dummy exited non-zero (see $LOGS/dummy-non-systemlink.log)"
line=$(check_report "$WORK/report-non-systemlink.json" "$STAGE") || exit 1
ok "$line"

STAGE=cleanup
