#!/usr/bin/env bash
# Ballast's webhook path beside stripe-sync-engine, from the same open-loop sender, interleaved
# run by run (the machine is shared and noisy: compare medians and ranges, never one run).
#
#   benches/webhooks-vs-peer.sh PEER_DIR [ROUNDS] [RATES] [SECS]
#
# PEER_DIR holds the peer's server.cjs, migrate.cjs and load.cjs with `npm install` done (a copy
# of the stripe-sync-engine bench folder). The project's PostgreSQL and Redis must be running
# (`./deploy/dev.sh services`, then its environment), the database migrated, and
# target/release/ballast built. The peer gets a database of its own, `sse`.
#
# Per round and rate, one line each:
#   peer    RATE  {the sender's JSON: POST p50/p99, the object mirrored when the POST returns}
#   ballast RATE  {bench webhooks --sender JSON: received -> entitlements p50/p99, kept up}
set -euo pipefail
peer=${1:?usage: $0 PEER_DIR [ROUNDS] [RATES] [SECS]}
rounds=${2:-3}
rates=${3:-500,750,1000}
secs=${4:-10}
peer=$(cd "$peer" && pwd)
cd "$(dirname "$0")/.."
. benches/peer-database.sh

peer_run() {
  local rate=$1
  (cd "$peer" && SECRET=$secret PROCS=1 PORT=$port PEER_DATABASE_URL=$peer_db node server.cjs) &
  local server=$!
  until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
  echo "peer    $rate $(node "$peer/load.cjs" "http://127.0.0.1:$port/" "$secret" "$rate" "$secs" "cus_peer$RANDOM" 200)"
  kill "$server"; wait "$server" 2>/dev/null || true
}

ballast_run() {
  local rate=$1
  echo "ballast $rate $(./target/release/ballast --json bench webhooks --secs "$secs" --tenants 200 --rates "$rate" \
    --sender "node $peer/load.cjs {url} {secret} {rate} {secs} {prefix} {customers}" 2>/dev/null)"
}

for round in $(seq "$rounds"); do
  for rate in ${rates//,/ }; do
    # Alternate who goes first, so neither always runs on the warmer machine.
    if [ $((round % 2)) = 1 ]; then peer_run "$rate"; ballast_run "$rate"; else ballast_run "$rate"; peer_run "$rate"; fi
  done
done
