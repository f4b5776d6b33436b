#!/usr/bin/env bash
# Starts the three tiers of examples/three-tier on this machine, all on
# loopback, and prints what to try; Ctrl-C stops everything.
#
#   examples/three-tier/run.sh
#
# Needs: cargo (the repository's toolchain), redis-server, python3, openssl,
# curl. Ports: edge 8443; platform 8180-8182; apps 9001, 9101-9102,
# 9201-9202; data tier 6390 (write), 6391 (read); Redis 6401 (primary),
# 6402 (replica).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

for tool in cargo redis-server redis-cli python3 openssl curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

echo "== building the proxy and the policies"
cargo build --release --quiet -p wasmroute
cargo policies >/dev/null
target="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target/release/wasmroute"
mkdir -p "$here/policies.d" "$here/certs"
cp "$target"/policies/{content-router,round-robin,least-connections}.wasm "$here/policies.d/"
if [ ! -f "$here/certs/edge.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=edge.test -addext subjectAltName=DNS:edge.test,IP:127.0.0.1 \
    -keyout "$here/certs/edge.key" -out "$here/certs/edge.pem" 2>/dev/null
fi

work="$(mktemp -d)"
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

start() { # NAME COMMAND...: runs it in the background, output in $work/NAME.log
  local name="$1"; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=("$!")
}

wait_for() { # WHAT COMMAND...: retries the command for up to 20 s
  local what="$1"; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$what did not come up; logs in $work" >&2
  tail -n 20 "$work"/*.log >&2
  exit 1
}

echo "== tier 3: Redis primary :6401, replica :6402, data tier :6390/:6391"
start redis-primary redis-server --port 6401 --bind 127.0.0.1 --save "" --appendonly no --dir "$work"
start redis-replica redis-server --port 6402 --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --replicaof 127.0.0.1 6401
wait_for "redis" redis-cli -p 6402 ping
start data "$bin" serve --config "$here/data.toml"
wait_for "the data tier" redis-cli -p 6390 ping

echo "== application servers"
start apps python3 "$here/app.py" --write 127.0.0.1:6390 --read 127.0.0.1:6391 \
  web:9001 video:9101 video:9102 billing:9201 billing:9202
wait_for "the application servers" curl -sf http://127.0.0.1:9001/healthz

echo "== tier 2: platform load balancers :8180-8182"
start platform "$bin" serve --config "$here/platform.toml"
wait_for "the platform tier" curl -sf http://127.0.0.1:8181/

echo "== tier 1: edge https://127.0.0.1:8443"
start edge "$bin" serve --config "$here/edge.toml"
wait_for "the edge" curl -skf https://127.0.0.1:8443/

cat <<TRY

All three tiers are up (logs in $work). Try:
  curl -k https://127.0.0.1:8443/video/1      # edge -> video LB -> app 9101/9102 -> Redis
  curl -k https://127.0.0.1:8443/billing/pay  # edge -> billing LB -> app 9201/9202
  curl -k https://127.0.0.1:8443/             # edge -> web LB -> app 9001
  redis-cli -p 6390 get hits:video            # the data tier's write port (primary)
  redis-cli -p 6391 get hits:video            # its read port (replica)
Fail over the database and watch the write port follow the new primary:
  redis-cli -p 6402 replicaof no one && redis-cli -p 6401 replicaof 127.0.0.1 6402
  redis-cli -p 6390 info replication | grep role   # role:master, now on :6402
Ctrl-C stops everything.
TRY
wait
