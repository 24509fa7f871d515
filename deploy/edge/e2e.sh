#!/usr/bin/env bash
# The edge cluster end to end: build the image, make the PKI, start five agents and four
# backends (docker-compose.yml), send traffic from the host through node-5, kill a serving
# container, cut another off the network, check that traffic keeps succeeding and that the
# mesh heals, and tear everything down.
#
#   deploy/edge/e2e.sh          # the whole test (what .ci/run calls when Docker is present)
#   deploy/edge/e2e.sh up       # build and start the cluster, and leave it running
#   deploy/edge/e2e.sh down     # stop it and remove its volumes
#
# Traffic goes only to 127.0.0.1:15001 (node-5's published listener) and, inside the
# cluster, between its own containers on their own bridge network.
set -euo pipefail
cd "$(dirname "$0")"
project=plexus-edge
export PLEXUS_IMAGE="${PLEXUS_IMAGE:-plexus:local}"
export PLEXUS_EDGE_STATE="${PLEXUS_EDGE_STATE:-${TMPDIR:-/tmp}/plexus-edge}"
compose() { docker-compose -p "$project" -f docker-compose.yml "$@"; }
say() { printf '== %s\n' "$*"; }

down() {
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$PLEXUS_EDGE_STATE"
}

up() {
  down
  ../container/build.sh "$PLEXUS_IMAGE"
  say "PKI: mesh CA, join token, certificates of the first voters ($PLEXUS_EDGE_STATE/pki)"
  mkdir -p "$PLEXUS_EDGE_STATE/pki"
  chown 65532:65532 "$PLEXUS_EDGE_STATE/pki"
  pki() { docker run --rm -v "$PLEXUS_EDGE_STATE/pki:/pki" "$PLEXUS_IMAGE" pki "$@" >/dev/null; }
  pki init --trust-domain edge.plexus --out /pki
  for node in node-1 node-2 node-3; do
    pki issue --ca /pki --node "$node" --out "/pki/$node"
  done
  say "starting the cluster"
  compose up -d
}

# GET / through node-5 `count` times, one every `gap` seconds, in the background; each line
# of `file` is the status code and the backend that answered.
load() {
  local file=$1 count=$2 gap=$3
  : > "$file"
  for _ in $(seq "$count"); do
    curl -s -m 3 -o /dev/null -w '%{http_code} %header{x-backend}\n' http://127.0.0.1:15001/ \
      >> "$file" 2>/dev/null &
    sleep "$gap"
  done
  wait
}

ratio() { awk '{ n++ } $1 == "200" { ok++ } END { printf "%.4f", (n ? ok / n : 0) }' "$1"; }
served_by() { awk -v b="$2" '$1 == "200" && $2 == b { n++ } END { print n + 0 }' "$1"; }

alive_members() {
  docker exec plexus-edge-node-5 plexus ctl peers --json 2>/dev/null \
    | python3 -c 'import json, sys; print(sum(m["state"] == "alive" for m in json.load(sys.stdin)["members"]))' 2>/dev/null \
    || echo 0
}

# Waits (at most `limit` seconds) until `check` succeeds.
within() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
    sleep 1
  done
}

every_backend_serves() {
  load "$work/probe" 40 0.05
  for b in backend-1 backend-2 backend-3 backend-4; do
    [ "$(served_by "$work/probe" "$b")" -gt 0 ] || return 1
  done
}
five_alive() { [ "$(alive_members)" = 5 ]; }

fail() {
  echo "FAIL: $*" >&2
  for node in node-1 node-4 node-5; do
    echo "--- logs of $node (last 20 lines)" >&2
    docker logs --tail 20 "plexus-edge-$node" >&2 2>&1 || true
  done
  down
  exit 1
}

e2e() {
  work="$(mktemp -d)"
  trap 'rm -rf "$work"; down' EXIT
  up
  say "waiting for the joiners' leaves and for traffic to reach every backend (at most 120 s)"
  within 120 every_backend_serves || fail "traffic never reached every backend"
  within 30 five_alive || fail "node-5 does not see five live members"
  docker exec plexus-edge-node-4 plexus ctl certs --json \
    | python3 -c 'import json, sys; c = json.load(sys.stdin); assert c["leaf"]["spiffe_id"].endswith("/node/node-4"), c; assert c["ca"]["in_decision_log"], c' \
    || fail "node-4 did not join with its token"
  say "joined: node-4 and node-5 hold leaves from the leader; all four backends serve"

  say "load: 600 requests over ~30 s; kill node-2 after 5 s, cut node-3 off the network after 12 s"
  load "$work/faults" 600 0.05 &
  loader=$!
  sleep 5
  docker kill plexus-edge-node-2 >/dev/null
  sleep 7
  docker network disconnect -f "${project}_edge" plexus-edge-node-3
  wait "$loader"
  local during
  during="$(ratio "$work/faults")"
  say "success during the faults: $during ($(wc -l < "$work/faults") requests)"
  awk -v r="$during" 'BEGIN { exit !(r >= 0.99) }' || fail "success ratio $during < 0.99"

  say "healing: node-3 reconnected, node-2 started again"
  docker network connect --ip 10.213.77.13 "${project}_edge" plexus-edge-node-3
  docker start plexus-edge-node-2 >/dev/null
  within 90 five_alive || fail "the mesh did not heal: $(alive_members) live members seen by node-5"
  within 60 every_backend_serves || fail "traffic did not return to every backend"
  load "$work/after" 200 0.02
  local after
  after="$(ratio "$work/after")"
  say "success after healing: $after"
  awk -v r="$after" 'BEGIN { exit !(r >= 0.999) }' || fail "success ratio after healing $after < 0.999"
  say "PASS: edge cluster kept serving through a killed and a disconnected agent, and healed"
}

case "${1:-e2e}" in
  up) up ;;
  down) down ;;
  e2e) e2e ;;
  *) echo "usage: $0 [e2e|up|down]" >&2; exit 2 ;;
esac
