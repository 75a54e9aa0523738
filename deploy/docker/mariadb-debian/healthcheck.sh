#!/bin/sh
# `healthcheck.sh --connect --innodb_initialized`, as in the official image: healthy when the
# server (not the initialising one, which has no socket here) answers and InnoDB is up.
set -eu
mariadb --socket=/run/mysqld/mysqld.sock -N -e \
  "SELECT 1 FROM information_schema.ENGINES WHERE ENGINE='InnoDB' AND SUPPORT IN ('YES','DEFAULT')" \
  | grep -qx 1
