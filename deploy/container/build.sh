#!/usr/bin/env bash
# Builds the Plexus container image (default tag plexus:local) from this checkout:
# a statically linked release binary, FROM scratch, non-root.
#   deploy/container/build.sh [TAG]
# PLEXUS_BINARY=path uses a binary built already, with the shared libraries it links.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-plexus:local}"
target_dir="${CARGO_TARGET_DIR:-target}/static"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
if [ -n "${PLEXUS_BINARY:-}" ]; then
  # A binary built already (CI passes its test build, to save a release build): it goes in
  # with exactly the shared libraries it needs, at the paths the loader looks for them.
  bin="$PLEXUS_BINARY"
  echo "== using $bin"
  ldd "$bin" | awk '/=>/ { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
    [ -e "$lib" ] || continue
    mkdir -p "$context/rootfs$(dirname "$lib")"
    cp -L "$lib" "$context/rootfs$lib"
  done
else
  echo "== building plexus (release, glibc linked statically)"
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --locked -p plexus-agent --bin plexus --target x86_64-unknown-linux-gnu
  bin="$target_dir/x86_64-unknown-linux-gnu/release/plexus"
  if ldd "$bin" 2>&1 | grep -q "=>"; then
    echo "$bin is not statically linked:" >&2
    ldd "$bin" >&2
    exit 1
  fi
fi
mkdir -p "$context/rootfs"
cp deploy/container/Dockerfile "$context/"
cp "$bin" "$context/plexus"
strip "$context/plexus" 2>/dev/null || true
printf 'root:x:0:0:root:/:/sbin/nologin\nplexus:x:65532:65532:plexus:/var/lib/plexus:/sbin/nologin\n' > "$context/passwd"
printf 'root:x:0:\nplexus:x:65532:\n' > "$context/group"
mkdir "$context/empty"
echo "== docker build -t $tag"
docker build --quiet -t "$tag" "$context"
docker image inspect "$tag" --format '{{.Size}}' | awk -v tag="$tag" '{ printf "%s: %.1f MB\n", tag, $1 / 1e6 }'
