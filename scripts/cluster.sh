# Sourced by scripts: start_private_cluster / stop_private_cluster. A PostgreSQL 15 cluster of our own
# in a temp dir (never the system's), run as the `postgres` user when we are root (the server
# refuses root), on a free port, with its socket in that dir. Exports PGHOST/PGPORT/PGUSER.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

free_port() {
  local port
  for port in $(shuf -i 20000-60000 -n 50); do
    if ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "$port"; return; fi
  done
  echo 54329
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_private_cluster() {
  CLUSTER_DIR=$(mktemp -d /tmp/flock-cluster.XXXXXX)
  chmod 755 "$CLUSTER_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$CLUSTER_DIR"
  CLUSTER_PORT=$(free_port)
  as_pg "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w -t 60 \
    -o "-p $CLUSTER_PORT -k $CLUSTER_DIR -c listen_addresses='' -c shared_preload_libraries=flock,pg_cron -c cron.database_name=postgres" start >/dev/null
  export PGHOST=$CLUSTER_DIR PGPORT=$CLUSTER_PORT PGUSER=postgres PGDATABASE=postgres
  trap stop_private_cluster EXIT
}

stop_private_cluster() {
  if [ -n "${CLUSTER_DIR:-}" ] && [ -d "$CLUSTER_DIR/data" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
  fi
}
