#!/usr/bin/env bash
# Throwaway PostgreSQL cluster on 127.0.0.1 for tests and CI.
#   scripts/pg_throwaway.sh start DIR [PORT]   -> prints the SQLAlchemy URL on stdout
#   scripts/pg_throwaway.sh stop DIR
# initdb refuses root, so as root the cluster runs as the `postgres` user (runuser).
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?directory}; port=${3:-55432}

bindir=""
for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/initdb" ]] && bindir=$d; done
if [[ -z $bindir ]]; then bindir=$(dirname "$(command -v initdb)"); fi
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $cmd in
start)
  mkdir -p "$dir"
  [[ $(id -u) == 0 ]] && chown postgres "$dir"
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    as_pg "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "postgresql+psycopg2://postgres@127.0.0.1:$port/postgres"
  ;;
stop)
  [[ -f $dir/data/postmaster.pid ]] && as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  ;;
*) echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac
