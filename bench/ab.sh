#!/usr/bin/env bash
# Two builds of wasmroute side by side on loopback, in interleaved wrk
# rounds, so that machine drift hits both alike: requests per second and
# the proxy's own CPU time per request (user + system, from /proc), which
# is steadier than throughput on a noisy machine. Quote the comparison of
# one run, not absolute figures.
#
# usage: bench/ab.sh OLD_BINARY NEW_BINARY [--conns C] [--rounds N] [--duration S]
#
# Two nginx backends on 127.0.0.1:18080 and :18082 (as bench/peers.sh
# uses), OLD on 127.0.0.1:18084 and NEW on :18085, each with
# bench/peers-http.toml's round-robin listener, one worker, pinned to CPU 1;
# wrk and the backends on CPU 0. Build the policies first (`cargo
# policies`). Needs nginx and wrk (Debian packages). Loopback only; bounded
# by rounds x duration.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,16p' "$0"; exit 2; }
old="$(realpath "$1")"; new="$(realpath "$2")"; shift 2
conns=64; rounds=4; duration=4
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns="$2"; shift 2;;
    --rounds) rounds="$2"; shift 2;;
    --duration) duration="$2"; shift 2;;
    *) echo "bench/ab.sh: unknown option $1" >&2; exit 2;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  nginx -c "$dir/nginx.conf" -p "$dir" -s stop 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:18080; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:18082; location / { return 200 "ok\n"; } }
}
EOF
taskset -c 0 nginx -c "$dir/nginx.conf" -p "$dir"

# The benchmark config, its policies folder made absolute, on PORT.
config_on() {
  sed -e "s|^dir = .*|dir = \"$root/target/policies\"|" \
      -e "s|127.0.0.1:18084|127.0.0.1:$1|" \
      -e '/^# tcp mode/,$d' "$root/bench/peers-http.toml" > "$dir/$1.toml"
  echo "$dir/$1.toml"
}
start() {
  taskset -c 1 "$1" serve --config "$(config_on "$2")" --workers 1 2>"$dir/$2.log" &
  pids+=("$!")
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench/ab.sh: $1 did not serve on $2" >&2; cat "$dir/$2.log" >&2; exit 1
}
start "$old" 18084
start "$new" 18085

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A sum_rps sum_cpu
for round in $(seq 1 "$rounds"); do
  for pair in "old:18084:${pids[0]}" "new:18085:${pids[1]}"; do
    IFS=: read -r name port pid <<<"$pair"
    before=$(cpu_ticks "$pid")
    out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$port/")
    after=$(cpu_ticks "$pid")
    requests=$(awk '/requests in/ {gsub(",", "", $1); print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    us=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$hz" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
    echo "round $round $name: $rps requests/s, $us us CPU per request"
    sum_rps[$name]=$(awk -v a="${sum_rps[$name]:-0}" -v b="$rps" 'BEGIN {print a + b}')
    sum_cpu[$name]=$(awk -v a="${sum_cpu[$name]:-0}" -v b="$us" 'BEGIN {print a + b}')
  done
done
for name in old new; do
  awk -v n="$name" -v r="${sum_rps[$name]}" -v c="${sum_cpu[$name]}" -v k="$rounds" \
    'BEGIN {printf "%s: mean %.0f requests/s, %.2f us CPU per request\n", n, r / k, c / k}'
done
awk -v o="${sum_cpu[old]}" -v n="${sum_cpu[new]}" 'BEGIN {printf "new/old CPU per request: %.3f\n", n / o}'
