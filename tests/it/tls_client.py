#!/usr/bin/env python3
"""A TLS client for ringway's integration tests (Python's ssl module, stdlib only).

Prints one JSON object per run on stdout; a failed handshake prints {"error": ...} and exits 0,
so the test asserts on what a client saw.

  tls_client.py handshake ADDR [--sni NAME] [--ca PEM] [--cert PEM --key PEM]
                [--version 1.2|1.3] [--connections N]
      N connections, each after the first offering the previous one's session:
      {"connections": [{"version", "cipher", "alpn", "subject", "san", "resumed"}]}
  tls_client.py http ADDR [same TLS options] [--request RAW]... [--upload N]
      Sends each RAW request (Python escapes, e.g. 'GET / HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n') on
      one connection and reads each response (Content-Length bodies); --upload N sends a POST
      of N pattern bytes instead. {"responses": [{"status", "headers", "body", "body_len",
      "fnv"}]}
  tls_client.py tunnel ADDR [same TLS options] --request RAW --payload TEXT
      Sends the upgrade request, reads the 101 head, sends TEXT through the tunnel and reads
      until it comes back: {"status", "echo"}
"""

import argparse
import json
import socket
import ssl
import sys


def body_byte(i):
    return ((i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 56


def fnv(data, h=0xCBF29CE484222325):
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The chain is verified against --ca; which certificate answered is for the caller to
    # check (a test may ask for a name the default certificate does not carry).
    ctx.check_hostname = False
    if args.ca:
        ctx.load_verify_locations(args.ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    if args.version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif args.version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def connect(args, ctx, session=None):
    host, port = args.addr.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=args.sni, session=session)


def describe(s):
    cert = s.getpeercert() or {}
    subject = ",".join("=".join(x) for rdn in cert.get("subject", ()) for x in rdn)
    san = [f"{k}:{v}" for k, v in cert.get("subjectAltName", ())]
    return {
        "version": s.version(),
        "cipher": s.cipher()[0],
        "alpn": s.selected_alpn_protocol(),
        "subject": subject,
        "san": san,
        "resumed": s.session_reused,
    }


def read_response(f):
    status_line = f.readline()
    if not status_line:
        return None
    status = int(status_line.split()[1])
    headers = []
    length = 0
    chunked = False
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append([name.strip(), value.strip()])
        if name.strip().lower() == "content-length":
            length = int(value)
        if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        data = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b""):
                    pass
                break
            data += f.read(size)
            f.readline()
        return {
            "status": status,
            "headers": headers,
            "body": data[:4096].decode("latin-1"),
            "body_len": len(data),
            "fnv": f"{fnv(data):016x}",
        }
    body = b""
    h = 0xCBF29CE484222325
    left = length
    while left > 0:
        chunk = f.read(min(left, 1 << 16))
        if not chunk:
            break
        h = fnv(chunk, h)
        if len(body) < 4096:
            body += chunk[: 4096 - len(body)]
        left -= len(chunk)
    return {
        "status": status,
        "headers": headers,
        "body": body.decode("latin-1"),
        "body_len": length - left,
        "fnv": f"{h:016x}",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["handshake", "http", "tunnel"])
    ap.add_argument("addr")
    ap.add_argument("--sni")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--version", choices=["1.2", "1.3"])
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--request", action="append", default=[])
    ap.add_argument("--upload", type=int)
    ap.add_argument("--payload")
    args = ap.parse_args()
    ctx = context(args)
    out = {}
    try:
        if args.mode == "handshake":
            conns = []
            session = None
            for _ in range(args.connections):
                s = connect(args, ctx, session)
                conns.append(describe(s))
                # TLS 1.3 tickets arrive after the handshake: a read lets the client take them.
                s.sendall(b"GET /tls-handshake HTTP/1.1\r\nHost: t\r\n\r\n")
                read_response(s.makefile("rb"))
                session = s.session
                s.close()
            out["connections"] = conns
        elif args.mode == "http":
            s = connect(args, ctx)
            f = s.makefile("rb")
            responses = []
            if args.upload is not None:
                n = args.upload
                s.sendall(f"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n".encode())
                sent = 0
                while sent < n:
                    part = bytes(body_byte(sent + i) for i in range(min(1 << 16, n - sent)))
                    s.sendall(part)
                    sent += len(part)
                responses.append(read_response(f))
            for raw in args.request:
                s.sendall(raw.encode("latin-1").decode("unicode_escape").encode("latin-1"))
                responses.append(read_response(f))
            out["responses"] = responses
            out["tls"] = describe(s)
        else:
            s = connect(args, ctx)
            f = s.makefile("rb")
            s.sendall(args.request[0].encode("latin-1").decode("unicode_escape").encode("latin-1"))
            status = int(f.readline().split()[1])
            while f.readline() not in (b"\r\n", b""):
                pass
            s.sendall(args.payload.encode())
            echo = b""
            while len(echo) < len(args.payload.encode()):
                chunk = s.recv(4096)
                if not chunk:
                    break
                echo += chunk
            out = {"status": status, "echo": echo.decode("latin-1")}
    except (ssl.SSLError, OSError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
