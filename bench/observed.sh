#!/usr/bin/env bash
# The cost of the operations surface, in one run: the same release build on
# bench/peers-http.toml (metrics unscraped, no access log) and on
# bench/peers-http-observed.toml (the admin endpoint and a JSON access log
# to a file), started in turn in front of the same two nginx backends and
# measured with wrk in interleaved rounds, so machine drift hits both alike.
# Pinning as in peers.sh: the proxy on CPU 1 with one worker, wrk and the
# backends on CPU 0. Loopback only; bounded in count and time. Build first:
#   cargo build --release -p wasmroute && cargo policies
# usage: bench/observed.sh [--rounds N] [--duration S] [--conns C]
# Needs: nginx, wrk (Debian packages of those names).
set -euo pipefail
rounds=5; duration=6; conns=64
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2;;
    --duration) duration="$2"; shift 2;;
    --conns) conns="$2"; shift 2;;
    *) echo "unknown argument: $1" >&2; exit 2;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
binary="$root/target/release/wasmroute"
[ -x "$binary" ] || { echo "build first: cargo build --release -p wasmroute && cargo policies" >&2; exit 2; }
for tool in nginx wrk taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx wrk)" >&2; exit 2; }
done
dir=$(mktemp -d -t observed.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir" "$root/target/bench-access.log"; }
trap cleanup EXIT
for port in 18080 18082; do
  cat > "$dir/backend-$port.conf" <<CONF
worker_processes 1; daemon off; error_log $dir/nginx-err.log warn; pid $dir/backend-$port.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$port reuseport backlog=4096; location / { return 200 "hello from $port\n"; } } }
CONF
  taskset -c 0 nginx -p "$dir" -c "$dir/backend-$port.conf" & pids+=($!)
done

# One measurement of `config`: start the proxy, wait for its port, warm up,
# measure, stop it. Prints requests per second.
measure() {
  local config="$1"
  (cd "$root/bench" && exec taskset -c 1 "$binary" serve --config "$config" --workers 1 2>>"$dir/proxy.log") &
  local proxy=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/18084) 2>/dev/null && break
    sleep 0.05
  done
  taskset -c 0 wrk -t1 -c"$conns" -d2s http://127.0.0.1:18084/ >/dev/null
  taskset -c 0 wrk -t1 -c"$conns" -d"${duration}s" http://127.0.0.1:18084/ |
    awk '/Requests\/sec/ { printf "%d\n", $2 }'
  kill -TERM "$proxy"; wait "$proxy" 2>/dev/null || true
}

plain=(); observed=()
for round in $(seq "$rounds"); do
  plain+=("$(measure peers-http.toml)")
  observed+=("$(measure peers-http-observed.toml)")
  echo "round $round: off ${plain[-1]} req/s, on ${observed[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
off=$(median "${plain[@]}"); on=$(median "${observed[@]}")
echo "median: off $off req/s, on $on req/s, on/off $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }')"
