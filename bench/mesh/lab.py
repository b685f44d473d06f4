#!/usr/bin/env python3
"""The mesh lab: hosts as network namespaces, a 3-member etcd cluster, one ringway per host,
service instances published with `ringway register`, load through every host's local ringway.

Run through bench/mesh/run (needs root). Every namespace it creates is named `rwlab-*` and is
removed again on exit, on error and on SIGINT/SIGTERM; a run first removes any left by a run that
was killed outright.

Topology (addresses exist only inside the lab's namespaces):

    rwlab-sw      a bridge joining the hosts (10.213.0.0/24)
    rwlab-h1..h4  hosts 10.213.0.1-4; etcd members on h1-h3; ringway on each (mesh listener
                  127.0.0.1:9003, admin 127.0.0.1:9090: each host has its own loopback)
    rwlab-inet    "the internet": reaches only h4 (10.214.0.1 <-> 10.214.0.2), where h4's ringway
                  also has an edge listener exposing /api/users/ as the mesh route /users/
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from faults import drain_503, edge_exposure, sick_instance
from report import summarize, write as write_report
from topology import (EDGE_ADDR, ETCD_HOSTS, FRONTEND_SETTINGS, HERE, HOSTS, PREFIX, PY, ROOT,
                      SERVICES, addr, ns, sh)


class Lab:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.dir = workdir
        self.procs = {}  # name -> Popen
        self.instances = {}  # (service, host) -> name of the instance started last there

    # ---------------------------------------------------------------- topology
    @staticmethod
    def remove_namespaces():
        out = sh("ip", "netns", "list", check=False).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(PREFIX):
                sh("ip", "netns", "del", name, check=False)

    def build(self):
        self.remove_namespaces()
        sw = ns("sw")
        sh("ip", "netns", "add", sw)
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for i, host in enumerate(HOSTS, 1):
            h = ns(host)
            sh("ip", "netns", "add", h)
            sh("ip", "-n", h, "link", "set", "lo", "up")
            sh("ip", "-n", sw, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
               "netns", h)
            sh("ip", "-n", sw, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", h, "addr", "add", f"{addr(host)}/24", "dev", "eth0")
            sh("ip", "-n", h, "link", "set", "eth0", "up")
        inet = ns("inet")
        sh("ip", "netns", "add", inet)
        sh("ip", "-n", inet, "link", "set", "lo", "up")
        sh("ip", "-n", inet, "link", "add", "eth0", "type", "veth", "peer", "name", "up0",
           "netns", ns("h4"))
        sh("ip", "-n", inet, "addr", "add", "10.214.0.1/30", "dev", "eth0")
        sh("ip", "-n", inet, "link", "set", "eth0", "up")
        sh("ip", "-n", ns("h4"), "addr", "add", f"{EDGE_ADDR}/30", "dev", "up0")
        sh("ip", "-n", ns("h4"), "link", "set", "up0", "up")

    # ---------------------------------------------------------------- processes
    def spawn(self, name, host, cmd, env=None):
        log = open(os.path.join(self.dir, f"{name}.log"), "a")
        full_env = dict(os.environ, **(env or {}))
        p = subprocess.Popen(["ip", "netns", "exec", ns(host)] + cmd, stdout=log,
                             stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        self.procs[name] = p
        return p

    def signal(self, name, sig):
        p = self.procs.get(name)
        if p and p.poll() is None:
            os.killpg(p.pid, sig)

    def stop_all(self):
        for name in list(self.procs):
            self.signal(name, signal.SIGTERM)
        deadline = time.time() + 5
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def etcd_endpoints(self):
        return [f"http://{addr(h)}:2379" for h in ETCD_HOSTS]

    def start_etcd(self, wait=True, hosts=ETCD_HOSTS):
        cluster = ",".join(f"e{h}=http://{addr(h)}:2380" for h in ETCD_HOSTS)
        for h in hosts:
            a = addr(h)
            self.spawn(f"etcd-{h}", h, [
                "etcd", "--name", f"e{h}", "--data-dir", os.path.join(self.dir, f"etcd-{h}"),
                "--listen-client-urls", f"http://{a}:2379",
                "--advertise-client-urls", f"http://{a}:2379",
                "--listen-peer-urls", f"http://{a}:2380",
                "--initial-advertise-peer-urls", f"http://{a}:2380",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "ringway-lab",
                "--heartbeat-interval", "100", "--election-timeout", "1000",
                # etcd 3.5's default: a member rejoining with a stale log (after a partition)
                # cannot force election after election that it is bound to lose
                "--pre-vote"])
        for h in hosts if wait else []:
            self.wait_http(h, f"http://{addr(h)}:2379/health", 30, f"etcd on {h}")

    def profile(self, host):
        endpoints = ", ".join(f'"{e}"' for e in self.etcd_endpoints())
        edge = ""
        if host == "h4":
            edge = f"""
[[listener]]
name = "public"
addr = "{EDGE_ADDR}:8080"
role = "edge"

[[listener.expose]]
prefix = "/api/users/"
methods = ["GET", "POST"]
rewrite = "/users/"
"""
        text = f"""# mesh lab node {host} (generated by bench/mesh/lab.py)
[node]
workers = 1
pin_workers = false
handover_socket = "{self.dir}/handover-{host}.sock"

[[listener]]
name = "mesh"
addr = "127.0.0.1:9003"
role = "mesh"
{edge}
[routes]
source = "etcd"
snapshot = "{self.dir}/routes-{host}.json"

[etcd]
endpoints = [{endpoints}]
prefix = "/vulcand"

[admin]
addr = "127.0.0.1:9090"

[timeouts]
connect_ms = 500
upstream_read_ms = 2000      # lab services answer in about a millisecond

[log]
level = "info"
"""
        path = os.path.join(self.dir, f"ringway-{host}.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_ringways(self, hosts=HOSTS):
        for h in hosts:
            self.spawn(f"ringway-{h}", h, [self.binary, "run", "--profile", self.profile(h)])
        for h in hosts:
            self.wait_http(h, "http://127.0.0.1:9090/readyz", 30, f"ringway on {h}")

    def start_instance(self, service, host, tag="", port=None):
        port = port or SERVICES[service][0]
        name = f"{service}-{host}{tag}"
        self.instances[(service, host)] = name
        self.spawn(name, host, [PY, os.path.join(HERE, "service.py"), "--addr", addr(host),
                                "--port", str(port), "--name", name])
        self.wait_http(host, f"http://{addr(host)}:{port}/", 10, name)
        reg = [self.binary, "register", "--backend", service, "--url",
               f"http://{addr(host)}:{port}", "--server-id", name,
               "--frontend", f"{service}=PathPrefix(`/{service}/`)", "--ttl", "3s"]
        if service in FRONTEND_SETTINGS:
            reg += ["--frontend-settings", f"{service}={json.dumps(FRONTEND_SETTINGS[service])}"]
        for e in self.etcd_endpoints():
            reg += ["--etcd", e]
        self.spawn(f"register-{name}", host, reg)
        return name

    def wait_http(self, host, url, seconds, what):
        deadline = time.time() + seconds
        while time.time() < deadline:
            r = sh("ip", "netns", "exec", ns(host), PY, "-c",
                   "import sys,urllib.request\n"
                   f"try: urllib.request.urlopen('{url}', timeout=1); sys.exit(0)\n"
                   "except Exception as e: sys.exit(1)", check=False)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise SystemExit(f"mesh lab: {what} did not answer {url} within {seconds} s "
                         f"(logs in {self.dir})")

    def wait_answering(self, instance, path, hosts, seconds):
        """Wait until `instance` answers `path` through each host's ringway: a fault aimed at
        it proves nothing while callers keep it out of rotation (a server ejected in an earlier
        scenario stays out for its penalty, even when a new instance takes its address)."""
        deadline = time.time() + seconds
        code = ("import sys,time,urllib.request\n"
                f"end = time.time() + {seconds}\n"
                "while time.time() < end:\n"
                "    try:\n"
                f"        r = urllib.request.urlopen('http://127.0.0.1:9003{path}', timeout=1)\n"
                f"        if r.headers.get('X-Instance') == '{instance}': sys.exit(0)\n"
                "    except Exception: pass\n"
                "    time.sleep(0.05)\n"
                "sys.exit(1)\n")
        for h in hosts:
            left = max(1, round(deadline - time.time()))
            r = sh("ip", "netns", "exec", ns(h), PY, "-c", code.replace(
                f"end = time.time() + {seconds}", f"end = time.time() + {left}"), check=False)
            if r.returncode != 0:
                raise SystemExit(f"mesh lab: {instance} did not answer {path} through {h}'s "
                                 f"ringway within {seconds} s")

    def wait_routes_on(self, host, paths, seconds):
        for p in paths:
            self.wait_http(host, f"http://127.0.0.1:9003{p}", seconds, f"route {p} on {host}")

    def wait_routes(self, paths, seconds):
        """Wait until every host serves every path, `seconds` in all."""
        deadline = time.time() + seconds
        for h in HOSTS:
            self.wait_routes_on(h, paths, max(1, deadline - time.time()))

    # ---------------------------------------------------------------- load
    def drive(self, name, seconds, rate, hosts, paths, edge=False):
        """Run one driver per host (and one from the internet through the edge); return rows."""
        return self.collect(self.start_drive(name, seconds, rate, hosts, paths, edge), seconds)

    def start_drive(self, name, seconds, rate, hosts, paths, edge=False):
        drivers = []
        for h in hosts:
            out = os.path.join(self.dir, f"{name}-{h}.jsonl")
            p = subprocess.Popen(["ip", "netns", "exec", ns(h), PY,
                                  os.path.join(HERE, "driver.py"), "--target", "127.0.0.1:9003",
                                  "--paths", ",".join(paths), "--seconds", str(seconds),
                                  "--rate", str(rate), "--out", out])
            drivers.append((h, out, p))
        if edge:
            out = os.path.join(self.dir, f"{name}-internet.jsonl")
            p = subprocess.Popen(["ip", "netns", "exec", ns("inet"), PY,
                                  os.path.join(HERE, "driver.py"), "--target",
                                  f"{EDGE_ADDR}:8080", "--paths", "/api/users/e",
                                  "--seconds", str(seconds), "--rate", str(rate / 2),
                                  "--out", out])
            drivers.append(("internet", out, p))
        return drivers

    @staticmethod
    def stop_drive(drivers):
        """End a load started with a generous --seconds cap now."""
        for _, _, p in drivers:
            if p.poll() is None:
                p.send_signal(signal.SIGUSR1)

    @staticmethod
    def collect(drivers, seconds):
        rows = []
        for h, out, p in drivers:
            if p.wait(seconds + 30) != 0:
                raise SystemExit(f"mesh lab: the load driver on {h} failed")
            with open(out) as f:
                for line in f:
                    row = json.loads(line)
                    row["from"] = h
                    rows.append(row)
        return rows


def cross_node(lab, seconds):
    """Every host calls every service through its own ringway; the internet calls the edge."""
    rows = lab.drive("cross-node", seconds, 60, HOSTS, ["/users/x", "/orders/y"], edge=True)
    spread = {}
    for r in rows:
        if r["status"] == 200:
            service = r["instance"].split("-")[0]
            spread.setdefault(service, {}).setdefault(r["instance"], 0)
            spread[service][r["instance"]] += 1
    expected = {s: sorted(f"{s}-{h}" for h in SERVICES[s][1]) for s in ("users", "orders")}
    missing = [i for s, names in expected.items() for i in names if i not in spread.get(s, {})]
    result = summarize("cross-node", rows, {"spread": spread})
    problems = []
    if result["failed"]:
        problems.append(f"{result['failed']} failed requests")
    if missing:
        problems.append(f"instances that answered nothing: {', '.join(missing)}")
    froms = {r["from"] for r in rows if r["status"] == 200}
    for h in HOSTS + ["internet"]:
        if h not in froms:
            problems.append(f"no answered request from {h}")
    result["problems"] = problems
    return result


def routes_servers(lab, host):
    """The table of the ringway on `host` as JSON text (its admin /routes)."""
    r = sh("ip", "netns", "exec", ns(host), PY, "-c",
           "import urllib.request,sys;"
           "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9090/routes',"
           "timeout=2).read().decode())", check=False)
    return r.stdout


def instance_crash(lab, seconds):
    """kill -9 one instance and its register sidecar under load."""
    seconds = max(seconds, 6)
    victim = lab.instances[("users", "h3")]  # a release may have replaced the first one
    lab.wait_answering(victim, "/users/c", HOSTS, 30)
    drivers = lab.start_drive("instance-crash", seconds, 80, HOSTS, ["/users/c"])
    time.sleep(seconds / 3)
    killed_at = time.time()
    lab.signal(victim, signal.SIGKILL)
    lab.signal(f"register-{victim}", signal.SIGKILL)
    lab.procs[victim].wait(5)
    dead_at = time.time()  # the process is gone (its sockets closed) by now
    # every table drops the dead server once its lease (3 s) expires; watched while the load runs
    gone_after = None
    deadline = killed_at + 15
    while time.time() < deadline:
        if all(f'"{victim}"' not in routes_servers(lab, h) for h in HOSTS):
            gone_after = round((time.time() - killed_at) * 1000)
            break
        time.sleep(0.2)
    rows = lab.collect(drivers, seconds)
    # a POST the instance may have taken before it died: started before it was gone and not
    # answered before the kill
    in_flight_posts = sum(1 for r in rows if r["method"] == "POST"
                          and r["t"] <= dead_at and r["t"] + r["ms"] / 1000 >= killed_at)
    result = summarize("instance-crash", rows, {
        "killed": victim, "posts_in_flight_at_kill": in_flight_posts, "server_gone_ms": gone_after,
        "dying_ms": round((dead_at - killed_at) * 1000, 1)},
        faults=[(killed_at, f"kill -9 {victim}")] + (
            [(killed_at + gone_after / 1000, "left every table")] if gone_after else []))
    answered_after = [r for r in rows if r["status"] == 200 and r["t"] > killed_at + 0.5]
    problems = []
    if result["failed_idempotent"]:
        problems.append(f"{result['failed_idempotent']} failed GETs")
    failed_posts = result["failed"] - result["failed_idempotent"]
    if failed_posts > in_flight_posts:
        problems.append(f"{failed_posts} failed POSTs, {in_flight_posts} in flight at the kill")
    if gone_after is None:
        problems.append(f"{victim} still in a route table 15 s after the kill")
    if not answered_after:
        problems.append("nothing answered after the kill")
    if not any(r["instance"] == victim and r["t"] < killed_at for r in rows):
        problems.append(f"{victim} answered nothing before the kill: the fault proved nothing")
    result["problems"] = problems
    # bring the instance back for the scenarios after this one
    lab.start_instance("users", "h3")
    return result


def wait_in_tables(lab, server, present, seconds=10):
    """Wait until `server` is in (or gone from) the route table of every node; return ms."""
    start = time.time()
    while time.time() < start + seconds:
        if all((f'"{server}"' in routes_servers(lab, h)) == present for h in HOSTS):
            return round((time.time() - start) * 1000)
        time.sleep(0.1)
    raise SystemExit(f"mesh lab: {server} {'never reached' if present else 'never left'} "
                     f"every node's table within {seconds} s")


def rolling_release(lab, seconds):
    """users (3 instances on 3 hosts) released twice: per host a new instance is registered,
    then the old one retired (its register sidecar gets SIGTERM and revokes its lease; the
    instance keeps serving 1 s to drain, then stops)."""
    # the load lasts as long as the release (a cap, on a slow machine) plus `seconds`
    drive_for = max(seconds, 4) + 50
    drivers = lab.start_drive("rolling-release", drive_for, 80, HOSTS, ["/users/r"])
    time.sleep(1)
    t0 = time.time()
    current = {h: f"users-{h}" for h in SERVICES["users"][1]}
    faults = []
    for release, port in (("-v2", 5011), ("-v3", 5001)):
        faults.append((time.time(), f"release {release[1:]}"))
        for h in SERVICES["users"][1]:
            new = lab.start_instance("users", h, tag=release, port=port)
            wait_in_tables(lab, new, True)
            old = current[h]
            lab.signal(f"register-{old}", signal.SIGTERM)
            lab.procs[f"register-{old}"].wait(10)
            wait_in_tables(lab, old, False)
            time.sleep(1)  # drain
            lab.signal(old, signal.SIGTERM)
            lab.procs[old].wait(10)
            current[h] = new
    released_in = round(time.time() - t0, 1)
    time.sleep(max(seconds, 4) - 1)
    lab.stop_drive(drivers)
    rows = lab.collect(drivers, drive_for)
    result = summarize("rolling-release", rows, {"release_s": released_in}, faults=faults)
    # every node spreads its callers over the whole new release: an instance whose first
    # (cold) answer was slow is asked again within about a second, not left out for the rest
    # of the run
    last_release = {current[h] for h in SERVICES["users"][1]}
    problems = []
    if result["failed"]:
        problems.append(f"{result['failed']} failed requests")
    for h in HOSTS:
        reached = {r["instance"] for r in rows if r["from"] == h and r["status"] == 200
                   and r["instance"] in last_release}
        if reached != last_release:
            problems.append(f"callers on {h} reached only {sorted(reached)} of the last release "
                            f"{sorted(last_release)}")
    if time.time() - t0 > drive_for:
        problems.append("the load ended before the release did")
    result["problems"] = problems
    return result


def etcd_outage(lab, seconds):
    """The whole etcd cluster stops under load: every node keeps serving, a ringway restarted
    during the outage serves from its snapshot, and after etcd returns a new route reaches
    every node."""
    drive_for = max(seconds, 4) + 8
    drivers = lab.start_drive("etcd-outage", drive_for, 60, HOSTS, ["/users/o", "/orders/o"])
    time.sleep(1)
    for h in ETCD_HOSTS:
        lab.signal(f"etcd-{h}", signal.SIGTERM)
    for h in ETCD_HOSTS:
        lab.procs[f"etcd-{h}"].wait(10)
    down_at = time.time()
    # restart h1's ringway while etcd is away (a handover, so its callers lose nothing): the
    # new process must come up from its snapshot
    old = lab.procs.pop("ringway-h1")
    lab.start_ringways(["h1"])
    old.wait(40)
    restarted_serving = True
    try:
        lab.wait_routes_on("h1", ["/users/ready", "/orders/ready"], 10)
    except SystemExit:
        restarted_serving = False
    time.sleep(max(0.0, down_at + 2 - time.time()))
    lab.start_etcd(wait=False)
    for h in ETCD_HOSTS:
        lab.wait_http(h, f"http://{addr(h)}:2379/health", 30, f"etcd on {h} (restarted)")
    back_at = time.time()
    late = lab.start_instance("revived", "h2")
    reached = None
    try:
        lab.wait_routes(["/revived/x"], 30)
        reached = round((time.time() - back_at) * 1000)
    except SystemExit:
        pass
    rows = lab.collect(drivers, drive_for)
    outage = [r for r in rows if down_at <= r["t"] <= back_at]
    result = summarize("etcd-outage", rows, {
        "outage_s": round(back_at - down_at, 1), "answered_during_outage":
        sum(1 for r in outage if r["status"] == 200), "new_route_everywhere_ms": reached},
        faults=[(down_at, "etcd down"), (back_at, "etcd back")])
    problems = []
    if result["failed"]:
        problems.append(f"{result['failed']} failed requests")
    if not restarted_serving:
        problems.append("the ringway restarted during the outage did not serve its snapshot")
    if reached is None:
        problems.append(f"route of {late} registered after the outage did not reach every node")
    if not result["answered_during_outage"]:
        problems.append("nothing answered during the outage")
    result["problems"] = problems
    return result


def etcd_status(lab):
    """Each answering etcd host's member id and the leader it follows (etcd's JSON gateway)."""
    status = {}
    for h in ETCD_HOSTS:
        r = sh("ip", "netns", "exec", ns(h), PY, "-c",
               "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
               f"urllib.request.Request('http://{addr(h)}:2379/v3/maintenance/status',"
               "data=b'{}'),timeout=2).read().decode())", check=False)
        if r.returncode == 0:
            st = json.loads(r.stdout)
            status[h] = (st["header"]["member_id"], st.get("leader"))
    return status


def etcd_leader(lab):
    """The etcd host whose member leads."""
    status = etcd_status(lab)
    ids = {member: h for h, (member, _) in status.items()}
    leaders = {leader for _, leader in status.values()}
    if len(leaders) != 1 or not leaders <= ids.keys():
        raise SystemExit("mesh lab: the etcd members do not agree on a leader")
    return ids[leaders.pop()]


def wait_etcd_settled(lab, timeout):
    """Until every etcd member answers and all follow the same leader: a fault left by the
    scenario before (a partition just healed) must not become part of this one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if len(etcd_status(lab)) == len(ETCD_HOSTS):
                return etcd_leader(lab)
        except SystemExit:
            pass
        time.sleep(0.2)
    raise SystemExit(f"mesh lab: the etcd cluster did not settle within {timeout} s")


def etcd_member_loss(lab, seconds):
    """Under load, the etcd member first in every node's endpoint list (h1's) is killed, then
    after it is back the leader; during each loss a new service registers and its route must
    reach every node. Each loss waits for the cluster to settle first: killing a member while
    another is still rejoining (h2, just partitioned) would take quorum away, not one member."""
    drive_for = max(seconds, 4) + 50  # a cap: the load ends `seconds` after the second loss
    drivers = lab.start_drive("etcd-member-loss", drive_for, 60, HOSTS, ["/users/m", "/orders/m"])
    time.sleep(1)
    t0 = time.time()
    reached = {}
    faults = []
    for phase, (service, port) in (("first-endpoint", ("late", 5003)),
                                   ("leader", ("later", 5004))):
        leader = wait_etcd_settled(lab, 30)
        victim = "h1" if phase == "first-endpoint" else leader
        lab.signal(f"etcd-{victim}", signal.SIGKILL)
        lab.procs[f"etcd-{victim}"].wait(10)
        lost_at = time.time()
        faults.append((lost_at, f"kill etcd {victim}"))
        lab.start_instance(service, "h2", port=port)
        try:
            lab.wait_routes([f"/{service}/x"], 20)
            reached[phase] = round((time.time() - lost_at) * 1000)
        except SystemExit:
            reached[phase] = None
        lab.start_etcd(hosts=[victim])
    took = time.time() - t0
    time.sleep(max(seconds, 4) - 1)
    lab.stop_drive(drivers)
    rows = lab.collect(drivers, drive_for)
    result = summarize("etcd-member-loss", rows, {
        "route_during_member_loss_ms": reached.get("first-endpoint"),
        "route_during_leader_loss_ms": reached.get("leader")}, faults=faults)
    problems = []
    if result["failed"]:
        problems.append(f"{result['failed']} failed requests")
    for phase, ms in reached.items():
        if ms is None:
            problems.append(f"a route registered during the {phase} loss did not reach every node")
    if took > drive_for:
        problems.append("the load ended before the scenario did")
    result["problems"] = problems
    return result


def partition(host, cut):
    """Drop every packet in and out of `host`'s lab link (nftables in its own namespace): its
    peers see silence and time out, as with a pulled cable, not resets."""
    if cut:
        rules = ("table inet rwlab {\n"
                 " chain in { type filter hook input priority 0; iifname \"eth0\" drop; }\n"
                 " chain out { type filter hook output priority 0; oifname \"eth0\" drop; }\n"
                 "}\n")
        r = subprocess.run(["ip", "netns", "exec", ns(host), "nft", "-f", "-"], input=rules,
                           capture_output=True, text=True)
    else:
        r = subprocess.run(["ip", "netns", "exec", ns(host), "nft", "delete", "table", "inet",
                            "rwlab"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"mesh lab: nft in {host} failed: {r.stderr.strip()}")


def host_partition(lab, seconds):
    """h2 (a users instance, an etcd member) is cut off silently under load from h1, h3 and h4.
    (Not h3: instance-crash has just restarted h3's instance at the same address.)"""
    if not shutil.which("nft"):
        raise SystemExit("mesh lab: host-partition needs `nft` (Debian's nftables)")
    drive_for = max(seconds, 4) + 6
    clients = ["h1", "h3", "h4"]
    cut_off = lab.instances[("users", "h2")]
    lab.wait_answering(cut_off, "/users/p", clients, 30)
    drivers = lab.start_drive("host-partition", drive_for, 80, clients, ["/users/p"])
    time.sleep(drive_for / 4)
    cut_at = time.time()
    partition("h2", True)
    rows = lab.collect(drivers, drive_for)
    partition("h2", False)
    # settled: for each client host, from the cut (or, when its balancer had not chosen h2 for
    # a while, from its first request that met the silence) to the end of its last request
    # that was slow (> 100 ms), failed, or answered by the cut-off host; the worst client's.
    # A client's first meeting with the silence can come late by design: p2c lets the estimate
    # of a server it has not chosen decay until it is chosen again, and a silent host is found
    # out only then (passive health); what the figure holds to a bound is how long each client
    # keeps paying once it has.
    settle = 0
    for client in clients:
        disturbed = [(r["t"], r["t"] + r["ms"] / 1000) for r in rows
                     if r["from"] == client and r["t"] + r["ms"] / 1000 >= cut_at
                     and (r["status"] != 200 or r["ms"] > 100 or r["instance"] == cut_off)]
        if disturbed:
            first_met = max(cut_at, min(start for start, _ in disturbed))
            last_end = max(end for _, end in disturbed)
            settle = max(settle, round((last_end - first_met) * 1000))
    in_flight_posts = sum(1 for r in rows if r["method"] == "POST" and r["t"] <= cut_at
                          and r["t"] + r["ms"] / 1000 >= cut_at)
    result = summarize("host-partition", rows, {"posts_in_flight_at_kill": in_flight_posts},
                       faults=[(cut_at, "cut h2 off")])
    result["failed_posts"] = result["failed"] - result["failed_idempotent"]
    result["settle_ms"] = settle
    problems = []
    # POSTs sent to the silent host before anything could tell it was gone are lost (they may
    # have been acted on, so they are not retried); they are reported, not held to a bound
    if result["failed_idempotent"]:
        problems.append(f"{result['failed_idempotent']} failed GETs")
    if not any(r["instance"] == cut_off and r["t"] < cut_at for r in rows):
        problems.append(f"{cut_off} answered nothing before the cut: the fault proved nothing")
    if settle > (drive_for - drive_for / 4) * 1000 - 1000:
        problems.append("traffic had not settled on the other hosts by the end of the load")
    result["problems"] = problems
    return result


SCENARIOS = {"cross-node": cross_node, "rolling-release": rolling_release,
             "instance-crash": instance_crash, "host-partition": host_partition,
             "etcd-member-loss": etcd_member_loss, "etcd-outage": etcd_outage,
             "edge-exposure": edge_exposure, "drain-503": drain_503,
             "sick-instance": sick_instance}


class Stopped(BaseException):
    """SIGTERM: unwind through every cleanup, then exit 143."""


def stopped(*_):
    raise Stopped()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/ringway"))
    ap.add_argument("--out", help="report directory (default: bench/results/mesh for a full "
                    "run of every scenario, bench/.run/mesh otherwise, so a partial or quick "
                    "run never replaces the recorded figures)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, call records)")
    args = ap.parse_args()
    if args.out is None:
        partial = args.quick or args.scenario
        args.out = os.path.join(ROOT, "bench/.run/mesh" if partial else "bench/results/mesh")
    if os.geteuid() != 0:
        raise SystemExit("mesh lab: needs root (it creates network namespaces)")
    for tool, package in (("ip", "iproute2"), ("etcd", "etcd-server"), ("nft", "nftables")):
        if not shutil.which(tool):
            raise SystemExit(f"mesh lab: `{tool}` is missing: install Debian's {package} "
                             "(bench/mesh/run and tests/run.sh do when run as root)")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rev = sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD", check=False).stdout.strip()
    workdir = tempfile.mkdtemp(prefix="ringway-mesh-lab-")
    lab = Lab(args.binary, workdir)
    signal.signal(signal.SIGTERM, stopped)
    seconds = 3 if args.quick else 15
    results = []
    try:
        lab.build()
        lab.start_etcd()
        lab.start_ringways()
        for service, (_, hosts) in SERVICES.items():
            for h in hosts:
                lab.start_instance(service, h)
        lab.wait_routes(["/users/ready", "/orders/ready", "/drain/ready", "/sick/ready"], 30)
        for name in args.scenario or list(SCENARIOS):
            try:
                results.append(SCENARIOS[name](lab, seconds))
            except SystemExit as e:
                # a scenario that cannot run or finish fails with its reason; the rest still run
                results.append({"name": name, "requests": 0, "failed": 0, "failed_idempotent": 0,
                                "p50_ms": None, "p99_ms": None, "settle_ms": None,
                                "problems": [str(e)]})
            print(f"mesh lab: {name}: {json.dumps({k: v for k, v in results[-1].items() if k not in ('spread', 'timeline')})}",
                  flush=True)
    finally:
        lab.stop_all()
        lab.remove_namespaces()
        # a scenario short of its figure keeps its logs, so a failure seen once can be read
        if args.keep or not results or any(r["problems"] for r in results):
            print(f"mesh lab: logs and call records kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(write_report(results, args.out, args.quick, started, rev))
    bad = [r["name"] for r in results if r["problems"]]
    # in the format of cargo's summary lines, so tests/run.sh counts scenarios with the tests
    print(f"test result: {'FAILED' if bad else 'ok'}. {len(results) - len(bad)} passed; "
          f"{len(bad)} failed (mesh lab scenarios)")
    if bad:
        raise SystemExit(f"mesh lab: scenarios short of their figures: {', '.join(bad)}")


if __name__ == "__main__":
    try:
        main()
    except Stopped:
        sys.exit(143)
