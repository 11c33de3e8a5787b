#!/usr/bin/env bash
# CPU per applied webhook event: Ballast (its member, PostgreSQL and Redis processes together)
# beside stripe-sync-engine (its server and PostgreSQL), from the same open-loop sender, at one
# rate, ROUNDS times. Each round drives Ballast, then the peer, at the rate; the figures come
# from /proc (`ballast bench webhooks --peer-url`).
#
#   benches/cpu-per-event.sh PEER_DIR [ROUNDS] [RATE] [SECS]
#
# PEER_DIR: as for webhooks-vs-peer.sh (server.cjs, migrate.cjs, load.cjs, `npm install` done).
# Needs the environment `./deploy/dev.sh services` prints and target/release/ballast.
# BALLAST_BINS="old/ballast target/release/ballast" runs each build in turn in every round
# (a change against the previous build, interleaved, as the peer is).
set -euo pipefail
peer=${1:?usage: $0 PEER_DIR [ROUNDS] [RATE] [SECS]}
rounds=${2:-3}
rate=${3:-1000}
secs=${4:-10}
peer=$(cd "$peer" && pwd)
cd "$(dirname "$0")/.."
. benches/peer-database.sh
(cd "$peer" && SECRET=$secret PROCS=1 PORT=$port PEER_DATABASE_URL=$peer_db node server.cjs) &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
for round in $(seq "$rounds"); do
  for bin in ${BALLAST_BINS:-./target/release/ballast}; do
    echo "round $round $bin $("$bin" --json bench webhooks --secs "$secs" --tenants 200 --rates "$rate" \
      --sender "node $peer/load.cjs {url} {secret} {rate} {secs} {prefix} {customers}" \
      --peer-url "http://127.0.0.1:$port/" --peer-secret "$secret" --peer-matching server.cjs 2>/dev/null)"
  done
done
