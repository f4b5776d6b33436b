#!/usr/bin/env python3
"""Memory of idle keep-alive client connections, measured from outside.

Starts `wasmroute serve --config bench/idle-memory.toml --workers 1` (a
listener on 127.0.0.1:18184 in front of a tiny HTTP backend this script
runs on 127.0.0.1:18180), reads the proxy's RSS idle, opens N keep-alive
connections that each send one GET and read the answer, reads RSS again
(N idle connections held), closes them all and reads RSS once more.

usage: bench/idle-memory.py [--binary target/release/wasmroute] [--conns 5000]
Prints: idle RSS, RSS with N idle connections and per connection, RSS
after they closed. Loopback only; bounded in count and time.
"""
import argparse
import asyncio
import os
import subprocess
import sys
import time

BACKEND = ("127.0.0.1", 18180)
PROXY = ("127.0.0.1", 18184)
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def backend(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        # The proxy went away, or the script is ending: nothing to report.
        pass
    finally:
        writer.close()


async def one_request(semaphore):
    async with semaphore:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*PROXY), 10)
        writer.write(REQUEST)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        await asyncio.wait_for(reader.readexactly(2), 10)
        return writer


async def settle(pid, seconds=2.0):
    """RSS after `seconds`: longer than the allocator's decay (jemalloc's
    dirty_decay_ms, 1 s in .cargo/config.toml), so memory the last burst
    freed has gone back to the kernel and what is read is what is held."""
    await asyncio.sleep(seconds)
    return rss_kib(pid)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/wasmroute")
    parser.add_argument("--conns", type=int, default=5000)
    args = parser.parse_args()
    server = await asyncio.start_server(backend, *BACKEND, backlog=4096)
    here = os.path.dirname(os.path.abspath(__file__))
    proxy = subprocess.Popen(
        [args.binary, "serve", "--config", os.path.join(here, "idle-memory.toml"), "--workers", "1"],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection(*PROXY)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        # One request first, so the policy is instantiated on the worker.
        (await one_request(asyncio.Semaphore(1))).close()
        idle = await settle(proxy.pid)
        semaphore = asyncio.Semaphore(500)
        writers = await asyncio.gather(*(one_request(semaphore) for _ in range(args.conns)))
        held = await settle(proxy.pid)
        for writer in writers:
            writer.close()
        after = await settle(proxy.pid)
        per = (held - idle) / args.conns
        print(f"idle RSS:                 {idle / 1024:.1f} MiB")
        print(f"with {args.conns} idle conns: {held / 1024:.1f} MiB ({per:.2f} KiB per connection)")
        print(f"after they closed:        {after / 1024:.1f} MiB ({(after - idle) / 1024:+.1f} MiB over idle)")
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
