#!/usr/bin/env python3
"""Edge probes for the mesh lab: raw HTTP/1.1 requests, byte for byte as given, from the
internet namespace to the edge listener.

    probe.py --target 10.214.0.2:8080 < probes.json > answers.json

Input: a JSON list of {"id", "raw"} (the request head as text; "{id}" in it is replaced by the
probe's id) or {"id", "connect": "host:port"} (only try to open a connection). Output: one JSON
list of {"id", "status", "upgraded", "error"}: the status of the first answer (0 when none),
whether it was 101, and the error text when the exchange failed.
"""
import argparse
import json
import socket
import sys


def exchange(target, raw, timeout):
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(raw.encode("latin-1"))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args()
    answers = []
    for p in json.load(sys.stdin):
        status, error = 0, ""
        try:
            if "connect" in p:
                host, port = p["connect"].rsplit(":", 1)
                socket.create_connection((host, int(port)), timeout=args.timeout).close()
                status = -1  # a connection was accepted
            else:
                status = exchange(args.target, p["raw"].replace("{id}", p["id"]), args.timeout)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        answers.append({"id": p["id"], "status": status, "upgraded": status == 101,
                        "error": error})
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
