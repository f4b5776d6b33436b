#!/usr/bin/env bash
# The proxy under bench/peers.sh in https mode (../shared/bench/peers.sh): writes a config
# with peers.sh's certificate (BENCH_CERT, BENCH_KEY) and runs the release
# binary on the fixed "ours" ports (http 18084, https 18445), round robin
# over the two bench backends. Build first:
#   cargo build --release -p wasmroute && cargo policies
# then from the repository root:
#   bench/peers.sh --mode https
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cfg="$BENCH_DIR/wasmroute.toml"
cat > "$cfg" <<TOML
[policies]
dir = "$root/target/policies"

[[listeners]]
name = "plain"
address = "127.0.0.1:18084"
policy = "round-robin"
pools = ["web"]

[[listeners]]
name = "secure"
address = "127.0.0.1:18445"
protocol = "https"
policy = "round-robin"
pools = ["web"]
[[listeners.certificates]]
cert = "$BENCH_CERT"
key = "$BENCH_KEY"

[[pools]]
name = "web"
backends = [ { address = "127.0.0.1:18080" }, { address = "127.0.0.1:18082" } ]
TOML
exec "$root/target/release/wasmroute" serve --config "$cfg" --workers 1
