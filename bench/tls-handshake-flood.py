#!/usr/bin/env python3
"""Handshake flood against ringway's TLS listener, by hand (not part of bench/run).

Starts the origin (nginx, CPU 0) and ringway with configs/ringway-tls.toml (1 worker, default
max_handshakes = 1024, handshake_ms = 10000; CPU 1), then opens --conns connections that
each send the first bytes of a ClientHello and stall, and meanwhile asks ringway for a page
with curl (--cacert, a full handshake each time) and samples ringway's RSS:

  baseline  no flood: RSS, curl latency
  open      the stalled connections are opened (ringway closes the oldest unfinished
            handshake past max_handshakes, so most of them are closed again at once)
  hold      --hold seconds: the connections stay as they are, nothing is reopened
  churn     --churn seconds: every connection ringway closes is opened again at once (a
            flood that keeps coming), up to --max-total connections in all
  after     all closed: RSS

Loopback only; bounded in count (--conns, --max-total) and time (every phase has a
duration; --deadline caps the whole run). Standard library only. Needs the certificate in
bench/.run/tls (made with the openssl CLI if missing) and ringway built (CARGO_TARGET_DIR).

  python3 bench/tls-handshake-flood.py [--conns 10000] [--hold 5] [--churn 10]
"""

import argparse
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(BENCH, ".run")
TLS_DIR = os.path.join(RUN, "tls")
CERT = os.path.join(TLS_DIR, "bench.pem")
PORT = 19001
ADMIN = "127.0.0.1:19091"
ORIGIN_PORT = 18080
# A TLS record header announcing a 512-byte handshake message, then the start of a
# ClientHello (type 1, length, legacy version 3.3): ringway holds a handshake for it.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc\x03\x03" + b"\x00" * 8


def log(msg):
    print(f"[flood {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, proc, secs=15):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if port_busy(port):
            return True
        time.sleep(0.1)
    return False


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """utime + stime of pid (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def handshake_counters():
    out = {}
    try:
        with urllib.request.urlopen(f"http://{ADMIN}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("ringway_tls_handshakes_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len("ringway_tls_handshakes_total"):]] = int(float(value))
    return out


class Probe(threading.Thread):
    """curl every `interval` s: status and time_total per phase; RSS of ringway."""

    def __init__(self, pid, interval):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.phase = "baseline"
        self.samples = []  # (phase, code, seconds)
        self.rss = []  # (phase, kib)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            phase = self.phase
            t0 = time.monotonic()
            try:
                out = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-m", "5", "--cacert", CERT,
                     "-w", "%{http_code} %{time_total}", f"https://localhost:{PORT}/"],
                    capture_output=True, text=True, timeout=10).stdout.split()
                code, secs = out[0], float(out[1])
            except (subprocess.TimeoutExpired, IndexError, ValueError):
                code, secs = "000", time.monotonic() - t0
            self.samples.append((phase, code, secs))
            self.rss.append((phase, rss_kib(self.pid)))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))


class Flood:
    def __init__(self, max_total):
        self.sel = selectors.DefaultSelector()
        self.open = 0
        self.opened_total = 0
        self.closed_by_peer = 0
        self.connect_errors = 0
        self.max_total = max_total

    def open_one(self):
        if self.opened_total >= self.max_total:
            return False
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.connect(("127.0.0.1", PORT))
            s.sendall(PARTIAL_HELLO)
            s.setblocking(False)
        except OSError:
            s.close()
            self.connect_errors += 1
            return True
        self.sel.register(s, selectors.EVENT_READ)
        self.open += 1
        self.opened_total += 1
        return True

    def reap(self, timeout, reopen):
        """Close what the peer closed; with reopen, open as many new ones."""
        n = 0
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                continue  # an alert before the close: wait for the close
            self.sel.unregister(s)
            s.close()
            self.open -= 1
            self.closed_by_peer += 1
            n += 1
        if reopen:
            for _ in range(n):
                if not self.open_one():
                    break
        return n

    def close_all(self):
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fileobj)
            key.fileobj.close()
        self.open = 0


def summary(probe, phase):
    lat = sorted(s for p, c, s in probe.samples if p == phase and c == "200")
    bad = [c for p, c, _ in probe.samples if p == phase and c != "200"]
    rss = [r for p, r in probe.rss if p == phase and r]
    d = {"curl_ok": len(lat), "curl_failed": len(bad), "curl_failed_codes": sorted(set(bad))}
    if lat:
        d.update({"curl_ms_p50": round(statistics.median(lat) * 1000, 2),
                  "curl_ms_p90": round(lat[int(0.9 * (len(lat) - 1))] * 1000, 2),
                  "curl_ms_max": round(lat[-1] * 1000, 2)})
    if rss:
        d.update({"rss_mib_min": round(min(rss) / 1024, 1), "rss_mib_max": round(max(rss) / 1024, 1)})
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=10000, help="stalled connections (default 10000)")
    ap.add_argument("--hold", type=float, default=5, help="seconds without reopening (default 5)")
    ap.add_argument("--churn", type=float, default=10, help="seconds reopening (default 10)")
    ap.add_argument("--max-total", type=int, default=300000,
                    help="connections opened in all, at most (default 300000)")
    ap.add_argument("--probe-interval", type=float, default=0.2)
    ap.add_argument("--deadline", type=float, default=120, help="whole run, seconds (default 120)")
    ap.add_argument("--out", default=os.path.join(RUN, "tls-handshake-flood.json"))
    args = ap.parse_args()
    if args.conns > 15000:
        sys.exit("--conns: at most 15000 (ringway and this script each need a descriptor per connection)")
    start = time.monotonic()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 512
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        sys.exit(f"open-file limit {hard} is below {want}")

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(BENCH), "target"))
    ringway_bin = os.path.join(target, "release", "ringway")
    if not os.access(ringway_bin, os.X_OK):
        sys.exit(f"no ringway at {ringway_bin} (set CARGO_TARGET_DIR)")
    for p in (PORT, ORIGIN_PORT, int(ADMIN.rsplit(":", 1)[1])):
        if port_busy(p):
            sys.exit(f"port {p} is in use (is bench/run running?)")
    if not os.path.exists(CERT):
        os.makedirs(TLS_DIR, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
                        "-keyout", os.path.join(TLS_DIR, "bench.key"), "-out", CERT,
                        "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-addext", "basicConstraints=critical,CA:FALSE"],
                       check=True, capture_output=True)

    # This script (and curl) on CPU 0 with the origin; ringway alone on CPU 1.
    os.sched_setaffinity(0, {0})
    os.makedirs(os.path.join(RUN, "origin", "tmp"), exist_ok=True)
    os.makedirs(os.path.join(RUN, "origin", "www"), exist_ok=True)
    procs = []
    try:
        origin = subprocess.Popen(
            ["nginx", "-p", os.path.join(RUN, "origin") + "/", "-c",
             os.path.join(BENCH, "configs", "origin-nginx.conf"), "-e", "stderr"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(RUN, "flood-origin.log"), "w"))
        procs.append(origin)
        ringway = subprocess.Popen(
            ["taskset", "-c", "1", ringway_bin, "run", "--profile",
             os.path.join(BENCH, "configs", "ringway-tls.toml")],
            stdout=open(os.path.join(RUN, "flood-ringway.log"), "w"), stderr=subprocess.STDOUT)
        procs.append(ringway)
        if not (wait_port(ORIGIN_PORT, origin) and wait_port(PORT, ringway)):
            sys.exit("origin or ringway did not start (bench/.run/flood-*.log)")
        time.sleep(1)
        result = {"conns": args.conns, "max_handshakes": 1024, "workers": 1,
                  "loadavg_start": open("/proc/loadavg").read().split()[:3]}
        probe = Probe(ringway.pid, args.probe_interval)
        probe.start()
        time.sleep(2)
        result["rss_mib_idle"] = round(rss_kib(ringway.pid) / 1024, 1)

        flood = Flood(args.max_total)
        # ringway's CPU use per phase, as a share of its core.
        marks = [("baseline", time.monotonic(), cpu_seconds(ringway.pid))]

        def mark(phase):
            marks.append((phase, time.monotonic(), cpu_seconds(ringway.pid)))
            probe.phase = phase

        mark("open")
        t0 = time.monotonic()
        for i in range(args.conns):
            if time.monotonic() - start > args.deadline:
                break
            flood.open_one()
            if i % 256 == 0:
                flood.reap(0, reopen=False)
        flood.reap(0, reopen=False)
        result["open_seconds"] = round(time.monotonic() - t0, 2)
        result["open_after_open_phase"] = flood.open
        log(f"opened {flood.opened_total} stalled connections in {result['open_seconds']} s; "
            f"{flood.open} still open")

        mark("hold")
        end = time.monotonic() + args.hold
        while time.monotonic() < min(end, start + args.deadline):
            flood.reap(0.05, reopen=False)
        result["open_after_hold"] = flood.open
        result["rss_mib_hold_end"] = round(rss_kib(ringway.pid) / 1024, 1)
        log(f"hold: {flood.open} still open from the client's side")

        mark("churn")
        before_churn = flood.opened_total
        t0 = time.monotonic()
        end = t0 + args.churn
        while time.monotonic() < min(end, start + args.deadline):
            flood.reap(0.01, reopen=True)
            while flood.open < args.conns and flood.open_one():  # make up for connect errors
                pass
        churn_secs = time.monotonic() - t0
        result["churn_reopened"] = flood.opened_total - before_churn
        result["churn_reopened_per_s"] = round(result["churn_reopened"] / churn_secs)
        result["rss_mib_churn_end"] = round(rss_kib(ringway.pid) / 1024, 1)
        log(f"churn: {result['churn_reopened']} connections reopened in {churn_secs:.1f} s")

        mark("after")
        flood.close_all()
        time.sleep(3)
        probe.stop.set()
        probe.join(10)
        result["rss_mib_after"] = round(rss_kib(ringway.pid) / 1024, 1)
        result["connect_errors"] = flood.connect_errors
        result["opened_total"] = flood.opened_total
        result["closed_by_ringway"] = flood.closed_by_peer
        result["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        result["phases"] = {p: summary(probe, p) for p in ["baseline", "open", "hold", "churn", "after"]}
        for (p, t, c), (_, t1, c1) in zip(marks[1:], marks[2:]):
            result["phases"][p]["ringway_core_use_pct"] = round((c1 - c) / (t1 - t) * 100)
        result["ringway_handshakes"] = handshake_counters()
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps(result, indent=1))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
