#!/usr/bin/env python3
"""Helpers for bench/run: /proc snapshots, wrk result records, idle connections (S7),
the 10k-frontend routes file (S5) and the report (Markdown, JSON, SVG).

Standard library only (python3 >= 3.9).
"""

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

PROXY_ORDER = ["ringway", "ringway-b", "ringway-epoll", "ringway-log", "nginx", "nginx-fwd", "haproxy", "haproxy-tcp", "pingora"]
PROXY_LABEL = {
    "ringway": "ringway",
    "ringway-b": "ringway (B build)",
    "ringway-epoll": "ringway (epoll)",
    "ringway-log": "ringway (access log on)",
    "ringway-10k": "ringway, 10k frontends",
    "ringway-1": "ringway, 1 frontend",
    "ringway-rl": "ringway, ratelimit admitting all",
    "ringway-rl-refuse": "ringway, ratelimit refusing (429)",
    "ringway-fo": "ringway, scroll's FailoverPredicate",
    "ringway-sick-rr": "ringway, round_robin + ejection + 5xx retry",
    "ringway-sick-p2c": "ringway, p2c_ewma + ejection + 5xx retry",
    "nginx": "nginx",
    "nginx-fwd": "nginx adding ringway's request fields",
    "haproxy": "HAProxy HTTP",
    "haproxy-tcp": "HAProxy TCP (L4 floor)",
    "pingora": "Pingora",
}
SCENARIO_TITLE = {
    "S1": "S1 small GET, keep-alive, 64 connections",
    "S2": "S2 new connection per request (Connection: close), 64 connections",
    "S3": "S3 1 MiB responses, keep-alive, 16 connections",
    "S4": "S4 1 MiB request uploads, keep-alive, 16 connections",
    "S5": "S5 route table: 10,000 PathPrefix frontends vs 1 (ringway only), 64 connections",
    "S6": "S6 throttling: a ratelimit middleware (client.ip) admitting every request, and one "
          "refusing almost all (1,000 req/s), vs none (ringway only), 64 connections",
    "S7": "S7 memory per idle keep-alive client connection",
    "S8": "S8 latency at a fixed rate below saturation",
    "S9": "S9 sick instance: 3 servers (one 20 ms slow, one answering half its requests with 500), "
          "each proxy with its passive health checks and retries of 5xx GETs, S8's paced load "
          "(50 connections, 10 ms between requests)",
    "S10": "S10 failover rule cost: small GET with scroll's FailoverPredicate vs vulcand's default, "
          "no failures (ringway only), 64 connections",
    "S11": "S11 body replay cost: POST 1 KiB with scroll's FailoverPredicate (replayable) vs "
           "vulcand's default (never resent) (ringway only), 64 connections",
    "T1": "T1 TLS small GET, keep-alive",
    "T2": "T2 TLS new connection per request (wrk, Connection: close): resumed handshakes, "
          "as wrk resumes its TLS session on every reconnect",
    "T2F": "T2F TLS new connection per request with a full handshake (wrk, Connection: "
           "close, with lib/no-resume.c preloaded: no resumption)",
    "T3": "T3 TLS 1 MiB responses, keep-alive, 16 connections",
}
TLS_SCENARIOS = ["T1", "T2", "T2F", "T3"]


# ---------------------------------------------------------------- /proc snapshots

def proc_snapshot(pids):
    """Sum of utime+stime (clock ticks) and of VmHWM / VmRSS (KiB) over live pids."""
    ticks = 0
    hwm = 0
    rss = 0
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
            # Fields after the command name, which is in parentheses and may hold spaces.
            rest = data[data.rindex(")") + 2:].split()
            # rest[0] is field 3 (state); utime is field 14, stime field 15.
            ticks += int(rest[11]) + int(rest[12])
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            alive.append(pid)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return {"ticks": ticks, "hwm_kib": hwm, "rss_kib": rss, "pids": alive}


def cmd_snap(args):
    print(json.dumps(proc_snapshot([int(p) for p in args.pids])))


# ---------------------------------------------------------------- wrk records

def parse_wrk(path):
    with open(path) as f:
        for line in f:
            if line.startswith("BENCHJSON "):
                return json.loads(line[len("BENCHJSON "):])
    return None


def cmd_record(args):
    before = json.loads(args.before)
    after = json.loads(args.after)
    rec = {
        "scenario": args.scenario,
        "proxy": args.proxy,
        "round": args.round,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    w = parse_wrk(args.wrk_out)
    if w is None:
        rec["failed"] = "no wrk result (see " + args.wrk_out + ")"
    else:
        secs = w["duration_us"] / 1e6
        rec.update(w)
        rec["rps"] = w["requests"] / secs if secs > 0 else 0.0
        cpu_s = (after["ticks"] - before["ticks"]) / CLK_TCK
        rec["cpu_s"] = cpu_s
        rec["cpu_util"] = cpu_s / secs if secs > 0 else 0.0
        rec["cpu_us_per_req"] = cpu_s * 1e6 / w["requests"] if w["requests"] else None
        rec["errors"] = (w["err_connect"] + w["err_read"] + w["err_write"]
                         + w["err_timeout"])
        rec["non2xx"] = w["err_status"]
        # Throughput of response bytes (headers included), and the proxy's CPU per MiB of it.
        mib = w["bytes"] / 1048576
        rec["mib_s"] = mib / secs if secs > 0 else 0.0
        rec["cpu_us_per_mib"] = cpu_s * 1e6 / mib if mib else None
    rec["peak_rss_kib"] = after["hwm_kib"]
    for kv in args.extra or []:
        k, v = kv.split("=", 1)
        try:
            v = float(v)
        except ValueError:
            pass
        rec[k] = v
    # Sanity checks: the measured process must have served the load, and bodies must be whole.
    if "failed" not in rec:
        if rec.get("proxy_alive") == 0 or not after["pids"]:
            rec["failed"] = "the proxy process exited before the end of the run"
        elif rec["requests"] and rec["bytes"] / rec["requests"] < rec.get("min_body", 0):
            rec["failed"] = (f"responses average {rec['bytes'] / rec['requests']:.0f} bytes, "
                             f"expected at least {rec['min_body']:.0f}")
    with open(args.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if "failed" in rec:
        print(f"    {args.proxy:14s} FAILED: {rec['failed']}")
    else:
        p50 = rec.get("p50_us") or 0
        p99 = rec.get("p99_us") or 0
        print(f"    {args.proxy:14s} {rec['rps']:10.0f} req/s  p50 {p50/1000:7.2f} ms"
              f"  p99 {p99/1000:7.2f} ms  cpu {rec['cpu_us_per_req'] or 0:6.2f} us/req"
              f" ({rec['cpu_util']*100:3.0f}% core)  hwm {rec['peak_rss_kib']/1024:6.1f} MiB"
              f"  err {rec['errors']} non2xx {rec['non2xx']}"
              + (f"  {rec['mib_s']:.0f} MiB/s" if args.scenario == "T3" else "")
              + (f"  ringway handshakes full {rec['tls_full']:.0f} resumed {rec['tls_resumed']:.0f}"
                 if "tls_full" in rec else ""))


def cmd_record_idle(args):
    rec = {
        "scenario": "S7",
        "proxy": args.proxy,
        "round": args.round,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "conns": args.conns,
        "opened": args.opened,
        "rss_before_kib": args.before,
        "rss_after_kib": args.after,
    }
    if args.opened > 0:
        rec["kib_per_conn"] = (args.after - args.before) / args.opened
    else:
        rec["failed"] = "no idle connection could be opened"
    with open(args.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if "failed" in rec:
        print(f"    {args.proxy:14s} FAILED: {rec['failed']}")
    else:
        print(f"    {args.proxy:14s} {args.opened} idle conns: RSS {args.before/1024:.1f} -> "
              f"{args.after/1024:.1f} MiB = {rec['kib_per_conn']:.2f} KiB/conn")


# ---------------------------------------------------------------- S7 idle connections

def read_response(sock):
    """Read one HTTP/1.1 response with a Content-Length or chunked body; return status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in body")
            body += chunk
    elif chunked:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in chunked body")
            body += chunk
    return status


def cmd_idle(args):
    """Open N keep-alive connections, one request on each, then hold them idle until the
    stop file appears (or --max-hold seconds pass)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 256
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except ValueError:
            pass
    socks = []
    statuses = {}
    failures = 0
    deadline = time.monotonic() + args.open_timeout
    for _ in range(args.conns):
        if time.monotonic() > deadline:
            break
        try:
            s = socket.create_connection(("127.0.0.1", args.port), timeout=5)
            s.sendall(b"GET /idle HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench-idle\r\n\r\n")
            st = read_response(s)
            statuses[st] = statuses.get(st, 0) + 1
            socks.append(s)
        except OSError:
            failures += 1
            if failures > 50:
                break
    with open(args.ready_file, "w") as f:
        json.dump({"opened": len(socks), "failures": failures, "statuses": statuses}, f)
    end = time.monotonic() + args.max_hold
    while time.monotonic() < end and not os.path.exists(args.stop_file):
        time.sleep(0.1)
    for s in socks:
        s.close()


# ---------------------------------------------------------------- S5 routes

def cmd_routes(args):
    doc = {
        "/vulcand/backends/origin/backend": {"Type": "http"},
        "/vulcand/backends/origin/servers/o1": {"URL": f"http://{args.origin}"},
    }
    for i in range(args.n):
        doc[f"/vulcand/frontends/f{i:05d}/frontend"] = {
            "Type": "http",
            "BackendId": "origin",
            "Route": f"PathPrefix(`/r{i:05d}/`)",
        }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=0)


# ---------------------------------------------------------------- report

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, spec, none="–"):
    return none if v is None else format(v, spec)


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs


def summarise(recs):
    """Medians per (scenario, proxy), and same-round ratios against nginx."""
    out = {}
    by = {}
    for r in recs:
        by.setdefault((r["scenario"], r["proxy"]), []).append(r)
    for (scen, proxy), rs in by.items():
        ok = [r for r in rs if "failed" not in r]
        s = {"runs": len(rs), "failed_runs": len(rs) - len(ok)}
        for key in ["rps", "p50_us", "p90_us", "p99_us", "p999_us", "cpu_us_per_req",
                    "cpu_util", "peak_rss_kib", "kib_per_conn", "rss_before_kib",
                    "rss_after_kib", "opened", "mib_s", "cpu_us_per_mib",
                    "tls_full", "tls_resumed"]:
            vals = [r.get(key) for r in ok if r.get(key) is not None]
            if vals:
                s[key] = median(vals)
        s["errors"] = sum(r.get("errors", 0) for r in ok)
        s["non2xx"] = sum(r.get("non2xx", 0) for r in ok)
        s["requests"] = sum(r.get("requests", 0) for r in ok)
        out.setdefault(scen, {})[proxy] = s
    # Ratios against a reference proxy, computed round by round (both measured in the same
    # round, minutes apart at most), then the median over rounds.
    # The T scenarios also get ratios to HAProxy (prefix ratioh_) and keep the per-round
    # ratios (rounds_ratio_*, rounds_ratioh_*: {round: ratio}).
    for scen, proxies in out.items():
        ref = "nginx" if "nginx" in proxies else ("ringway-1" if "ringway-1" in proxies else None)
        if ref is None:
            continue
        refs = [(ref, "ratio_")]
        if scen in TLS_SCENARIOS and "haproxy" in proxies:
            refs.append(("haproxy", "ratioh_"))
        for ref_proxy, prefix in refs:
            ref_by_round = {r["round"]: r for r in recs
                            if r["scenario"] == scen and r["proxy"] == ref_proxy
                            and "failed" not in r}
            for proxy, s in proxies.items():
                if prefix == "ratio_":
                    s["ratio_ref"] = ref_proxy
                for key in ["rps", "cpu_us_per_req", "p50_us", "p99_us", "p999_us",
                            "kib_per_conn", "peak_rss_kib", "mib_s", "cpu_us_per_mib"]:
                    ratios = {}
                    for r in recs:
                        if (r["scenario"] == scen and r["proxy"] == proxy and "failed" not in r
                                and r["round"] in ref_by_round):
                            a = r.get(key)
                            b = ref_by_round[r["round"]].get(key)
                            if a is not None and b:
                                ratios[r["round"]] = a / b
                    if ratios:
                        s[prefix + key] = median(list(ratios.values()))
                        if scen in TLS_SCENARIOS:
                            s["rounds_" + prefix + key] = ratios
    return out


def proxies_sorted(d):
    order = ["ringway-sick-rr", "ringway-sick-p2c"] + PROXY_ORDER + [
        "ringway-1", "ringway-10k", "ringway-rl", "ringway-rl-refuse", "ringway-fo"]
    return sorted(d.keys(), key=lambda p: order.index(p) if p in order else 99)


def render_md(summary, meta):
    L = []
    L.append("# ringway benchmark results")
    L.append("")
    L.append(f"- Date: {meta['date']}")
    L.append(f"- Command: `{meta['command']}` ({meta['mode']} mode: {meta['duration']} s per run, "
             f"{meta['rounds']} round(s), proxies alternated within each round)")
    L.append(f"- Git: `{meta.get('git', '?')}`")
    L.append(f"- Machine: {meta['machine']}")
    L.append(f"- Kernel: `{meta['uname']}`")
    L.append(f"- Versions: {meta.get('versions', '')}")
    L.append("- Topology: the proxy under test pinned to CPU 1 (1 worker/thread); wrk (1 thread) "
             "and the nginx origin (1 worker) pinned to CPU 0; everything on 127.0.0.1.")
    L.append("- Cells are medians over rounds. `x nginx` is the median over rounds of "
             "(proxy / nginx measured in the same round). CPU/req = proxy utime+stime "
             "(all its processes and threads) during the measured run / completed requests. "
             "Peak RSS = VmHWM summed over the proxy's processes (process restarted for each run).")
    if meta.get("notes"):
        L.append("")
        for n in meta["notes"]:
            L.append(f"> {n}")
    L.append("")
    for scen in ["S1", "S2", "S3", "S4"]:
        if scen not in summary:
            continue
        L.append(f"## {SCENARIO_TITLE[scen]}")
        L.append("")
        L.append("| proxy | req/s | x nginx | p50 ms | p99 ms | p99 x nginx | CPU µs/req | "
                 "x nginx | core use | peak RSS MiB | errors | non-2xx |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in proxies_sorted(summary[scen]):
            s = summary[scen][p]
            L.append(
                f"| {PROXY_LABEL.get(p, p)} | {fmt(s.get('rps'), ',.0f')} | "
                f"{fmt(s.get('ratio_rps'), '.2f')} | {fmt(_ms(s.get('p50_us')), '.2f')} | "
                f"{fmt(_ms(s.get('p99_us')), '.2f')} | {fmt(s.get('ratio_p99_us'), '.2f')} | "
                f"{fmt(s.get('cpu_us_per_req'), '.2f')} | {fmt(s.get('ratio_cpu_us_per_req'), '.2f')} | "
                f"{fmt(_pct(s.get('cpu_util')), '.0f')}% | {fmt(_mib(s.get('peak_rss_kib')), '.1f')} | "
                f"{s['errors']} | {s['non2xx']} |" + (f" ({s['failed_runs']} failed runs)" if s["failed_runs"] else ""))
        L.append("")
        if scen == "S1" and "ringway" in summary[scen] and "ringway-epoll" in summary[scen]:
            u = summary[scen]["ringway"]
            e = summary[scen]["ringway-epoll"]
            if u.get("rps") and e.get("rps") and u.get("cpu_us_per_req") and e.get("cpu_us_per_req"):
                L.append(f"**io_uring vs epoll (ringway, S1):** {u['rps']:,.0f} vs {e['rps']:,.0f} req/s "
                         f"({(u['rps']/e['rps']-1)*100:+.1f}% throughput), "
                         f"{u['cpu_us_per_req']:.2f} vs {e['cpu_us_per_req']:.2f} µs CPU/request "
                         f"({(u['cpu_us_per_req']/e['cpu_us_per_req']-1)*100:+.1f}% CPU per request), "
                         f"p99 {_ms(u['p99_us']):.2f} vs {_ms(e['p99_us']):.2f} ms.")
                L.append("")
        if scen == "S1" and "ringway" in summary[scen] and "ringway-log" in summary[scen]:
            u = summary[scen]["ringway"]
            g = summary[scen]["ringway-log"]
            if u.get("cpu_us_per_req") and g.get("cpu_us_per_req"):
                L.append(f"**access log cost (ringway, S1):** {g['cpu_us_per_req']:.2f} vs "
                         f"{u['cpu_us_per_req']:.2f} µs CPU/request with the JSON access log on vs off "
                         f"({(g['cpu_us_per_req']/u['cpu_us_per_req']-1)*100:+.1f}%).")
                L.append("")
    if "S5" in summary:
        L.append(f"## {SCENARIO_TITLE['S5']}")
        L.append("")
        L.append("| routes | req/s | x 1 frontend | p50 ms | p99 ms | CPU µs/req | x 1 frontend | peak RSS MiB | errors | non-2xx |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in proxies_sorted(summary["S5"]):
            s = summary["S5"][p]
            L.append(f"| {PROXY_LABEL.get(p, p)} | {fmt(s.get('rps'), ',.0f')} | {fmt(s.get('ratio_rps'), '.2f')} | "
                     f"{fmt(_ms(s.get('p50_us')), '.2f')} | {fmt(_ms(s.get('p99_us')), '.2f')} | "
                     f"{fmt(s.get('cpu_us_per_req'), '.2f')} | {fmt(s.get('ratio_cpu_us_per_req'), '.2f')} | "
                     f"{fmt(_mib(s.get('peak_rss_kib')), '.1f')} | {s['errors']} | {s['non2xx']} |")
        L.append("")
    if "S6" in summary:
        L.append(f"## {SCENARIO_TITLE['S6']}")
        L.append("")
        L.append("| ringway | req/s | x no middleware | p50 ms | p99 ms | CPU µs/req | x no middleware | errors | non-2xx (429s) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in proxies_sorted(summary["S6"]):
            s = summary["S6"][p]
            label = "no middleware" if p == "ringway-1" else PROXY_LABEL.get(p, p)
            L.append(f"| {label} | {fmt(s.get('rps'), ',.0f')} | {fmt(s.get('ratio_rps'), '.2f')} | "
                     f"{fmt(_ms(s.get('p50_us')), '.2f')} | {fmt(_ms(s.get('p99_us')), '.2f')} | "
                     f"{fmt(s.get('cpu_us_per_req'), '.2f')} | {fmt(s.get('ratio_cpu_us_per_req'), '.2f')} | "
                     f"{s['errors']} | {s['non2xx']} |")
        L.append("")
    if "S9" in summary:
        L.append(f"## {SCENARIO_TITLE['S9']}")
        L.append("")
        L.append("| proxy | success | req/s | p50 ms | p99 ms | p99 x nginx | CPU µs/req | errors | non-2xx |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in proxies_sorted(summary["S9"]):
            s = summary["S9"][p]
            req = s.get("requests") or 0
            ok = (1 - (s["errors"] + s["non2xx"]) / req) * 100 if req else None
            L.append(f"| {PROXY_LABEL.get(p, p)} | {fmt(ok, '.3f')}% | {fmt(s.get('rps'), ',.0f')} | "
                     f"{fmt(_ms(s.get('p50_us')), '.2f')} | {fmt(_ms(s.get('p99_us')), '.2f')} | "
                     f"{fmt(s.get('ratio_p99_us'), '.2f')} | {fmt(s.get('cpu_us_per_req'), '.2f')} | "
                     f"{s['errors']} | {s['non2xx']} |")
        L.append("")
    for scen in ["S10", "S11"]:
        if scen not in summary:
            continue
        L.append(f"## {SCENARIO_TITLE[scen]}")
        L.append("")
        L.append("| ringway | req/s | x default | p50 ms | p99 ms | CPU µs/req | x default | errors | non-2xx |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in proxies_sorted(summary[scen]):
            s = summary[scen][p]
            label = "vulcand's default predicate" if p == "ringway-1" else PROXY_LABEL.get(p, p)
            L.append(f"| {label} | {fmt(s.get('rps'), ',.0f')} | {fmt(s.get('ratio_rps'), '.2f')} | "
                     f"{fmt(_ms(s.get('p50_us')), '.2f')} | {fmt(_ms(s.get('p99_us')), '.2f')} | "
                     f"{fmt(s.get('cpu_us_per_req'), '.2f')} | {fmt(s.get('ratio_cpu_us_per_req'), '.2f')} | "
                     f"{s['errors']} | {s['non2xx']} |")
        L.append("")
    if "S7" in summary:
        L.append(f"## {SCENARIO_TITLE['S7']}")
        L.append("")
        L.append("| proxy | idle conns | RSS before MiB | RSS after MiB | KiB per conn | x nginx |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for p in proxies_sorted(summary["S7"]):
            s = summary["S7"][p]
            L.append(f"| {PROXY_LABEL.get(p, p)} | {fmt(s.get('opened'), '.0f')} | "
                     f"{fmt(_mib(s.get('rss_before_kib')), '.1f')} | {fmt(_mib(s.get('rss_after_kib')), '.1f')} | "
                     f"{fmt(s.get('kib_per_conn'), '.2f')} | {fmt(s.get('ratio_kib_per_conn'), '.2f')} |")
        L.append("")
    if "S8" in summary:
        L.append(f"## {SCENARIO_TITLE['S8']}")
        L.append("")
        L.append(f"Target rate {meta.get('s8_rate', '?')} req/s ({meta.get('s8_conns', '?')} connections, "
                 f"each pausing {meta.get('s8_delay_ms', '?')} ms between requests).")
        L.append("")
        L.append("| proxy | achieved req/s | p50 ms | p99 ms | p99.9 ms | p99 x nginx | p99.9 x nginx | CPU µs/req | core use | errors |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in proxies_sorted(summary["S8"]):
            s = summary["S8"][p]
            L.append(f"| {PROXY_LABEL.get(p, p)} | {fmt(s.get('rps'), ',.0f')} | "
                     f"{fmt(_ms(s.get('p50_us')), '.3f')} | {fmt(_ms(s.get('p99_us')), '.3f')} | "
                     f"{fmt(_ms(s.get('p999_us')), '.3f')} | {fmt(s.get('ratio_p99_us'), '.2f')} | "
                     f"{fmt(s.get('ratio_p999_us'), '.2f')} | {fmt(s.get('cpu_us_per_req'), '.2f')} | "
                     f"{fmt(_pct(s.get('cpu_util')), '.0f')}% | {s['errors'] + s['non2xx']} |")
        L.append("")
    render_tls_md(summary, meta, L)
    L.append("Raw per-run records: `latest.json` (`runs`), medians and ratios: `latest.json` (`summary`). "
             "Chart: `latest.svg`.")
    L.append("")
    return "\n".join(L)


def render_tls_md(summary, meta, L):
    """T1-T3: medians with ratios to nginx and to HAProxy, then the per-round ratios."""
    scens = [s for s in TLS_SCENARIOS if s in summary]
    if not scens:
        return
    if meta.get("tls"):
        L.append(f"TLS on every proxy: {meta['tls']}.")
        L.append("")
    for scen in scens:
        title = SCENARIO_TITLE[scen]
        if scen in ("T1", "T2", "T2F"):
            title += f", {meta.get('t_conns', '?')} connections"
        L.append(f"## {title}")
        L.append("")
        rows = summary[scen]
        # The two figures compared (each with its ratios to nginx and HAProxy), then the rest.
        if scen == "T3":
            keys = [("MiB/s", "mib_s", ",.0f"), ("CPU µs/MiB", "cpu_us_per_mib", ",.0f")]
        else:
            keys = [("CPU µs/req", "cpu_us_per_req", ".2f"), ("req/s", "rps", ",.0f")]
        head = "".join(f" {label} | x nginx | x HAProxy |" for label, _, _ in keys)
        L.append(f"| proxy |{head} p99 ms | p99 x nginx | core use | peak RSS MiB | errors | non-2xx |")
        L.append("|---|" + "---:|" * (3 * len(keys) + 6))
        for p in proxies_sorted(rows):
            s = rows[p]
            cells = "".join(f" {fmt(s.get(key), spec)} | {fmt(s.get('ratio_' + key), '.2f')} | "
                            f"{fmt(s.get('ratioh_' + key), '.2f')} |" for _, key, spec in keys)
            L.append(f"| {PROXY_LABEL.get(p, p)} |{cells} {fmt(_ms(s.get('p99_us')), '.2f')} | "
                     f"{fmt(s.get('ratio_p99_us'), '.2f')} | {fmt(_pct(s.get('cpu_util')), '.0f')}% | "
                     f"{fmt(_mib(s.get('peak_rss_kib')), '.1f')} | {s['errors']} | {s['non2xx']} |")
        L.append("")
        if "ringway" in rows and rows["ringway"].get("tls_full") is not None:
            r = rows["ringway"]
            total = (r.get("tls_full") or 0) + (r.get("tls_resumed") or 0)
            if total:
                L.append(f"ringway's handshakes in a measured run (median): {r['tls_full']:,.0f} full, "
                         f"{r['tls_resumed']:,.0f} resumed ({r['tls_resumed'] / total * 100:.1f}% resumed).")
                L.append("")
        # Per-round ratios: the spread shows how far the medians can be trusted.
        lines = []
        for p in proxies_sorted(rows):
            if p in ("nginx",):
                continue
            s = rows[p]
            for label, key, _ in keys:
                for prefix, ref in [("ratio_", "nginx"), ("ratioh_", "HAProxy")]:
                    rr = s.get("rounds_" + prefix + key)
                    if not rr or p == "haproxy" and prefix == "ratioh_":
                        continue
                    vals = " ".join(f"{rr[k]:.2f}" for k in sorted(rr, key=int))
                    lines.append(f"| {PROXY_LABEL.get(p, p)} | {label} x {ref} | {vals} |")
        if lines:
            L.append("| proxy | ratio | per round (round 1, 2, ...) |")
            L.append("|---|---|---|")
            L.extend(lines)
            L.append("")
    if meta.get("load_samples"):
        L.append("Load average (1, 5, 15 min) before each round: "
                 + "; ".join(meta["load_samples"]) + ".")
        L.append("")


def _ms(us):
    return None if us is None else us / 1000.0


def _mib(kib):
    return None if kib is None else kib / 1024.0


def _pct(x):
    return None if x is None else x * 100.0


COLORS = {
    "ringway": "#d62728",
    "ringway-b": "#9467bd",
    "ringway-epoll": "#ff9896",
    "ringway-log": "#c49c94",
    "nginx": "#2ca02c",
    "nginx-fwd": "#98df8a",
    "haproxy": "#1f77b4",
    "haproxy-tcp": "#aec7e8",
    "pingora": "#ff7f0e",
}


def render_svg(summary):
    """Two grouped bar charts: throughput and CPU per request, as ratios to nginx."""
    panels = [("Requests/s vs nginx (higher is better)", "ratio_rps"),
              ("Proxy CPU per request vs nginx (lower is better)", "ratio_cpu_us_per_req")]
    scens = [s for s in ["S1", "S2", "S3", "S4", "S8"] + TLS_SCENARIOS if s in summary]
    proxies = [p for p in PROXY_ORDER if any(p in summary[s] for s in scens)]
    W, panel_h, top, left = 900, 300, 40, 60
    H = top + len(panels) * (panel_h + 70) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">'
           f'ringway vs nginx, HAProxy, Pingora (medians of same-round ratios; 1.0 = nginx)</text>']
    for pi, (title, key) in enumerate(panels):
        y0 = top + pi * (panel_h + 70) + 20
        vals = [summary[s][p].get(key) for s in scens for p in proxies
                if p in summary[s] and summary[s][p].get(key) is not None]
        vmax = max([1.2] + [v * 1.1 for v in vals])
        plot_w = W - left - 20
        out.append(f'<text x="{left}" y="{y0 - 4}" font-size="13" font-weight="bold">{title}</text>')
        # Axis and grid.
        step = 0.25 if vmax <= 2 else (0.5 if vmax <= 4 else 1.0)
        g = 0.0
        while g <= vmax + 1e-9:
            y = y0 + panel_h - g / vmax * panel_h
            color = "#444" if abs(g - 1.0) < 1e-9 else "#ddd"
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                       f'stroke="{color}" stroke-width="{1.5 if color == "#444" else 1}"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{g:.2f}</text>')
            g += step
        group_w = plot_w / max(1, len(scens))
        bar_w = group_w * 0.8 / max(1, len(proxies))
        for si, s in enumerate(scens):
            gx = left + si * group_w + group_w * 0.1
            for j, p in enumerate(proxies):
                v = summary[s].get(p, {}).get(key)
                if v is None:
                    continue
                h = v / vmax * panel_h
                x = gx + j * bar_w
                y = y0 + panel_h - h
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                           f'fill="{COLORS.get(p, "#999")}"><title>{PROXY_LABEL[p]} {s}: {v:.2f}</title></rect>')
                out.append(f'<text x="{x + (bar_w - 2) / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                           f'font-size="9">{v:.2f}</text>')
            out.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{y0 + panel_h + 16}" text-anchor="middle">{s}</text>')
    # Legend.
    ly = H - 22
    lx = left
    for p in proxies:
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{COLORS.get(p, "#999")}"/>')
        out.append(f'<text x="{lx + 16}" y="{ly}">{PROXY_LABEL[p]}</text>')
        lx += 40 + 7 * len(PROXY_LABEL[p])
    out.append("</svg>")
    return "\n".join(out) + "\n"


def cmd_report(args):
    # Rounds pair proxies measured minutes apart: each further run's rounds are numbered on
    # from the last one's, so no ratio ever compares records from two different runs.
    recs = []
    for path in args.results:
        offset = max((r["round"] for r in recs), default=0)
        for r in load(path):
            r["round"] += offset
            recs.append(r)
    meta = json.loads(open(args.meta).read())
    if len(args.results) > 1:
        meta["rounds"] = len({r["round"] for r in recs})
    for note in args.note or []:
        meta.setdefault("notes", []).append(note)
    summary = summarise(recs)
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "latest.md"), "w") as f:
        f.write(render_md(summary, meta))
    with open(os.path.join(args.outdir, "latest.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": recs}, f, indent=1)
    with open(os.path.join(args.outdir, "latest.svg"), "w") as f:
        f.write(render_svg(summary))
    print(render_md(summary, meta))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("snap")
    p.add_argument("pids", nargs="*")
    p.set_defaults(fn=cmd_snap)
    p = sub.add_parser("record")
    for a in ["scenario", "proxy", "wrk-out", "before", "after", "out"]:
        p.add_argument("--" + a, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--extra", action="append")
    p.set_defaults(fn=cmd_record)
    p = sub.add_parser("record-idle")
    p.add_argument("--proxy", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--opened", type=int, required=True)
    p.add_argument("--before", type=int, required=True)
    p.add_argument("--after", type=int, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_record_idle)
    p = sub.add_parser("idle")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--open-timeout", type=float, default=60)
    p.add_argument("--max-hold", type=float, default=60)
    p.set_defaults(fn=cmd_idle)
    p = sub.add_parser("routes")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--origin", default="127.0.0.1:18080")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_routes)
    p = sub.add_parser("report")
    p.add_argument("--results", required=True, action="append",
                   help="raw results (.jsonl); repeat to combine runs into one report")
    p.add_argument("--meta", required=True)
    p.add_argument("--note", action="append", help="extra line for the report's notes")
    p.add_argument("--outdir", required=True)
    p.set_defaults(fn=cmd_report)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
