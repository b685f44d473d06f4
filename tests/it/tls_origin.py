#!/usr/bin/env python3
"""An HTTPS origin for ringway's integration tests (Python's ssl and http.server, stdlib only).

  tls_origin.py CERT KEY

Listens on a free loopback port, prints the port on stdout, and answers HTTP/1.1 keep-alive:
  GET /big?n=N  N bytes of the tests' body pattern
  POST ...      "<FNV-1a of the body, 16 hex digits> <body length>"
  GET ...       JSON: {"conn": connection number, "version", "resumed", "sni", "path"}
"""

import http.server
import itertools
import json
import socketserver
import ssl
import sys


def body_byte(i):
    return ((i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 56


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.conn_no = next(self.server.counter)

    def reply(self, body, status=200):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/big?n="):
            n = int(self.path.split("=", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            sent = 0
            while sent < n:
                k = min(1 << 16, n - sent)
                self.wfile.write(bytes(body_byte(sent + i) for i in range(k)))
                sent += k
            return
        s = self.connection
        facts = {
            "conn": self.conn_no,
            "version": s.version(),
            "resumed": s.session_reused,
            "sni": self.server.sni.get(id(s)),
            "path": self.path,
        }
        self.reply(json.dumps(facts).encode())

    def do_POST(self):
        left = int(self.headers.get("Content-Length", "0"))
        h = 0xCBF29CE484222325
        total = 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            for b in chunk:
                h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
            total += len(chunk)
            left -= len(chunk)
        self.reply(f"{h:016x} {total}".encode())

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    cert, key = sys.argv[1], sys.argv[2]
    srv = Server(("127.0.0.1", 0), Handler)
    srv.counter = itertools.count(1)
    srv.sni = {}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def on_sni(sock, name, _ctx):
        srv.sni[id(sock)] = name

    ctx.sni_callback = on_sni
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
