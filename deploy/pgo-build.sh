#!/usr/bin/env bash
# Builds the release `plexus` with profile-guided optimisation (PGO):
#   1. an instrumented release build, which counts how often each branch and call runs;
#   2. training: the HTTP bench (client -> two agents -> backend at 1k and 5k req/s) and the
#      TCP proxy bench (echo and bulk through two agents) run through the instrumented agents,
#      which write their counts when they exit;
#   3. the release build again, laid out and inlined for what the counts show.
#
#   deploy/pgo-build.sh     # -> target/pgo/use/<host triple>/release/plexus (path printed last)
#
# Needs llvm-profdata of the LLVM major version rustc is built with (`rustc -vV`; Debian:
# `apt-get install llvm-22` for LLVM 22). The training run needs nothing else (HAProxy, when
# installed, is measured alongside but does not matter here). Three release builds: ~15 minutes
# on two cores. Figures: BENCHMARKS.md, "profile-guided optimisation".
#
# What the training does not exercise (HTTP/2 from the app, gossip and the decision log at
# scale, certificate renewal) is compiled as cold code: correct, but not tuned for speed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
profdata=""
for candidate in "llvm-profdata-${llvm_major}" llvm-profdata; do
  if command -v "$candidate" >/dev/null &&
    "$candidate" --version 2>/dev/null | grep -q "LLVM version ${llvm_major}\."; then
    profdata="$candidate"
    break
  fi
done
if [ -z "$profdata" ]; then
  echo "deploy/pgo-build.sh: no llvm-profdata for LLVM ${llvm_major} (rustc's); install llvm-${llvm_major}" >&2
  exit 2
fi

root="$(realpath -m "${CARGO_TARGET_DIR:-target}/pgo")"
rm -rf "$root/raw"
mkdir -p "$root/raw"
# With an explicit --target, RUSTFLAGS reach only the agent's own code and its dependencies,
# not build scripts and proc macros, which would otherwise record profiles of their own
# while the agent compiles.
host="$(rustc -vV | sed -n 's/^host: //p')"

echo "== 1/3 instrumented build"
RUSTFLAGS="-Cprofile-generate=$root/raw" CARGO_TARGET_DIR="$root/generate" \
  cargo build --locked --release --target "$host" -p plexus-agent --bin plexus

echo "== 2/3 training: the HTTP and TCP proxy benches through the instrumented agents"
PLEXUS_BENCH_BINARY="$root/generate/$host/release/plexus" HTTP_BENCH_ROUNDS=3 \
  cargo bench --locked -p plexus-agent --bench http >"$root/training-http.txt"
PLEXUS_BENCH_BINARY="$root/generate/$host/release/plexus" \
  cargo bench --locked -p plexus-agent --bench proxy >"$root/training-proxy.txt"
"$profdata" merge -o "$root/plexus.profdata" "$root/raw"

echo "== 3/3 optimised build"
RUSTFLAGS="-Cprofile-use=$root/plexus.profdata" CARGO_TARGET_DIR="$root/use" \
  cargo build --locked --release --target "$host" -p plexus-agent --bin plexus
echo "$root/use/$host/release/plexus"
