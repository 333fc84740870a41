# Sourced by test.sh and bench.sh: throwaway database servers for the tests
# and benchmarks, in a temp dir, on a free loopback port, stopped by pid.
# (../shared/notes/postgres-redis-on-ci.md is the tested recipe this follows.)
#
#   . scripts/services.sh
#   trap pmap_stop_services EXIT      # before starting anything
#   trap 'exit 143' TERM; trap 'exit 130' INT
#   pmap_start_postgres               # exports PMAP_TEST_PG (libpq conninfo),
#                                     # PMAP_TEST_PG_ADMIN, PMAP_TEST_PG_RESTART
#   pmap_start_redis                  # exports PMAP_TEST_REDIS (a redis:// URI),
#                                     # PMAP_TEST_REDIS_SOCKET, PMAP_TEST_REDIS_RESTART
#
# Knobs: PMAP_PG_PORT and PMAP_REDIS_PORT fix the ports (default: the first
# free one from 25432 and 26379); PMAP_SVC_KEEP=1 keeps the temp dir and its logs;
# PMAP_PG_DURABLE=1 keeps PostgreSQL's defaults for fsync and
# synchronous_commit (the benchmarks use it: commits then wait for the disk,
# as on a production server).
#
# PostgreSQL runs as the postgres user (initdb and postgres refuse root);
# for the tests with fsync off: they hold test data only. Redis runs with
# its append-only file on (appendfsync everysec, Redis's own recommendation),
# so that a restart keeps what it acknowledged.

pmap_svc_dir=""

pmap_svc_log() { echo "==> [services] $*"; }

# A port nobody listens on, from $1 up. The defaults lie below Linux's
# ephemeral range (32768-60999): a port inside it can be taken as the local
# port of some client's connection while the server restarts, and the
# restart then fails ("could not bind ... Address already in use"; seen
# with 55432 under a loaded test run).
pmap_free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

# Whether pid $1 is gone (a zombie waiting to be reaped counts as gone).
pmap_pid_gone() {
  local state
  [ -r "/proc/$1/stat" ] || return 0
  state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 0
  [ "$state" = Z ]
}

# Signals pid $1 with $2 and waits up to $3 seconds for it to go; then KILL.
pmap_stop_pid() {
  local pid=$1 sig=$2 wait=$3 i
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < wait * 10; i++)); do
    pmap_pid_gone "$pid" && return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

pmap_svc_make_dir() {
  [ -n "$pmap_svc_dir" ] && return 0
  pmap_svc_dir=$(mktemp -d "${TMPDIR:-/tmp}/pmap-svc.XXXXXX")
  chmod 755 "$pmap_svc_dir"
  # The postgres user must be able to reach it.
  if ! runuser -u postgres -- test -x "$pmap_svc_dir"; then
    echo "the postgres user cannot enter $pmap_svc_dir: set TMPDIR to a directory it can reach (e.g. /tmp)" >&2
    return 1
  fi
}

pmap_start_postgres() {
  local bin port attempt data
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)" >&2
    return 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "starting a throwaway PostgreSQL needs root (to run it as the postgres user);" \
         "or set PMAP_TEST_PG to a conninfo of your own and run ctest" >&2
    return 1
  fi
  pmap_svc_make_dir || return 1
  mkdir -p "$pmap_svc_dir/pg"
  chown postgres:postgres "$pmap_svc_dir/pg"
  data=$pmap_svc_dir/pg/data
  (cd / && runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 --locale=C.UTF-8 -E UTF8 --no-sync --no-instructions \
      >"$pmap_svc_dir/pg/initdb.log" 2>&1) || {
    tail -20 "$pmap_svc_dir/pg/initdb.log" >&2; echo "initdb failed" >&2; return 1; }
  cp "$data/postgresql.conf" "$data/postgresql.conf.orig"
  port=$(pmap_free_port "${PMAP_PG_PORT:-25432}")
  for attempt in 1 2 3 4 5; do
    cp "$data/postgresql.conf.orig" "$data/postgresql.conf"
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pmap_svc_dir/pg'
max_connections = 200
EOF
    if [ "${PMAP_PG_DURABLE:-0}" != 1 ]; then
      printf '%s\n' "fsync = off" "synchronous_commit = off" "full_page_writes = off" \
        >>"$data/postgresql.conf"
    fi
    : >"$pmap_svc_dir/pg/postgres.log"
    chown postgres:postgres "$pmap_svc_dir/pg/postgres.log"
    if (cd / && runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$pmap_svc_dir/pg/postgres.log" \
          -w -t 60 start >/dev/null 2>&1); then
      break
    fi
    if [ -n "${PMAP_PG_PORT:-}" ] || ! grep -q "already in use" "$pmap_svc_dir/pg/postgres.log"; then
      tail -20 "$pmap_svc_dir/pg/postgres.log" >&2
      echo "PostgreSQL did not start (log: $pmap_svc_dir/pg/postgres.log)" >&2
      return 1
    fi
    port=$(pmap_free_port $((port + 1)))
  done
  "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$pmap_svc_dir/pg" -p "$port" -U postgres -d postgres \
      -c "CREATE ROLE pmap LOGIN CREATEDB PASSWORD 'pmap'" \
      -c "CREATE DATABASE pmap_test OWNER pmap" >/dev/null || {
    echo "could not create the test role and database" >&2; return 1; }
  export PMAP_TEST_PG="host=127.0.0.1 port=$port dbname=pmap_test user=pmap password=pmap connect_timeout=10"
  export PMAP_TEST_PG_ADMIN="host=$pmap_svc_dir/pg port=$port dbname=pmap_test user=postgres"
  # Restarts the server in place (the fault tests), as the postgres user.
  export PMAP_TEST_PG_RESTART="cd / && runuser -u postgres -- $bin/pg_ctl -D $data -l $pmap_svc_dir/pg/postgres.log -w -t 60 -m fast restart >/dev/null"
  pmap_svc_log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($pmap_svc_dir/pg$([ "${PMAP_PG_DURABLE:-0}" = 1 ] && echo ", durable"))"
}

pmap_stop_postgres() {
  local data=$pmap_svc_dir/pg/data pid
  [ -f "$data/postmaster.pid" ] || return 0
  pid=$(head -1 "$data/postmaster.pid")
  # INT is PostgreSQL's "fast" shutdown; QUIT then KILL if it hangs.
  pmap_stop_pid "$pid" INT 20
  pmap_pid_gone "$pid" || pmap_stop_pid "$pid" QUIT 5
}

# Starts redis-server (daemonized, its files in $pmap_svc_dir/redis) on
# port $1 with the test settings; waits until that very process answers.
pmap_redis_up() {
  local dir=$pmap_svc_dir/redis port=$1 i pid=""
  rm -f "$dir/redis.pid"
  : >"$dir/redis.log"
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$dir/redis.pid" \
    --logfile "$dir/redis.log" --dir "$dir" --save '' --appendonly yes \
    --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
    --appendfsync everysec </dev/null >/dev/null 2>&1 || return 1
  # --daemonize returns 0 even when the server then fails to bind: wait for
  # its pid file, then for that pid to answer on the port.
  for ((i = 0; i < 100; i++)); do
    if [ -s "$dir/redis.pid" ]; then
      pid=$(cat "$dir/redis.pid")
      if [ "$(redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' |
              sed -n 's/^process_id://p')" = "$pid" ]; then
        return 0
      fi
      pmap_pid_gone "$pid" && return 1
    elif grep -q "already in use\|Could not create" "$dir/redis.log" 2>/dev/null; then
      return 1
    fi
    sleep 0.05
  done
  return 1
}

pmap_start_redis() {
  local port attempt dir
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "redis-server and redis-cli not found (apt-get install redis-server redis-tools)" >&2
    return 1
  fi
  pmap_svc_make_dir || return 1
  dir=$pmap_svc_dir/redis
  mkdir -p "$dir"
  port=$(pmap_free_port "${PMAP_REDIS_PORT:-26379}")
  for attempt in 1 2 3 4 5; do
    pmap_redis_up "$port" && break
    if [ -n "${PMAP_REDIS_PORT:-}" ] || ! grep -q "already in use" "$dir/redis.log"; then
      tail -20 "$dir/redis.log" >&2
      echo "Redis did not start (log: $dir/redis.log)" >&2
      return 1
    fi
    port=$(pmap_free_port $((port + 1)))
  done
  [ -s "$dir/redis.pid" ] || { echo "Redis did not start (log: $dir/redis.log)" >&2; return 1; }
  export PMAP_TEST_REDIS="redis://127.0.0.1:$port"
  export PMAP_TEST_REDIS_SOCKET="$dir/redis.sock"
  # Restarts the server in place (the fault tests): SIGTERM (it writes its
  # append-only file and exits), then the same command line again.
  cat >"$dir/restart.sh" <<EOF
#!/usr/bin/env bash
set -e
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/services.sh"
pmap_svc_dir=$pmap_svc_dir
pmap_stop_redis
pmap_redis_up $port
EOF
  chmod +x "$dir/restart.sh"
  export PMAP_TEST_REDIS_RESTART="$dir/restart.sh"
  pmap_svc_log "Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$port ($dir, appendonly everysec)"
}

pmap_stop_redis() {
  local pidfile=$pmap_svc_dir/redis/redis.pid pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  pmap_stop_pid "$pid" TERM 20
}

# Stops every server this shell started and removes the temp dir. Safe to
# call twice, and when nothing was started.
pmap_stop_services() {
  [ -n "$pmap_svc_dir" ] || return 0
  pmap_stop_redis
  pmap_stop_postgres
  if [ "${PMAP_SVC_KEEP:-0}" = 1 ]; then
    pmap_svc_log "kept $pmap_svc_dir"
  else
    rm -rf "$pmap_svc_dir"
  fi
  pmap_svc_dir=""
}
