#!/bin/sh
# The image's entrypoint: `cluster-entrypoint ROLE [ARGS...]` runs `cluster ROLE [ARGS...]`.
#
# - As the container's main process (PID 1, or the child of an --init), it removes
#   $CLUSTER_READY_FILE first: a container restarted by its restart policy keeps its filesystem,
#   so the `ready` line of its previous run would make the HEALTHCHECK (test -s on that file) call
#   it healthy before the new run is ready. Run by `docker exec` (an admin command beside the
#   role: PID > 1, its parent outside the container) it leaves the file alone.
# - DB_PASSWORD_FILE (a compose/swarm secret, e.g. /run/secrets/db_password) with DB_USER and
#   DB_ADDRESS (HOST:PORT) make CLUSTER_DB_URL=mysql://DB_USER:PASSWORD@DB_ADDRESS, the password
#   percent-encoded, unless CLUSTER_DB_URL is set already. A missing or empty file is refused
#   with one line. (Not CLUSTER_DB_* names: those are configuration keys.)
set -eu

if [ -n "${CLUSTER_READY_FILE:-}" ] && { [ "$$" = 1 ] || [ "$PPID" = 1 ]; }; then
  rm -f "$CLUSTER_READY_FILE"
fi

if [ -n "${DB_PASSWORD_FILE:-}" ] && [ -z "${CLUSTER_DB_URL:-}" ]; then
  if [ ! -s "$DB_PASSWORD_FILE" ] || [ -z "${DB_USER:-}" ] || [ -z "${DB_ADDRESS:-}" ]; then
    echo "cluster-entrypoint: DB_PASSWORD_FILE needs a readable, non-empty file and DB_USER and DB_ADDRESS" >&2
    exit 2
  fi
  CLUSTER_DB_URL=$(python3 -c '
import sys, urllib.parse
quote = lambda s: urllib.parse.quote(s, safe="")
password = open(sys.argv[1], encoding="utf-8").read().rstrip("\r\n")
print("mysql://" + quote(sys.argv[2]) + ":" + quote(password) + "@" + sys.argv[3])
' "$DB_PASSWORD_FILE" "$DB_USER" "$DB_ADDRESS")
  export CLUSTER_DB_URL
fi

exec cluster "$@"
