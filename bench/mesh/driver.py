#!/usr/bin/env python3
"""Load driver for the mesh lab: calls services through the local ringway, records every request.

    driver.py --target 127.0.0.1:9003 --paths /users/a,/orders/b --seconds 5 --rate 100 \
              --out calls.jsonl

Each of --conns keep-alive connections sends requests at an even pace (together --rate per
second), alternating GETs and 256-byte POSTs, round-robin over --paths, for --seconds. One JSON
line per request: start time (unix s), method, path, status (0 = failed without an answer),
latency in ms, the instance that answered (X-Instance) and the error text when there was one.
SIGUSR1 ends the load early (a scenario whose faults took less than the --seconds cap).
"""
import argparse
import http.client
import json
import signal
import threading
import time


def worker(idx, args, paths, out, lock, stop_at):
    conn = None
    period = args.conns / args.rate
    n = idx
    next_at = time.time() + idx * period / args.conns
    body = b"x" * 256
    rows = []
    while True:
        now = time.time()
        if now >= stop_at[0]:
            break
        if now < next_at:
            time.sleep(next_at - now)
        next_at += period
        path = paths[n % len(paths)]
        method = "POST" if (n // len(paths)) % 2 else "GET"
        n += 1
        started = time.time()
        status, instance, error = 0, "", ""
        try:
            if conn is None:
                host, port = args.target.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=args.timeout)
            if method == "POST":
                conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
            else:
                conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            instance = resp.getheader("X-Instance") or ""
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except Exception as exc:  # every failure is a row, never a crash
            error = f"{type(exc).__name__}: {exc}"
            if conn is not None:
                conn.close()
            conn = None
        rows.append({"t": round(started, 4), "method": method, "path": path, "status": status,
                     "ms": round((time.time() - started) * 1000, 3), "instance": instance,
                     "error": error})
    with lock:
        for row in rows:
            out.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="127.0.0.1:9003")
    ap.add_argument("--paths", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    paths = args.paths.split(",")
    lock = threading.Lock()
    stop_at = [time.time() + args.seconds]

    def stop_now(*_):
        stop_at[0] = min(stop_at[0], time.time())

    signal.signal(signal.SIGUSR1, stop_now)
    with open(args.out, "w") as out:
        threads = [threading.Thread(target=worker, args=(i, args, paths, out, lock, stop_at))
                   for i in range(args.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    main()
