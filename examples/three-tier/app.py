#!/usr/bin/env python3
"""Tiny application servers for the three-tier example.

Each server answers every GET by counting the hit in Redis through the data
tier: `INCR hits:<service>` on the write port (the primary), then
`GET hits:<service>` on the read port (a replica, which may lag a little).

    python3 app.py --write 127.0.0.1:6390 --read 127.0.0.1:6391 \
        web:9001 video:9101 video:9102 billing:9201 billing:9202

`/healthz` answers `ok` without touching Redis (the platform tier's check).
Standard library only.
"""

import argparse
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def redis_call(address, *words):
    """Sends one command, returns its reply as text (errors raise)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        command = f"*{len(words)}\r\n" + "".join(
            f"${len(w.encode())}\r\n{w}\r\n" for w in words
        )
        conn.sendall(command.encode())
        reader = conn.makefile("rb")
        line = reader.readline().decode().rstrip("\r\n")
        kind, rest = line[:1], line[1:]
        if kind == "-":
            raise RuntimeError(rest)
        if kind == "$":
            size = int(rest)
            return None if size < 0 else reader.read(size + 2)[:-2].decode()
        if kind in "+:":
            return rest
        raise RuntimeError(f"unexpected reply {line!r}")


def handler_for(service, port, write, read):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/healthz":
                return self.answer(200, "ok\n")
            key = f"hits:{service}"
            try:
                written = redis_call(write, "INCR", key)
                seen = redis_call(read, "GET", key)
            except (OSError, RuntimeError) as error:
                return self.answer(503, f"{service} app :{port}: data tier: {error}\n")
            self.answer(
                200,
                f"{service} app :{port} served {self.path}: "
                f"hits={written} (primary), {seen} (replica)\n",
            )

        def answer(self, status, text):
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", required=True, help="data tier write address")
    parser.add_argument("--read", required=True, help="data tier read address")
    parser.add_argument("servers", nargs="+", help="SERVICE:PORT, one per server")
    args = parser.parse_args()
    servers = []
    for spec in args.servers:
        service, port = spec.split(":")
        handler = handler_for(service, int(port), args.write, args.read)
        server = ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    print(f"app servers up: {' '.join(args.servers)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
