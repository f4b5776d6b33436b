#!/usr/bin/env bash
# wasmroute against nginx and HAProxy on loopback: runs the shared
# side-by-side benchmark (peers.sh, kept beside this repository in
# ../shared/bench/) with this repository's release build as "ours", on the
# configs in this folder. Build first:
#   cargo build --release -p wasmroute && cargo policies
# usage: bench/peers.sh [--observed|--shadow] [peers.sh options: --mode M --conns C --close ...]
#   --observed  the config with the admin endpoint and a JSON access log on
#               (bench/peers-http-observed.toml) instead of bench/peers-http.toml
#   --shadow    the config with a shadow candidate deciding every request
#               (bench/peers-http-shadow.toml)
# https mode runs bench/ours-https.sh (its own config, with peers.sh's
# certificate). Quote the ratios of one run, not absolute figures.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peers="$root/../shared/bench/peers.sh"
[ -x "$peers" ] || { echo "bench/peers.sh: needs $peers" >&2; exit 2; }
config=bench/peers-http.toml
if [ "${1:-}" = --observed ]; then config=bench/peers-http-observed.toml; shift; fi
if [ "${1:-}" = --shadow ]; then config=bench/peers-http-shadow.toml; shift; fi
mode=http
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = --mode ]; then mode="${args[$((i + 1))]:-http}"; fi
done
cd "$root"
if [ "$mode" = https ]; then
  ours=bench/ours-https.sh
else
  ours="target/release/wasmroute serve --config $config --workers 1"
fi
exec "$peers" --ours "$ours" "$@"
