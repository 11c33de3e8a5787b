# Sourced by the peer benchmarks: a fresh database `sse` for stripe-sync-engine on the project's
# PostgreSQL, migrated by the peer's own migrate.cjs. Needs $peer (the peer's folder) and the
# environment `./deploy/dev.sh services` prints; sets $peer_db, $secret and $port.
: "${BALLAST_TEST_PG_ADMIN_URL:?run with the environment ./deploy/dev.sh services prints}"
peer_db=${BALLAST_TEST_PG_ADMIN_URL%/*}/sse
psql "$BALLAST_TEST_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS sse" -c "CREATE DATABASE sse" >/dev/null
(cd "$peer" && PEER_DATABASE_URL=$peer_db node migrate.cjs >/dev/null)
secret=whsec_peer_bench
port=8090
