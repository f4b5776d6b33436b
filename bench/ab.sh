#!/usr/bin/env bash
# Two wasmroute proxies side by side on loopback (two builds, or one build
# on two configs), loaded at the same time by two wrk runs, round after
# round: each proxy's requests per second and its own CPU time per request
# (user + system, from /proc), and the median over rounds of each round's
# B/A ratio. Measured at once, both see the same machine: on a shared VM,
# where one proxy alone swings by 20% between rounds, B/A of the same build
# stays within 1.5%. The CPU ratio is the cost: a proxy that saturates its
# core serves 1/CPU-per-request, so B/A CPU 1.05 is B/A throughput 0.95 in
# bench/peers.sh (the requests/s ratio measured here is narrower, the two
# sharing one core). Quote the comparison of one run, not absolute figures.
#
# usage: bench/ab.sh A_BINARY B_BINARY [--a-config F] [--b-config F]
#                    [--names A:B] [--conns C] [--rounds N] [--duration S]
#
# Two nginx backends on 127.0.0.1:18080 and :18082 (as bench/peers.sh
# uses); A on 127.0.0.1:18084 and B on :18085, with C connections each
# (default 64), each on its config (default bench/peers-http.toml: its
# HTTP listener, its policies folder made absolute, an [admin] endpoint
# moved to port +100, an access log file into a temporary folder), one
# worker each, both pinned to CPU 1; wrk and the backends on CPU 0. Build
# the policies first (`cargo policies`). Needs nginx and wrk (Debian
# packages). Loopback only; bounded by rounds x duration.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,23p' "$0"; exit 2; }
a_bin="$(realpath "$1")"; b_bin="$(realpath "$2")"; shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
a_config="$root/bench/peers-http.toml"; b_config="$a_config"
a_name=old; b_name=new
conns=64; rounds=6; duration=5
while [ $# -gt 0 ]; do
  case "$1" in
    --a-config) a_config="$(realpath "$2")"; shift 2;;
    --b-config) b_config="$(realpath "$2")"; shift 2;;
    --names) a_name="${2%%:*}"; b_name="${2#*:}"; shift 2;;
    --conns) conns="$2"; shift 2;;
    --rounds) rounds="$2"; shift 2;;
    --duration) duration="$2"; shift 2;;
    *) echo "bench/ab.sh: unknown option $1" >&2; exit 2;;
  esac
done
dir="$(mktemp -d)"
# The access logs in a folder of their own: the proxy watches its config's
# folder, and each write to a log there would wake its watcher.
mkdir "$dir/logs"
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

# CONFIG moved to PORT: policies folder absolute, the bench listener on
# PORT, the admin endpoint on PORT + 100, the access log in $dir/logs, no tcp
# listener.
config_on() {
  sed -e "s|^dir = .*|dir = \"$root/target/policies\"|" \
      -e "s|127.0.0.1:18084|127.0.0.1:$2|" \
      -e "s|127.0.0.1:18185|127.0.0.1:$(($2 + 100))|" \
      -e "s|^path = .*|path = \"$dir/logs/access-$2.log\"|" \
      -e '/^# tcp mode/,$d' "$1" > "$dir/$2.toml"
  echo "$dir/$2.toml"
}
start() { # binary config port
  taskset -c 1 "$1" serve --config "$(config_on "$2" "$3")" --workers 1 2>"$dir/$3.log" &
  pids+=("$!")
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$3/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench/ab.sh: $1 did not serve on $3" >&2; cat "$dir/$3.log" >&2; exit 1
}
start "$a_bin" "$a_config" 18084
start "$b_bin" "$b_config" 18085

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
requests_in() { awk '/requests in/ {gsub(",", "", $1); print $1}' "$1"; }
# One round: both proxies loaded for SECONDS; "A_RPS A_US B_RPS B_US".
round() {
  local seconds="$1" a0 b0 a1 b1
  a0=$(cpu_ticks "${pids[0]}"); b0=$(cpu_ticks "${pids[1]}")
  taskset -c 0 wrk -t1 -c"$conns" -d"${seconds}s" http://127.0.0.1:18084/ > "$dir/a.out" &
  local wa=$!
  taskset -c 0 wrk -t1 -c"$conns" -d"${seconds}s" http://127.0.0.1:18085/ > "$dir/b.out"
  wait "$wa"
  a1=$(cpu_ticks "${pids[0]}"); b1=$(cpu_ticks "${pids[1]}")
  awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v na="$(requests_in "$dir/a.out")" \
      -v nb="$(requests_in "$dir/b.out")" -v s="$seconds" -v hz="$hz" \
    'BEGIN {printf "%.0f %.2f %.0f %.2f\n", na / s, a * 1e6 / hz / na, nb / s, b * 1e6 / hz / nb}'
}
round 2 >/dev/null # warm-up: connections, caches

results="$dir/results"; : > "$results"
for r in $(seq 1 "$rounds"); do
  got=$(round "$duration")
  read -r a_rps a_us b_rps b_us <<<"$got"
  echo "round $r: $a_name $a_rps requests/s $a_us us CPU per request; $b_name $b_rps requests/s $b_us us CPU per request"
  echo "$got" >> "$results"
done
python3 - "$results" "$a_name" "$b_name" <<'PY'
import sys, statistics
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
med = statistics.median
print(f"{a}: median {med([r[0] for r in rows]):.0f} requests/s, {med([r[1] for r in rows]):.2f} us CPU per request")
print(f"{b}: median {med([r[2] for r in rows]):.0f} requests/s, {med([r[3] for r in rows]):.2f} us CPU per request")
cpu = sorted(r[3] / r[1] for r in rows)
rps = sorted(r[2] / r[0] for r in rows)
print(f"{b}/{a} CPU per request, median of {len(rows)} rounds: {med(cpu):.3f} (rounds {cpu[0]:.3f} to {cpu[-1]:.3f}); "
      f"as throughput of a saturated core: {1 / med(cpu):.3f}")
print(f"{b}/{a} requests/s side by side, median: {med(rps):.3f} (rounds {rps[0]:.3f} to {rps[-1]:.3f})")
PY
