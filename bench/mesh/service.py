#!/usr/bin/env python3
"""A small service instance for the mesh lab: answers every request with who it is.

    service.py --addr 10.213.0.1 --port 5001 --name users-h1

GET and HEAD answer 200 with a short text body; POST and PUT read the request body and answer
200 with its length. Every answer carries `X-Instance: <name>` so the load driver records which
instance served each request.

Faults, switched on by signals so an instance starts healthy and turns bad under load:
SIGUSR1 drains (every answer is 503, as a server shutting down), SIGUSR2 makes it sick (every
answer 300 ms late, every other one a 500).

Requests that carry `probe=` in their target or an `Upgrade`/`HTTP2-Settings` field are logged
to stdout as one JSON line each (the edge-exposure scenario counts what got through).
"""
import argparse
import http.server
import json
import signal
import socketserver
import sys
import threading
import time

STATE = {"drain": False, "sick": False, "n": 0}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    instance = "?"
    # one write per answer (head and body together) and no Nagle: otherwise a delayed ACK adds
    # 40 ms to answers whose head and body go out in separate small writes
    wbufsize = 65536
    disable_nagle_algorithm = True

    def _answer(self, body: bytes) -> None:
        if "probe=" in self.path or self.headers.get("Upgrade") or self.headers.get(
                "HTTP2-Settings"):
            line = json.dumps({"method": self.command, "path": self.path,
                               "upgrade": self.headers.get("Upgrade"),
                               "http2_settings": self.headers.get("HTTP2-Settings"),
                               "host": self.headers.get("Host")})
            with LOCK:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        status = 200
        if STATE["drain"]:
            status, body = 503, b"draining\n"
        elif STATE["sick"]:
            time.sleep(0.3)
            with LOCK:
                STATE["n"] += 1
                if STATE["n"] % 2:
                    status, body = 500, b"sick\n"
        self.send_response(status)
        self.send_header("X-Instance", self.instance)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(f"{self.instance} {self.path}\n".encode())

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        got = self.rfile.read(length) if length else b""
        self._answer(f"{self.instance} got {len(got)}\n".encode())

    do_PUT = do_POST

    def log_message(self, *_args) -> None:
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    Handler.instance = args.name
    signal.signal(signal.SIGUSR1, lambda *_: STATE.update(drain=True))
    signal.signal(signal.SIGUSR2, lambda *_: STATE.update(sick=True))
    Server((args.addr, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
