#!/bin/sh
# `docker-entrypoint.sh mariadbd [OPTIONS]`: on an empty /var/lib/mysql, create the system tables,
# the user MARIADB_USER (password from MARIADB_PASSWORD_FILE or MARIADB_PASSWORD, from any host)
# and run /docker-entrypoint-initdb.d/*.sql as root, on a server that listens on no port; then
# run the server with OPTIONS. Any other command runs as given.
set -eu
DATADIR=/var/lib/mysql

if [ "${1:-}" != "mariadbd" ]; then
  exec "$@"
fi
shift

say() { echo "docker-entrypoint: $*" >&2; }

if [ ! -d "$DATADIR/mysql" ]; then
  if [ -n "${MARIADB_PASSWORD_FILE:-}" ]; then
    MARIADB_PASSWORD=$(cat "$MARIADB_PASSWORD_FILE")
  fi
  if [ -z "${MARIADB_USER:-}" ] || [ -z "${MARIADB_PASSWORD:-}" ]; then
    say "a new data directory needs MARIADB_USER and MARIADB_PASSWORD(_FILE)"
    exit 1
  fi
  chown mysql:mysql "$DATADIR"
  say "initialising $DATADIR"
  mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
    --auth-root-authentication-method=socket >/dev/null
  socket=/run/mysqld/init.sock
  mariadbd --user=mysql --datadir="$DATADIR" --skip-networking --socket="$socket" &
  pid=$!
  i=0
  until mariadb-admin --socket="$socket" ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ] || ! kill -0 "$pid" 2>/dev/null; then
      say "the initialising server did not start"
      exit 1
    fi
    sleep 1
  done
  # The password as an SQL string literal: backslashes and quotes doubled.
  literal=$(printf '%s' "$MARIADB_PASSWORD" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")
  user=$(printf '%s' "$MARIADB_USER" | sed -e "s/'/''/g")
  mariadb --socket="$socket" <<SQL
CREATE USER '$user'@'%' IDENTIFIED BY '$literal';
SQL
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] || continue
    say "running $f"
    mariadb --socket="$socket" < "$f"
  done
  mariadb-admin --socket="$socket" shutdown
  wait "$pid" || true
  say "initialised"
fi

exec mariadbd --user=mysql --datadir="$DATADIR" --bind-address=0.0.0.0 "$@"
