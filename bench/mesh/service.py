#!/usr/bin/env python3
"""A small service instance for the mesh lab: answers every request with who it is.

    service.py --addr 10.213.0.1 --port 5001 --name users-h1

GET and HEAD answer 200 with a short text body; POST and PUT read the request body and answer
200 with its length. Every answer carries `X-Instance: <name>` so the load driver records which
instance served each request.
"""
import argparse
import http.server
import socketserver


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    instance = "?"
    # one write per answer (head and body together) and no Nagle: otherwise a delayed ACK adds
    # 40 ms to answers whose head and body go out in separate small writes
    wbufsize = 65536
    disable_nagle_algorithm = True

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
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
    Server((args.addr, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
