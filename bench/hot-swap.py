#!/usr/bin/env python3
"""Hot-swap latency: from the rename of a module into the policies folder
to the proxy logging "policy serving" for it (logged once the listener's
new state is committed, so the next request uses it).

Runs `wasmroute serve` on a temporary folder whose listener (127.0.0.1:18284)
uses the policy `edge`, then renames round-robin.wasm and random.wasm onto
edge.wasm in turn, `--swaps` times (the first two compile; later ones swap
back to a module compiled before). Needs `cargo build --release -p wasmroute
&& cargo policies`. Loopback only; bounded in count and time.

usage: bench/hot-swap.py [--binary target/release/wasmroute] [--swaps 10]
"""
import argparse
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

CONFIG = """
[policies]
dir = "policies.d"

[[listeners]]
name = "edge"
address = "127.0.0.1:18284"
protocol = "http"
policy = "edge"
pools = ["web"]

[[pools]]
name = "web"
backends = [{ address = "127.0.0.1:18280" }]
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/wasmroute")
    parser.add_argument("--swaps", type=int, default=10)
    args = parser.parse_args()
    modules = [os.path.abspath(f"target/policies/{n}.wasm") for n in ("random", "round-robin")]
    work = tempfile.mkdtemp(prefix="hot-swap.")
    policies = os.path.join(work, "policies.d")
    os.mkdir(policies)
    shutil.copy(modules[1], os.path.join(policies, "edge.wasm"))
    config = os.path.join(work, "wasmroute.toml")
    with open(config, "w") as f:
        f.write(CONFIG)
    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    proxy = subprocess.Popen(
        [os.path.abspath(args.binary), "serve", "--config", config, "--workers", "1"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=work,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put((time.monotonic(), l)) for l in proxy.stderr], daemon=True).start()

    def wait_serving(deadline):
        while True:
            at, line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if "policy serving" in line and "edge" in line:
                return at

    try:
        wait_serving(time.monotonic() + 20)
        results = []
        for swap in range(args.swaps):
            source = modules[swap % 2]
            staged = os.path.join(policies, "edge.wasm.new")
            shutil.copy(source, staged)
            time.sleep(0.3)  # let the copy's own events settle first
            while not lines.empty():
                lines.get()
            started = time.monotonic()
            os.rename(staged, os.path.join(policies, "edge.wasm"))
            served = wait_serving(started + 10)
            results.append((served - started) * 1000)
            print(f"swap {swap + 1} ({os.path.basename(source)}): {results[-1]:.1f} ms")
        first, later = results[:2], results[2:]
        print(f"first two (compiled): {max(first):.1f} ms at most; "
              f"later (cached): median {sorted(later)[len(later) // 2]:.1f} ms, max {max(later):.1f} ms")
    finally:
        proxy.terminate()
        proxy.wait(10)
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
