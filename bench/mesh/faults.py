"""Mesh lab scenarios about what reaches a service and which instance answers: edge-exposure
(probes from the internet), drain-503 (an instance answering 503 while it drains, behind scroll's
FailoverPredicate) and sick-instance (one slow, failing instance among three)."""
import glob
import json
import os
import re
import signal
import subprocess
import time

from report import summarize
from topology import EDGE_ADDR, HERE, HOSTS, PY, addr, ns, sh

def get_probe(path, extra="", method="GET", host=None):
    """A request head; "{id}" in it becomes the probe id, "{h}" the edge address."""
    return (f"{method} {path} HTTP/1.1\r\nHost: {host or '{h}'}\r\n{extra}Connection: close"
            "\r\n\r\n")


# (id, what it tries, raw request); ids are unique words, so a service log line names its probe.
PROBES = [
    ("exposed", "the exposed route", get_probe("/api/users/ok?probe={id}")),
    ("meshpath", "a mesh route by its own path", get_probe("/orders/x?probe={id}")),
    ("meshusers", "the exposed service by its mesh path", get_probe("/users/x?probe={id}")),
    ("unexposed", "an unexposed prefix under /api", get_probe("/api/orders/x?probe={id}")),
    ("dotdot", "dot segments", get_probe("/api/users/../../orders/x?probe={id}")),
    ("pct2e", "encoded dot segments", get_probe("/api/users/%2e%2e/%2e%2e/orders/x?probe={id}")),
    ("pct2eupper", "encoded dot segments, upper case",
     get_probe("/api/users/%2E%2E/orders/x?probe={id}")),
    ("slashes", "a doubled slash", get_probe("//orders/x?probe={id}")),
    ("slashes2", "a doubled slash before the prefix", get_probe("//api/users/x?probe={id}")),
    ("pct2f", "an encoded slash in the prefix", get_probe("/api%2Fusers/x?probe={id}")),
    ("pctprefix", "an encoded letter in the prefix", get_probe("/%61pi/users/x?probe={id}")),
    ("case", "the prefix in upper case", get_probe("/API/USERS/x?probe={id}")),
    ("noslash", "the prefix without its slash", get_probe("/api/users?probe={id}")),
    ("backslash", "backslashes", get_probe("/api/users/..\\..\\orders/x?probe={id}")),
    ("absolute", "an absolute-form target at a service",
     get_probe(f"http://{addr('h2')}:5002/orders/x?probe={{id}}")),
    ("absmesh", "an absolute-form target at the mesh listener",
     get_probe("http://127.0.0.1:9003/orders/x?probe={id}")),
    ("hostmesh", "Host naming the mesh listener", get_probe("/orders/x?probe={id}",
                                                             host="127.0.0.1:9003")),
    ("hostadmin", "Host naming the admin listener", get_probe("/routes?probe={id}",
                                                               host="127.0.0.1:9090")),
    ("twohosts", "two Host fields", get_probe("/orders/x?probe={id}",
                                             extra="Host: 127.0.0.1:9003\r\n")),
    ("delete", "a method the rule does not allow",
     get_probe("/api/users/x?probe={id}", method="DELETE")),
    ("h2c", "an h2c upgrade on the exposed route",
     get_probe("/api/users/h2c?probe={id}", extra="Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__"
               "\r\nConnection: Upgrade, HTTP2-Settings\r\n").replace(
                   "Connection: close\r\n", "")),
    ("websocket", "a websocket upgrade on a rule without `upgrade`",
     get_probe("/api/users/ws?probe={id}", extra="Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               ).replace("Connection: close\r\n", "")),
    ("smuggle", "a request smuggled behind Content-Length and chunked",
     "POST /api/users/x HTTP/1.1\r\nHost: {h}\r\nContent-Length: 60\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /orders/x?probe={id} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("connect", "CONNECT to a service", "CONNECT " + addr("h2") + ":5002 HTTP/1.1\r\nHost: "
     + addr("h2") + ":5002\r\n\r\n"),
]
# Addresses the internet must not open a connection to at all.
CONNECTS = [("svc", f"{addr('h2')}:5002"), ("meshport", f"{EDGE_ADDR}:9003"),
            ("adminport", f"{EDGE_ADDR}:9090"), ("h4mesh", f"{addr('h4')}:9003")]


def seen_by_services(workdir):
    """Every probe-marked or upgrade request the services logged: (instance, request) pairs."""
    seen = []
    for path in glob.glob(os.path.join(workdir, "*.log")):
        name = os.path.basename(path)[:-4]
        if name.split("-")[0] in ("ringway", "register", "etcd"):
            continue
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("{"):
                    try:
                        seen.append((name, json.loads(line)))
                    except ValueError:
                        pass
    return seen


def edge_exposure(lab, seconds):
    """From the internet namespace: the exposed route answers, and no probe of anything else
    (unexposed prefixes, encodings, dot segments, absolute-form targets, Host tricks, upgrades,
    smuggling, direct connections) reaches a service."""
    drivers = lab.start_drive("edge-exposure", max(seconds, 3), 20, [], [], edge=True)
    nonce = f"{int(time.time() * 1000) % 100000:05d}"
    probes = [{"id": f"{pid}{nonce}", "raw": raw.replace("{h}", f"{EDGE_ADDR}:8080")}
              for pid, _, raw in PROBES]
    probes += [{"id": f"{pid}{nonce}", "connect": target} for pid, target in CONNECTS]
    r = subprocess.run(["ip", "netns", "exec", ns("inet"), PY, os.path.join(HERE, "probe.py"),
                        "--target", f"{EDGE_ADDR}:8080"], input=json.dumps(probes),
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"mesh lab: the edge probes failed: {r.stderr.strip()}")
    answers = {a["id"]: a for a in json.loads(r.stdout)}
    rows = lab.collect(drivers, max(seconds, 3))
    time.sleep(0.5)  # the services' log lines are written before they answer; margin anyway
    what = {f"{pid}{nonce}": text for pid, text, _ in PROBES}
    what.update({f"{pid}{nonce}": f"a connection to {t}" for pid, t in CONNECTS})
    leaks = []
    exposed_ok = 0
    for instance, req in seen_by_services(lab.dir):
        m = re.search(r"probe=([a-z0-9]+)", req.get("path", ""))
        pid = m.group(1) if m else None
        if pid is not None and pid not in what:
            continue  # a probe of an earlier run of this lab sharing the work dir
        allowed = (instance.startswith("users-") and req["path"].startswith("/users/")
                   and req["method"] in ("GET", "POST", "HEAD") and not req.get("upgrade")
                   and not req.get("http2_settings"))
        if pid == f"exposed{nonce}" and allowed:
            exposed_ok += 1
        elif not allowed:
            leaks.append(f"{what.get(pid, 'an upgrade')} reached {instance} as "
                         f"{req['method']} {req['path']}")
    for pid, a in answers.items():
        if a["upgraded"]:
            leaks.append(f"{what[pid]} was answered 101")
        if a["status"] == -1:
            leaks.append(f"{what[pid]} was accepted")
        if pid.startswith("connect") and 200 <= a["status"] < 300:
            leaks.append(f"{what[pid]} was answered {a['status']}")
    result = summarize("edge-exposure", rows, {
        "probes": len(probes), "leaks": len(leaks), "exposed_ok": exposed_ok,
        "probe_answers": {p["id"][:-len(nonce)]: answers[p["id"]]["status"] for p in probes}})
    problems = [f"leak: {leak}" for leak in leaks]
    if exposed_ok != 1:
        problems.append(f"the exposed route reached a users instance {exposed_ok} times, not once")
    if result["failed"]:
        problems.append(f"{result['failed']} failed requests through the edge")
    result["problems"] = problems
    return result


def metric_sum(lab, name, label=""):
    """A counter summed over every node's /metrics (lines starting with `name`, with `label`)."""
    total = 0.0
    for h in HOSTS:
        r = sh("ip", "netns", "exec", ns(h), PY, "-c",
               "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
               "'http://127.0.0.1:9090/metrics',timeout=2).read().decode())", check=False)
        for line in r.stdout.splitlines():
            if line.startswith(name) and label in line:
                try:
                    total += float(line.rsplit(" ", 1)[1])
                except ValueError:
                    pass
    return total


def drain_503(lab, seconds):
    """drain-h2 starts answering 503 to everything (a server shutting down) under load, stays
    registered for 2 s, then its sidecar revokes its lease and it stops. The frontend carries
    scroll's FailoverPredicate, so each 503 is retried on another instance: nothing fails, GETs
    and POSTs alike."""
    drive_for = max(seconds, 4) + 5
    retries_before = metric_sum(lab, "ringway_upstream_retries_total", 'reason="status"')
    drivers = lab.start_drive("drain-503", drive_for, 80, HOSTS, ["/drain/d"])
    time.sleep(drive_for / 4)
    victim = "drain-h2"
    drain_at = time.time()
    lab.signal(victim, signal.SIGUSR1)
    time.sleep(2)
    lab.signal(f"register-{victim}", signal.SIGTERM)
    lab.procs[f"register-{victim}"].wait(10)
    deregistered_at = time.time()
    time.sleep(1)
    lab.signal(victim, signal.SIGTERM)
    lab.procs[victim].wait(10)
    rows = lab.collect(drivers, drive_for)
    retries = metric_sum(lab, "ringway_upstream_retries_total", 'reason="status"') - retries_before
    after = [r for r in rows if r["t"] >= drain_at + 0.5]
    share = sum(1 for r in after if r["instance"] == victim) / max(len(after), 1)
    result = summarize("drain-503", rows, {
        "retries_on_status": int(retries), "drained_instance_share": round(share, 3)},
        faults=[(drain_at, "drain-h2 answers 503"), (deregistered_at, "deregistered")])
    problems = []
    if result["failed"]:
        problems.append(f"{result['failed']} failed requests")
    if share:
        problems.append(f"the draining instance answered {share:.1%} of requests")
    if not retries:
        problems.append("no retry on a 503: the draining instance was never asked")
    result["problems"] = problems
    # back in service for another run of the scenario
    lab.start_instance("drain", "h2")
    return result


def sick_instance(lab, seconds):
    """sick-h3 turns sick under load: every answer 300 ms late, every other one a 500. The
    p2c_ewma balancer (and outlier ejection) keep traffic off it: its share after the fault is
    reported and held to a bound, and so are the requests it failed."""
    drive_for = max(seconds, 4) + 8
    drivers = lab.start_drive("sick-instance", drive_for, 80, HOSTS, ["/sick/s"])
    time.sleep(2)
    victim = "sick-h3"
    sick_at = time.time()
    lab.signal(victim, signal.SIGUSR2)
    rows = lab.collect(drivers, drive_for)
    after = [r for r in rows if r["t"] >= sick_at]
    share = sum(1 for r in after if r["instance"] == victim) / max(len(after), 1)
    sick_failed = sum(1 for r in after if r["instance"] == victim and r["status"] != 200)
    result = summarize("sick-instance", rows, {
        "sick_share": round(share, 3), "sick_failed": sick_failed},
        faults=[(sick_at, "sick-h3 falls sick")])
    problems = []
    if share > SICK_SHARE_MAX:
        problems.append(f"the sick instance still got {share:.1%} of requests "
                        f"(bound {SICK_SHARE_MAX:.0%})")
    if sick_failed > SICK_FAILED_MAX * len(after):
        problems.append(f"{sick_failed} requests failed on the sick instance "
                        f"(bound {SICK_FAILED_MAX:.0%} of {len(after)})")
    if any(r["status"] != 200 and r["instance"] != victim for r in rows):
        problems.append("requests failed on healthy instances")
    result["problems"] = problems
    lab.signal(victim, signal.SIGTERM)
    lab.signal(f"register-{victim}", signal.SIGTERM)
    lab.procs[victim].wait(10)
    lab.procs[f"register-{victim}"].wait(10)
    lab.start_instance("sick", "h3")
    return result


# A healthy instance of three gets a third of the requests.
SICK_SHARE_MAX = 0.10
SICK_FAILED_MAX = 0.05
