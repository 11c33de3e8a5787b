#!/usr/bin/env bash
# Ballast on one machine: private PostgreSQL and Redis on loopback, data under .ballast/.
#
#   deploy/dev.sh up        install what is missing, start services, migrate, run `ballast serve`
#                           (and, with no STRIPE_SECRET_KEY, a local Stripe on 127.0.0.1:12111;
#                           with no BALLAST_SMTP_HOST, a mail catcher on 127.0.0.1:2525)
#   deploy/dev.sh test      the same services, then the whole test suite (then the fleet
#                           drills again through PgBouncer, BALLAST_TEST_PGBOUNCER=0 skips; and
#                           the Redis suites on a local Redis Cluster, BALLAST_TEST_CLUSTER=0
#                           skips), then its slowest tests; stops what it started, leaves what it found
#                           (BALLAST_KEEP_SERVICES=1 keeps them for the next run)
#   deploy/dev.sh services  start services only and print the environment to use them
#   deploy/dev.sh cluster   start a local three-master Redis Cluster and print its environment
#   deploy/dev.sh replica   start a streaming replica of the PostgreSQL (pg_basebackup) and
#                           print the environment that sends reads that can lag to it
#   deploy/dev.sh pgbouncer start PgBouncer in transaction pooling before the PostgreSQL and
#                           print the environment that sends the fleet's pools through it
#                           (BALLAST_PGBOUNCER=1 makes `up` run the fleet through it)
#   deploy/dev.sh stop      stop what `up` started (by pid file), then the PostgreSQL and Redis
#                           (cluster too) this checkout started
#   deploy/dev.sh env       print the environment (eval "$(deploy/dev.sh env)"): the settings,
#                           `ballast` (target/release) on PATH, BALLAST_URL for curl
#   deploy/dev.sh --help    this text
#
# BALLAST_PITR=1 (up, services): PostgreSQL archives its WAL through pgBackRest (stanza
# "ballast", repository in .ballast/pgbackrest/), `env` names it, and `db.backup` takes physical
# backups that `db.restore_rehearsal` restores to a point in time (runbooks/database-restore.md).
# A cluster already running without archiving is left alone: `deploy/dev.sh stop` first.
#
# Idempotent: a second run reuses what is there. Ports: PostgreSQL 55432, Redis 56379
# (override with BALLAST_PG_PORT / BALLAST_REDIS_PORT); the replica 55433
# (BALLAST_PG_REPLICA_PORT); PgBouncer 56432 (BALLAST_PGBOUNCER_PORT); the cluster's masters 17001-17003
# (BALLAST_REDIS_CLUSTER_PORT, the first of three; their bus ports are 10000 higher). A port
# another process holds is refused with that process named. Data: .ballast/ (BALLAST_DATA).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${BALLAST_DATA:-$ROOT/.ballast}
PG_PORT=${BALLAST_PG_PORT:-55432}
REDIS_PORT=${BALLAST_REDIS_PORT:-56379}
REPLICA_PORT=${BALLAST_PG_REPLICA_PORT:-55433}
# The local Stripe `up` starts when no STRIPE_SECRET_KEY is set, and the mail catcher when no
# BALLAST_SMTP_HOST is.
DEV_STRIPE=${BALLAST_DEV_STRIPE_LISTEN:-127.0.0.1:12111}
DEV_MAIL=${BALLAST_DEV_MAIL_LISTEN:-127.0.0.1:2525}
# Below the kernel's ephemeral range (32768-60999 here), bus ports included: the cluster
# starts after the suite has opened thousands of connections, and a client socket holding
# a bus port once kept a node from starting.
CLUSTER_PORT=${BALLAST_REDIS_CLUSTER_PORT:-17001}
DB=${BALLAST_DB:-ballast}
# Where `up` serves, and the binary `env` puts on PATH (what `up` built).
LISTEN=${BALLAST_LISTEN:-127.0.0.1:8080}
BIN_DIR=${BALLAST_BIN_DIR:-$ROOT/target/release}

# shellcheck source=deploy/dev-pgbouncer.sh
. "$ROOT/deploy/dev-pgbouncer.sh"

log() { printf 'dev.sh: %s\n' "$*" >&2; }
die() { printf 'dev.sh: error: %s\n' "$*" >&2; exit 1; }

# What this run started (stopped at the end of `test`): "postgres", "redis:PORT:DIR".
STARTED=()

# The process listening on 127.0.0.1:PORT, as "pid N (command line)"; fails when none listens.
port_holder() {
  local line pid
  line=$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n 1)
  [ -n "$line" ] || return 1
  pid=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' <<<"$line")
  if [ -n "$pid" ]; then
    echo "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c 1-160 | sed 's/ $//'))"
  else
    echo "a process of another user"
  fi
}

# Refuses a port some other process holds, naming it and the setting that moves ours.
port_free_or_die() {
  local holder
  holder=$(port_holder "$1") || return 0
  die "port $1 (for $2) is held by $holder: stop it, or choose another port with $3"
}

# Whether the Redis answering on PORT is the one this checkout started in DIR (its pid file
# names it and its working folder is DIR): only that one is ours to stop.
redis_is_ours() {
  local port=$1 dir=$2 pid
  pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(cd "$dir" && pwd -P)" ] || return 1
  [ "$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$pid" ]
}

stop_redis_at() {
  local port=$1 dir=$2 what=$3
  if redis_is_ours "$port" "$dir"; then
    redis-cli -h 127.0.0.1 -p "$port" shutdown >/dev/null 2>&1 || true
    log "$what on $port stopped"
  elif redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
    log "$what on $port left running: this checkout did not start it ($(port_holder "$port" || echo unknown))"
  fi
}

# PostgreSQL refuses to run as root: as root we run it as Debian's `postgres` user,
# otherwise as the invoking user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_packages() {
  local need=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  # Physical backups with archived WAL, restorable to a point in time (BALLAST_PITR=1).
  command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
  command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root"
  log "installing ${need[*]} from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
}

# The console's tests drive a real browser: Debian's chromium and its WebDriver.
install_browser() {
  command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "missing chromium and chromium-driver (the console's browser tests): apt-get install chromium chromium-driver, or run as root"
  log "installing chromium and chromium-driver from Debian packages (the console's browser tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium chromium-driver >/dev/null
}

pg_bin() {
  local v
  v=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  echo "/usr/lib/postgresql/$v/bin"
}

start_postgres() {
  local bin; bin=$(pg_bin)
  mkdir -p "$DATA"
  # PostgreSQL refuses a data directory open to others (a restored or copied tree often is).
  if [ "$(id -u)" = 0 ]; then
    install -d -m 0700 -o postgres -g postgres "$DATA/pg"
    install -d -o postgres -g postgres "$DATA/pgsock"
  else
    mkdir -p "$DATA/pg" "$DATA/pgsock"
    chmod 0700 "$DATA/pg"
  fi
  if [ ! -s "$DATA/pg/PG_VERSION" ]; then
    log "initialising PostgreSQL cluster in $DATA/pg"
    as_pg "$bin/initdb" -D "$DATA/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if as_pg "$bin/pg_ctl" -D "$DATA/pg" status >/dev/null 2>&1; then
    if [ "${BALLAST_PITR:-0}" = 1 ] && ! grep -q archive_mode "$DATA/pg/postmaster.opts" 2>/dev/null; then
      log "PostgreSQL already runs without WAL archiving: BALLAST_PITR=1 takes effect after deploy/dev.sh stop"
    fi
    return 0
  fi
  port_free_or_die "$PG_PORT" PostgreSQL BALLAST_PG_PORT
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  local archive=""
  if [ "${BALLAST_PITR:-0}" = 1 ]; then
    write_pgbackrest_conf
    archive="-c wal_level=replica -c archive_mode=on -c archive_timeout=60 -c archive_command='pgbackrest --config=$DATA/pgbackrest.conf --stanza=ballast archive-push %p'"
  fi
  as_pg "$bin/pg_ctl" -D "$DATA/pg" -l "$DATA/pg/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $DATA/pgsock -c listen_addresses=127.0.0.1 -c max_connections=500 -c shared_buffers=256MB $archive" \
    start >/dev/null || { tail -20 "$DATA/pg/server.log" >&2; die "PostgreSQL did not start on port $PG_PORT (log above: $DATA/pg/server.log)"; }
  STARTED+=(postgres)
  if [ "${BALLAST_PITR:-0}" = 1 ]; then
    as_pg pgbackrest --config="$DATA/pgbackrest.conf" --stanza=ballast stanza-create >/dev/null \
      || die "pgbackrest stanza-create failed (its log: $DATA/pgbackrest)"
    log "PostgreSQL archives its WAL through pgBackRest (stanza ballast, $DATA/pgbackrest)"
  fi
}

# pgBackRest's configuration for the local cluster: the repository beside the data, two full
# backups kept (incrementals between them), lz4 for speed.
write_pgbackrest_conf() {
  if [ "$(id -u)" = 0 ]; then
    install -d -o postgres -g postgres "$DATA/pgbackrest" "$DATA/restore-scratch"
  else
    mkdir -p "$DATA/pgbackrest" "$DATA/restore-scratch"
  fi
  cat >"$DATA/pgbackrest.conf" <<CONF
[global]
repo1-path=$DATA/pgbackrest/repo
repo1-retention-full=2
lock-path=$DATA/pgbackrest/lock
log-path=$DATA/pgbackrest
log-level-console=warn
start-fast=y
compress-type=lz4
[ballast]
pg1-path=$DATA/pg
pg1-port=$PG_PORT
pg1-socket-path=$DATA/pgsock
CONF
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA/pgbackrest.conf"
  return 0
}

# Redis keeps an append-only file, written before each reply and fsynced every second: what
# Ballast acknowledged from Redis (a queued job) survives a crash of Redis; a loss of the host
# can take the last second (docs/reliability.md). No RDB snapshots: the AOF is the copy.
REDIS_PERSISTENCE=(--appendonly yes --appendfsync everysec --save '' --maxmemory-policy noeviction)

start_redis() {
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    # A Redis an older dev.sh started without persistence is switched over in place.
    if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get appendonly | tail -1)" != yes ]; then
      log "turning on Redis persistence (appendonly) on 127.0.0.1:$REDIS_PORT"
      redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendfsync everysec >/dev/null
      redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendonly yes >/dev/null
    fi
    redis_is_ours "$REDIS_PORT" "$DATA" || log "using the Redis already on $REDIS_PORT ($(port_holder "$REDIS_PORT" || echo unknown)); it is left running"
    return 0
  fi
  port_free_or_die "$REDIS_PORT" Redis BALLAST_REDIS_PORT
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$DATA"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" "${REDIS_PERSISTENCE[@]}" --daemonize yes \
    --databases 16 --pidfile "$DATA/redis.pid" --logfile "$DATA/redis.log" --dir "$DATA"
  STARTED+=("redis:$REDIS_PORT:$DATA")
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "Redis did not start on port $REDIS_PORT (see $DATA/redis.log)"
}

psql_admin() {
  psql -v ON_ERROR_STOP=1 -qAt -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

# Roles are cluster-wide: the owner runs migrations, the app role is subject to row-level
# security, the system role bypasses it for the named cross-tenant jobs.
create_roles_and_db() {
  psql_admin -d postgres -f "$ROOT/deploy/postgres-roles.sql" >/dev/null
  if [ "$(psql_admin -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_admin -d postgres -c "CREATE DATABASE $DB OWNER ballast_owner" >/dev/null
  fi
}

# A local Redis Cluster of three masters (no replicas: a drill kills nodes on purpose), with
# the same persistence as the single Redis. Idempotent: a running, healthy cluster is reused.
cluster_ports() { echo "$CLUSTER_PORT" $((CLUSTER_PORT + 1)) $((CLUSTER_PORT + 2)); }

start_redis_cluster() {
  local port nodes=()
  if [ "$(redis-cli -p "$CLUSTER_PORT" cluster info 2>/dev/null | tr -d '\r' | grep cluster_state)" = cluster_state:ok ]; then
    return 0
  fi
  for port in $(cluster_ports); do
    mkdir -p "$DATA/cluster/$port"
    if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
      port_free_or_die "$port" "a Redis Cluster node" BALLAST_REDIS_CLUSTER_PORT
      port_free_or_die $((port + 10000)) "a Redis Cluster node's bus" BALLAST_REDIS_CLUSTER_PORT
      log "starting Redis Cluster node on 127.0.0.1:$port"
      redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 2000 "${REDIS_PERSISTENCE[@]}" --daemonize yes \
        --pidfile "$DATA/cluster/$port/redis.pid" --logfile "$DATA/cluster/$port/redis.log" --dir "$DATA/cluster/$port"
      STARTED+=("redis:$port:$DATA/cluster/$port")
    fi
    nodes+=("127.0.0.1:$port")
  done
  for _ in $(seq 1 100); do
    local up=0
    # PONG, not just an answer: a node still loading its append-only file answers LOADING, and
    # its `cluster info` is empty until it has loaded (which read as "not yet a cluster").
    for port in $(cluster_ports); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && up=$((up + 1)); done
    [ "$up" = 3 ] && break
    sleep 0.1
  done
  if [ "$(redis-cli -p "$CLUSTER_PORT" cluster info | tr -d '\r' | grep cluster_known_nodes)" != cluster_known_nodes:3 ]; then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  fi
  for _ in $(seq 1 200); do
    [ "$(redis-cli -p "$CLUSTER_PORT" cluster info | tr -d '\r' | grep cluster_state)" = cluster_state:ok ] && return 0
    sleep 0.1
  done
  die "Redis Cluster did not come up (see $DATA/cluster/*/redis.log)"
}

cluster_env() {
  local urls=() port
  for port in $(cluster_ports); do urls+=("redis://127.0.0.1:$port"); done
  local joined; joined=$(IFS=,; echo "${urls[*]}")
  echo "export REDIS_URL=$joined"
  echo "export BALLAST_REDIS_CLUSTER=true"
}

stop_redis_cluster() {
  local port
  for port in $(cluster_ports); do
    stop_redis_at "$port" "$DATA/cluster/$port" "Redis Cluster node"
  done
}

# The test modules that exercise Redis (queue, limiter, usage, cache, scheduler, drills), run
# a second time against the cluster.
# What the PgBouncer pass runs again: the drills that kill, restart and outage a fleet of real
# members, the webhook path, the customer list, and tenant isolation (RLS) with the tenant set
# per transaction. (Filters match within names: the skips drop the timed intake drills and the
# outage drills that bring a private PostgreSQL of their own.)
PGBOUNCER_SUITES=(drills:: rolling_restart_drills:: outage_drills::redis_ webhooks:: customers:: rls:: --skip outage_drills::postgres_ --skip intake_drills::)

CLUSTER_SUITES=(jobs:: intake_hardening:: intake_security:: cache:: usage:: scheduler:: drills:: intake_drills:: webhooks::)

# The fleet reaches its co-located PostgreSQL through the Unix socket: per round trip it costs
# far less CPU than loopback TCP, which on two cores decides whether the webhook path keeps up
# at 1,000 events/s (docs/webhook-throughput.md). Tests connect over TCP (BALLAST_TEST_PG_*).
print_env() {
  local sock="host=$DATA/pgsock"
  cat <<ENV
export DATABASE_URL='postgres://ballast_app:ballast_app@localhost:$PG_PORT/$DB?$sock'
export BALLAST_SYSTEM_DATABASE_URL='postgres://ballast_system:ballast_system@localhost:$PG_PORT/$DB?$sock'
export BALLAST_OWNER_DATABASE_URL='postgres://ballast_owner:ballast_owner@localhost:$PG_PORT/$DB?$sock'
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export BALLAST_TEST_PG_ADMIN_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export BALLAST_TEST_PG_BASE_URL=postgres://%ROLE%:%ROLE%@127.0.0.1:$PG_PORT
export BALLAST_TEST_REDIS_PORT=$REDIS_PORT
export STRIPE_WEBHOOK_SECRET=\${STRIPE_WEBHOOK_SECRET:-whsec_ballast_dev_only}
ENV
  # Named only while the running cluster archives (its command line is in postmaster.opts).
  if [ -s "$DATA/pgbackrest.conf" ] && grep -q archive_mode "$DATA/pg/postmaster.opts" 2>/dev/null; then
    cat <<ENV
export BALLAST_PGBACKREST_STANZA=ballast
export BALLAST_PGBACKREST_CONFIG=$DATA/pgbackrest.conf
export BALLAST_PGBACKREST_SCRATCH_DIR=$DATA/restore-scratch
ENV
  fi
}

# What a shell beside `up` needs on top: the binary, the fleet's URL, the mail catcher's folder.
print_shell_env() {
  cat <<ENV
export PATH="$BIN_DIR:\$PATH"
export BALLAST_URL=http://$LISTEN
export BALLAST_DEV_MAIL_DIR=\${BALLAST_DEV_MAIL_DIR:-$DATA/mail}
ENV
}

services() {
  install_packages
  start_postgres
  start_redis
  create_roles_and_db
}

stop_postgres() {
  local bin; bin=$(pg_bin 2>/dev/null || true)
  if [ -n "$bin" ] && [ -s "$DATA/pg/PG_VERSION" ]; then
    as_pg "$bin/pg_ctl" -D "$DATA/pg" -m fast -w stop >/dev/null 2>&1 && log "PostgreSQL stopped" || true
  fi
}

# What `up` started (the fleet, the local Stripe, the mail catcher), by their pid files: TERM,
# so the fleet drains its jobs, then waited for. A pid file whose process is not this
# checkout's ballast any more (reused) is only removed.
stop_up() {
  local file pid
  for file in "$DATA"/up/*.pid; do
    [ -e "$file" ] || continue
    pid=$(cat "$file" 2>/dev/null || true)
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$ROOT" ] && grep -q ballast "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      log "stopped $(basename "$file" .pid) (pid $pid)"
    fi
    rm -f "$file"
  done
}

# `stop`: what `up` started, then this checkout's PostgreSQL (its data folder), Redis and
# cluster nodes (their pid files and working folders); a server on the same ports that another
# checkout started stays.
stop() {
  stop_up
  stop_pgbouncer
  stop_replica
  stop_postgres
  stop_redis_at "$REDIS_PORT" "$DATA" Redis
  stop_redis_cluster
}

# A streaming replica of the local PostgreSQL (reads that can lag: BALLAST_REPLICA_DATABASE_URL):
# copied with pg_basebackup and kept following the primary. A replica that is not running is
# copied afresh (a test stops it on purpose).
start_replica() {
  local bin; bin=$(pg_bin)
  if as_pg "$bin/pg_ctl" -D "$DATA/replica" status >/dev/null 2>&1; then
    # A test that paused its replay and failed before resuming leaves it paused.
    psql "postgres://postgres@127.0.0.1:$REPLICA_PORT/postgres" -Atc 'SELECT pg_wal_replay_resume()' >/dev/null 2>&1 || true
    return 0
  fi
  port_free_or_die "$REPLICA_PORT" "the PostgreSQL replica" BALLAST_PG_REPLICA_PORT
  log "copying PostgreSQL into a streaming replica on 127.0.0.1:$REPLICA_PORT (pg_basebackup)"
  rm -rf "$DATA/replica"
  # (A standby needs max_connections at least the primary's.)
  if [ "$(id -u)" = 0 ]; then install -d -m 0700 -o postgres -g postgres "$DATA/replica"; else mkdir -p -m 0700 "$DATA/replica"; fi
  as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$DATA/replica" -R --checkpoint=fast -X stream >/dev/null \
    || die "pg_basebackup from 127.0.0.1:$PG_PORT failed"
  as_pg "$bin/pg_ctl" -D "$DATA/replica" -l "$DATA/replica/server.log" -w -t 60 \
    -o "-p $REPLICA_PORT -k $DATA/pgsock -c listen_addresses=127.0.0.1 -c max_connections=500 -c shared_buffers=64MB -c hot_standby_feedback=on" \
    start >/dev/null || { tail -20 "$DATA/replica/server.log" >&2; die "the replica did not start on port $REPLICA_PORT"; }
  STARTED+=(replica)
}

stop_replica() {
  local bin; bin=$(pg_bin 2>/dev/null || true)
  if [ -n "$bin" ] && [ -s "$DATA/replica/PG_VERSION" ]; then
    as_pg "$bin/pg_ctl" -D "$DATA/replica" -m fast -w stop >/dev/null 2>&1 && log "PostgreSQL replica stopped" || true
  fi
}

replica_env() {
  cat <<ENV
export BALLAST_REPLICA_DATABASE_URL='postgres://ballast_system:ballast_system@127.0.0.1:$REPLICA_PORT/$DB'
ENV
}

# The end of `test`: what this run started, whatever the outcome.
stop_started() {
  local what rest port dir
  [ "${BALLAST_KEEP_SERVICES:-0}" = 1 ] && return 0
  for what in "${STARTED[@]}"; do
    case "$what" in
      postgres) stop_postgres ;;
      replica) stop_replica ;;
      pgbouncer) stop_pgbouncer ;;
      redis:*)
        rest=${what#redis:}; port=${rest%%:*}; dir=${rest#*:}
        stop_redis_at "$port" "$dir" Redis ;;
    esac
  done
}

# The suite, with each test's time: cargo-nextest where it is installed (a test a process,
# the timed drills alone as .config/nextest.toml says; its ten slowest listed at the end),
# else libtest (the same tests, no times).
run_tests() {
  local log; log=$(mktemp)
  local status=0
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast --test-threads "$RUST_TEST_THREADS" "$@" 2>&1 | tee "$log" || status=$?
  else
    cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
  fi
  slowest "$log"
  rm -f "$log"
  return "$status"
}

# The ten slowest tests of a run's output (nextest's "PASS [  1.234s] binary name" lines).
slowest() {
  local lines
  # (`|| true`: head closing the pipe early is not a failure of the run.)
  lines=$(sed -n 's/^ *\(PASS\|FAIL\|TIMEOUT\|LEAK\)[^[]*\[ *\([0-9.]*\)s\][^a-z_]*\(.*\)$/\2 \3/p' "$1" | sort -rn -k1,1 | awk '!seen[$0]++' | head -n 10 || true)
  [ -n "$lines" ] || return 0
  log "slowest tests (seconds):"
  printf '%s\n' "$lines" | sed 's/^/    /' >&2
}

cmd=${1:-}
case "$cmd" in
  up)
    services
    eval "$(print_env)"
    cd "$ROOT"
    # The first build compiles every dependency (about 15 minutes on two cores); cargo shows
    # its progress.
    log "building the release binary (cargo build --release)"
    cargo build --release
    ./target/release/ballast migrate
    if [ "${BALLAST_PGBOUNCER:-0}" = 1 ]; then
      start_pgbouncer
      eval "$(pgbouncer_env)"
      log "the fleet's pools go through PgBouncer on 127.0.0.1:$PGBOUNCER_PORT (transaction pooling)"
    fi
    export BALLAST_LISTEN=$LISTEN
    mkdir -p "$DATA/up"
    # Every process `up` starts has a pid file in $DATA/up: a signal to `up` (Ctrl-C, TERM) is
    # passed to each, and `dev.sh stop` stops them even if `up` itself was killed.
    trap 'stop_up; exit 0' INT TERM
    trap stop_up EXIT
    if [ -z "${STRIPE_SECRET_KEY:-}" ]; then
      # No Stripe key: a local Stripe (the simulator the tests use) answers the API and sends
      # signed webhooks to this fleet; `ballast dev stripe checkout|card|advance` drive it.
      export STRIPE_API_BASE=http://$DEV_STRIPE/ STRIPE_SECRET_KEY=sk_test_local_stripe
      ./target/release/ballast dev stripe serve --listen "$DEV_STRIPE" --webhook-url "http://$BALLAST_LISTEN/webhooks/stripe" --state "$DATA/dev-stripe.json" \
        >"$DATA/dev-stripe.log" 2>&1 &
      echo $! >"$DATA/up/dev-stripe.pid"
      log "no STRIPE_SECRET_KEY: a local Stripe on $STRIPE_API_BASE (log: $DATA/dev-stripe.log)"
    fi
    if [ -z "${BALLAST_SMTP_HOST:-}" ]; then
      # No mail server: a local catcher keeps every email as a file (and prints who it is for).
      export BALLAST_SMTP_HOST=127.0.0.1 BALLAST_SMTP_PORT=${DEV_MAIL##*:} BALLAST_SMTP_SECURITY=none
      ./target/release/ballast dev mail serve --listen "$DEV_MAIL" --dir "$DATA/mail" >"$DATA/dev-mail.log" 2>&1 &
      echo $! >"$DATA/up/dev-mail.pid"
      log "no BALLAST_SMTP_HOST: email is caught into $DATA/mail (log: $DATA/dev-mail.log)"
    fi
    log "the operator console: http://${BALLAST_CONSOLE_LISTEN:-127.0.0.1:8081} (sign in with a token from: ballast operators add NAME --role admin)"
    ./target/release/ballast serve --roles api,worker,scheduler &
    echo $! >"$DATA/up/serve.pid"
    wait "$(cat "$DATA/up/serve.pid")" || true
    ;;
  test)
    trap stop_started EXIT
    services
    install_browser
    # The replica test reads from it and stops it at its end.
    start_replica
    export BALLAST_TEST_PG_REPLICA_URL="postgres://%ROLE%:%ROLE%@127.0.0.1:$REPLICA_PORT"
    export BALLAST_TEST_PG_REPLICA_ADMIN_URL="postgres://postgres@127.0.0.1:$REPLICA_PORT/postgres"
    export BALLAST_TEST_PG_REPLICA_DATA="$DATA/replica"
    # The pooler's own tests use it on every pass; the second pass runs the fleets through it.
    start_pgbouncer
    export BALLAST_TEST_PGBOUNCER_URL="postgres://%ROLE%:%ROLE%@127.0.0.1:$PGBOUNCER_PORT"
    eval "$(print_env)"
    cd "$ROOT"
    shift
    # Most tests wait on servers and child processes rather than the CPU: four at a time
    # (on two cores) halves the run without starving the timed drills.
    export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
    # A failing assertion's message, not a backtrace, ends the output a CI summary keeps
    # (BALLAST_TEST_BACKTRACE=1 brings the frames back).
    export RUST_BACKTRACE=${BALLAST_TEST_BACKTRACE:-0}
    # The quickstart test runs `dev.sh env` with a cleared environment: it passes this on.
    export BALLAST_DATA=$DATA
    run_tests "$@"
    # The fleet drills and the tenant-isolation suite again, every fleet's pools through
    # PgBouncer in transaction pooling (migrations stay direct).
    if [ $# = 0 ] && [ "${BALLAST_TEST_PGBOUNCER:-1}" != 0 ]; then
      log "the fleet drills again, each fleet's pools through PgBouncer on 127.0.0.1:$PGBOUNCER_PORT"
      export BALLAST_TEST_FLEET_THROUGH_PGBOUNCER=1
      run_tests --test api -- "${PGBOUNCER_SUITES[@]}"
      unset BALLAST_TEST_FLEET_THROUGH_PGBOUNCER
    fi
    # The whole suite ran on one Redis; with no filter given, the Redis suites run again on a
    # Redis Cluster (every key a command or script touches together in one slot).
    if [ $# = 0 ] && [ "${BALLAST_TEST_CLUSTER:-1}" != 0 ]; then
      start_redis_cluster
      eval "$(cluster_env)"
      log "the Redis suites again, on the Redis Cluster at $REDIS_URL"
      # (The outage drills that kill Redis bring a private single Redis of their own: on the
      # cluster pass they would only repeat the first pass's run.)
      run_tests --test api -- "${CLUSTER_SUITES[@]}" --skip outage_drills::redis_
    fi
    ;;
  cluster) install_packages; start_redis_cluster; print_env; cluster_env ;;
  replica) services; start_replica; print_env; replica_env ;;
  pgbouncer) services; start_pgbouncer; print_env; pgbouncer_env ;;
  services) services; print_env ;;
  env)
    print_env
    print_shell_env
    # The local Stripe and mail catcher `up` starts when there is no real Stripe or relay, so
    # that commands run by hand (runbooks, `dev stripe …`) see what the fleet sees.
    [ -n "${STRIPE_SECRET_KEY:-}" ] || echo "export STRIPE_API_BASE=http://$DEV_STRIPE/ STRIPE_SECRET_KEY=sk_test_local_stripe"
    [ -n "${BALLAST_SMTP_HOST:-}" ] || echo "export BALLAST_SMTP_HOST=${DEV_MAIL%%:*} BALLAST_SMTP_PORT=${DEV_MAIL##*:} BALLAST_SMTP_SECURITY=none"
    ;;
  stop) stop ;;
  -h|--help|help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
