#!/usr/bin/env bash
# Where each proxy's core goes, per request: runs bench/peers.sh (any of its
# options) and, from /proc, adds up the time nginx, HAProxy and wasmroute
# spent on CPU 1 over the run (user, system, and the softirq time the
# kernel counts to the CPU: a loopback send delivers to the peer's socket
# there), divided by the requests each served (its rounds' requests/s x
# duration). On loopback the kernel's part (two sends and two receives per
# keep-alive request, and the peer's TCP receive each send runs) is the
# same work for every proxy; what a proxy's own code can win is bounded by
# it: "ceiling" is the better peer's core time per request over
# wasmroute's without its user time, the ratio wasmroute would reach with
# no user time at all.
#
# usage: bench/split.sh [bench/peers.sh options: --mode M --conns C ...]
# Build first: cargo build --release -p wasmroute && cargo policies
# Needs what bench/peers.sh needs. Loopback only; bounded as peers.sh is.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mktemp -t split.XXXXXX)"; rm -f "$out"
samples="$(mktemp -t split-samples.XXXXXX)"
trap 'rm -f "$out" "$samples"' EXIT
duration=8
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = --duration ]; then duration="${args[$((i + 1))]}"; fi
done

"$root/bench/peers.sh" "$@" --out "$out" &
peers=$!

# The proxies' processes, once peers.sh has started them (pinned to CPU 1,
# so the backends, also nginx, are told apart by their config).
pids_of() { # name
  case "$1" in
    nginx) local master; master=$(pgrep -f 'nginx.*peers\.[^/]*/nginx\.conf' || true)
      [ -z "$master" ] || { echo "$master"; pgrep -P "$master" || true; };;
    haproxy) pgrep -x haproxy || true;;
    ours) pgrep -f 'wasmroute serve' || true;;
  esac
}
# The baseline: once every proxy listens (after wasmroute's start-up
# compile of its modules), before the first round.
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 1 600); do
  up 18081 && up 18083 && up 18084 && break
  kill -0 "$peers" 2>/dev/null || exit 1
  sleep 0.05
done
sleep 0.3

# Every 50 ms until peers.sh writes its results (the proxies are idle
# after their last round): each proxy's user and system ticks, and CPU 1's
# busy and interrupt ticks, CPU 0's busy ticks and CPU 1's elapsed ticks. The kernel runs a loopback send's delivery to
# the peer as a softirq, which it counts to the CPU, not to the process:
# each interval's CPU 1 time goes to the proxy that ran in it.
taskset -c 0 python3 - "$out" "$peers" "$(pids_of nginx | tr '\n' ,)" \
  "$(pids_of haproxy | tr '\n' ,)" "$(pids_of ours | tr '\n' ,)" > "$samples" <<'PY'
import os, sys, time
out, peers = sys.argv[1], int(sys.argv[2])
groups = [[int(p) for p in g.split(",") if p] for g in sys.argv[3:6]]
def ticks(pids):
    user = system = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]); system += int(fields[12])
    return user, system
def cpus():
    busy = {}
    for line in open("/proc/stat"):
        if line.startswith(("cpu0 ", "cpu1 ")):
            v = list(map(int, line.split()[1:]))
            busy[line[:4]] = (sum(v) - v[3] - v[4], v[5] + v[6], sum(v))
    (load, _, _), (core, interrupts, total) = busy["cpu0"], busy["cpu1"]
    return core, interrupts, load, total
def alive():
    try:
        os.kill(peers, 0)
        return True
    except OSError:
        return False
while alive() and not (os.path.exists(out) and os.path.getsize(out) > 0):
    row = [t for g in groups for t in ticks(g)] + list(cpus())
    print(" ".join(map(str, row)), flush=True)
    time.sleep(0.05)
PY
wait "$peers"

python3 - "$out" "$samples" "$duration" "$(getconf CLK_TCK)" <<'PY'
import sys
results, samples, duration, hz = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
names = ("nginx", "haproxy", "ours")
served = {}
for line in open(results):
    f = line.rstrip("\n").split("\t")
    served[f[1]] = served.get(f[1], 0.0) + float(f[2]) * duration
rows = [list(map(int, l.split())) for l in open(samples) if len(l.split()) == 10]
# user, system, CPU 1 busy, CPU 1 interrupts, CPU 0 busy, elapsed
split = {n: [0, 0, 0, 0, 0, 0] for n in names}
for before, after in zip(rows, rows[1:]):
    d = [b - a for a, b in zip(before, after)]
    own = [d[2 * k] + d[2 * k + 1] for k in range(3)]
    k = max(range(3), key=lambda i: own[i])
    for i in range(3):
        split[names[i]][0] += d[2 * i]; split[names[i]][1] += d[2 * i + 1]
    if own[k] > 0:
        for i, at in enumerate((6, 7, 8, 9)):
            split[names[k]][2 + i] += d[at]
us = lambda t, n: t / hz * 1e6 / served[n]
print("us per request on the proxy's core (CPU 1): user, system (softirq included), the")
print("softirq part, and all of the core's busy time; how busy each core was in its rounds")
print(f"{'proxy':8} {'user':>7} {'system':>7} {'softirq':>8} {'core':>7} {'kernel share':>13} {'CPU 1 busy':>11} {'CPU 0 busy':>11}")
core = {}
for n in names:
    if n not in served:
        continue
    user, system, busy, irq, load, elapsed = split[n]
    core[n] = (us(user, n), us(busy, n), load / elapsed)
    print(f"{n:8} {us(user, n):7.2f} {us(system, n):7.2f} {us(irq, n):8.2f} {us(busy, n):7.2f} "
          f"{system / (user + system):13.2f} {busy / elapsed:11.0%} {load / elapsed:11.0%}")
if "ours" in core:
    best = min(core[p][1] for p in ("nginx", "haproxy") if p in core)
    user, busy, _ = core["ours"]
    print(f"ceiling (the better peer's core time per request / ours without its user time): {best / (busy - user):.2f}x")
    if min(c[2] for c in core.values()) >= 0.95:
        print("CPU 0 (wrk and the backends) was saturated in every proxy's rounds: the rounds measure the")
        print("load side, and the 'direct' row, not the proxy's core, bounds them")
PY
