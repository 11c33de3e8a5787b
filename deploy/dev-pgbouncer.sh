# PgBouncer in transaction pooling in front of the local PostgreSQL, for deploy/dev.sh (sourced by
# it: uses its DATA, PG_PORT, DB, log, die, as_pg, port_free_or_die and STARTED).
#
# Which PgBouncer: Debian's. sqlx names and reuses prepared statements, which a pooler in
# transaction mode keeps across server connections only from PgBouncer 1.21 on
# (max_prepared_statements). Debian's installed or candidate package is used when it is that
# new (trixie ships 1.24); bookworm's is 1.18, so on bookworm this builds Debian trixie's own
# source package of 1.24.1 (the upstream release and Debian's patches, checksums pinned
# below) into $DATA/pgbouncer-build: about 15 s, once per data folder.

PGBOUNCER_PORT=${BALLAST_PGBOUNCER_PORT:-56432}
PGBOUNCER_DEB_VERSION=1.24.1-1+deb13u2
PGBOUNCER_POOL=https://deb.debian.org/debian/pool/main/p/pgbouncer
PGBOUNCER_SOURCES=(
  "pgbouncer_1.24.1.orig.tar.gz da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0"
  "pgbouncer_$PGBOUNCER_DEB_VERSION.debian.tar.xz 2325bcaa2e71919d399b9e5aef5b94ff988fc1f1d296908c3937b682b7be5cbb"
)

# Whether version $1 (1.24.1, 1.18.0-1+deb12u1) keeps prepared statements in transaction mode.
pgbouncer_new_enough() {
  local major minor
  IFS=. read -r major minor _ <<<"${1%%-*}"
  [ "${major:-0}" -gt 1 ] || { [ "${major:-0}" = 1 ] && [ "${minor:-0}" -ge 21 ]; }
}

# Prints the path of a PgBouncer of 1.21 or later, installing or building one if need be.
pgbouncer_binary() {
  local built="$DATA/pgbouncer-build/$PGBOUNCER_DEB_VERSION/bin/pgbouncer" candidate
  if [ -x /usr/sbin/pgbouncer ] && pgbouncer_new_enough "$(/usr/sbin/pgbouncer --version | sed -n 's/^PgBouncer \([0-9.]*\).*/\1/p')"; then
    echo /usr/sbin/pgbouncer; return 0
  fi
  [ -x "$built" ] && { echo "$built"; return 0; }
  [ "$(id -u)" = 0 ] || die "PgBouncer 1.21 or later is missing: apt-get install pgbouncer (Debian trixie or later), or run as root"
  export DEBIAN_FRONTEND=noninteractive
  candidate=$(apt-cache policy pgbouncer 2>/dev/null | sed -n 's/^ *Candidate: //p')
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && pgbouncer_new_enough "$candidate"; then
    log "installing pgbouncer $candidate from Debian packages"
    apt-get install -y -qq pgbouncer >/dev/null
    systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    echo /usr/sbin/pgbouncer; return 0
  fi
  build_pgbouncer "$built"
  echo "$built"
}

# Debian's source package of PgBouncer $PGBOUNCER_DEB_VERSION, built for this machine.
build_pgbouncer() {
  local built=$1 src="$DATA/pgbouncer-build/src" entry file sum
  log "Debian's pgbouncer here is older than 1.21: building Debian's $PGBOUNCER_DEB_VERSION source package"
  if ! dpkg -s libevent-dev libc-ares-dev libssl-dev pkg-config make gcc curl >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq libevent-dev libc-ares-dev libssl-dev pkg-config make gcc curl >/dev/null
  fi
  rm -rf "$src" && mkdir -p "$src"
  for entry in "${PGBOUNCER_SOURCES[@]}"; do
    read -r file sum <<<"$entry"
    curl -fsSL --retry 3 -o "$DATA/pgbouncer-build/$file" "$PGBOUNCER_POOL/$file" || die "could not download $PGBOUNCER_POOL/$file"
    echo "$sum  $DATA/pgbouncer-build/$file" | sha256sum -c --quiet - || die "$file does not match its pinned checksum"
  done
  tar -xzf "$DATA/pgbouncer-build/pgbouncer_1.24.1.orig.tar.gz" -C "$src" --strip-components=1
  tar -xJf "$DATA/pgbouncer-build/pgbouncer_$PGBOUNCER_DEB_VERSION.debian.tar.xz" -C "$src"
  (
    cd "$src"
    while read -r patch; do
      [ -n "$patch" ] && patch -p1 -s <"debian/patches/$patch"
    done <debian/patches/series
    ./configure --prefix="$(dirname "$(dirname "$built")")" --with-cares=yes >build.log 2>&1 \
      && make -j"$(nproc)" >>build.log 2>&1 && make install >>build.log 2>&1
  ) || die "building PgBouncer failed (log: $src/build.log)"
}

# The local PgBouncer: every database of the local PostgreSQL by its own name, transaction
# pooling, prepared statements kept. Trust, as the local PostgreSQL itself (initdb --auth=trust);
# production authenticates (deploy/k8s/pgbouncer.yaml).
start_pgbouncer() {
  local bin dir="$DATA/pgbouncer"
  if [ -s "$dir/pgbouncer.pid" ] && kill -0 "$(cat "$dir/pgbouncer.pid")" 2>/dev/null; then
    return 0
  fi
  bin=$(pgbouncer_binary)
  port_free_or_die "$PGBOUNCER_PORT" PgBouncer BALLAST_PGBOUNCER_PORT
  if [ "$(id -u)" = 0 ]; then install -d -o postgres -g postgres "$dir"; else mkdir -p "$dir"; fi
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
; To PostgreSQL through its Unix socket (cheaper per round trip than loopback TCP, as dev.sh's
; own URLs); the fleet reaches PgBouncer over TCP, as it would across a network.
* = host=$DATA/pgsock port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
; sqlx's named statements, re-prepared on whichever server connection a transaction gets.
max_prepared_statements = 200
; Server connections per database and role: the suite's fleets share them.
default_pool_size = 20
max_client_conn = 5000
; sqlx asks for extra_float_digits (results come back binary, exact either way); Ballast asks
; for jit=off in options, which the roles' own setting (deploy/postgres-roles.sql) holds here.
ignore_startup_parameters = extra_float_digits, options
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
admin_users = postgres
stats_users = postgres
INI
  printf '"%s" ""\n' ballast_app ballast_system ballast_owner postgres >"$dir/userlist.txt"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir/pgbouncer.ini" "$dir/userlist.txt"
  log "starting PgBouncer (transaction pooling) on 127.0.0.1:$PGBOUNCER_PORT"
  # One descriptor per client and per server connection.
  (ulimit -n 12000 2>/dev/null || true; as_pg "$bin" -d "$dir/pgbouncer.ini") \
    || { tail -5 "$dir/pgbouncer.log" >&2; die "PgBouncer did not start (log: $dir/pgbouncer.log)"; }
  for _ in $(seq 1 100); do
    psql -qAt -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U ballast_app -d "$DB" -c 'SELECT 1' >/dev/null 2>&1 && { STARTED+=(pgbouncer); return 0; }
    sleep 0.1
  done
  die "PgBouncer did not answer on 127.0.0.1:$PGBOUNCER_PORT (log: $dir/pgbouncer.log)"
}

stop_pgbouncer() {
  local pid
  pid=$(cat "$DATA/pgbouncer/pgbouncer.pid" 2>/dev/null) || return 0
  if [ -n "$pid" ] && grep -q pgbouncer "/proc/$pid/cmdline" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "PgBouncer stopped"
  fi
}

# The fleet's two pooled roles through PgBouncer; migrations (the owner) stay direct: they hold
# a session lock, which transaction pooling does not keep.
pgbouncer_env() {
  cat <<ENV
export DATABASE_URL='postgres://ballast_app:ballast_app@127.0.0.1:$PGBOUNCER_PORT/$DB'
export BALLAST_SYSTEM_DATABASE_URL='postgres://ballast_system:ballast_system@127.0.0.1:$PGBOUNCER_PORT/$DB'
ENV
}
