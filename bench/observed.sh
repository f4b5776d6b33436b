#!/usr/bin/env bash
# The cost of the operations surface, in one run: the same release build on
# bench/peers-http.toml (metrics unscraped, no access log) and on
# bench/peers-http-observed.toml (the admin endpoint and a JSON access log
# to a file), side by side in front of the same two nginx backends and
# loaded at the same time (bench/ab.sh: the median over rounds of each
# round's on/off ratio of the proxy's CPU time per request, and what it
# means for a saturated core's throughput: at least 0.95 is the target).
# Pinning as in peers.sh: the proxies on CPU 1 with one worker each, wrk
# and the backends on CPU 0. Loopback only; bounded in count and time.
# Build first:
#   cargo build --release -p wasmroute && cargo policies
# usage: bench/observed.sh [--rounds N] [--duration S] [--conns C]
# Needs: nginx, wrk (Debian packages of those names).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
binary="$root/target/release/wasmroute"
[ -x "$binary" ] || { echo "build first: cargo build --release -p wasmroute && cargo policies" >&2; exit 2; }
exec "$root/bench/ab.sh" "$binary" "$binary" --names off:on --rounds 8 --duration 5 \
  --a-config "$root/bench/peers-http.toml" --b-config "$root/bench/peers-http-observed.toml" "$@"
