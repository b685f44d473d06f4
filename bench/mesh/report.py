"""The mesh lab's figures and report: per-scenario summaries of the call records, a per-second
timeline, and bench/results/mesh/latest.{md,json,svg} with a copy of each in history/."""
import json
import os
import shutil
from xml.sax.saxutils import escape


def quantile(values, q):
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def timeline(rows, faults=()):
    """Per second of the load: requests started, failed, and p99 ms; faults as seconds from the
    first request."""
    if not rows:
        return {"start": None, "seconds": [], "faults": []}
    start = min(r["t"] for r in rows)
    buckets = {}
    for r in rows:
        buckets.setdefault(int(r["t"] - start), []).append(r)
    seconds = []
    # the last second is cut short by the end of the load: left out unless it is the only one
    for sec in range(max(max(buckets), 1)):
        b = buckets.get(sec, [])
        seconds.append([sec, len(b), sum(1 for r in b if r["status"] != 200),
                        quantile([r["ms"] for r in b], 0.99) or 0])
    return {"start": start, "seconds": seconds,
            "faults": [[round(t - start, 2), label] for t, label in faults]}


def summarize(name, rows, extra=None, faults=()):
    """The standard figures of a scenario; `faults` are (unix time, label) pairs to mark."""
    failed = [r for r in rows if r["status"] != 200]
    result = {
        "name": name,
        "requests": len(rows),
        "failed": len(failed),
        "failed_idempotent": sum(1 for r in failed if r["method"] == "GET"),
        "p50_ms": quantile([r["ms"] for r in rows], 0.50),
        "p99_ms": quantile([r["ms"] for r in rows], 0.99),
        "settle_ms": None,
    }
    result.update(extra or {})
    result["errors"] = sorted({f"{r['status']} {r['error']}".strip() for r in failed})[:5]
    result["timeline"] = timeline(rows, faults)
    return result


STANDARD = {"name", "requests", "failed", "failed_idempotent", "p50_ms", "p99_ms", "settle_ms",
            "errors", "problems", "spread", "timeline"}
DETAILS = {
    "killed": "instance killed:",
    "posts_in_flight_at_kill": "POSTs in flight at the fault:",
    "dying_ms": "it took (ms) to die:",
    "server_gone_ms": "the dead server left every table after (ms, lease TTL 3 s):",
    "failed_posts": "POSTs lost to the silent host:",
    "route_during_member_loss_ms": "with h1's etcd member down, a new route reached every node in (ms):",
    "route_during_leader_loss_ms": "with the leader down, a new route reached every node in (ms):",
    "release_s": "two releases of three instances took (s):",
    "outage_s": "etcd was down for (s):",
    "answered_during_outage": "requests answered during the outage:",
    "new_route_everywhere_ms": "a route registered after etcd returned reached every node in (ms):",
    "probes": "probes sent:",
    "probe_answers": "status per probe (0: no answer or refused):",
    "leaks": "probes that reached a service they should not have (leaks):",
    "exposed_ok": "requests on the exposed route answered by a users instance:",
    "retries_on_status": "retries on a 503 (every node's ringway_upstream_retries_total{reason=\"status\"}):",
    "drained_instance_share": "share of requests the draining instance answered 200 after it began to drain:",
    "sick_share": "share of requests the sick instance answered after it fell sick (healthy: 0.33):",
    "sick_failed": "requests the sick instance failed (500):",
}
# What vulcand does in the same situation, where its behaviour is known from its code and docs.
VULCAND = {
    "rolling-release": "vulcand resets a backend's state on every change, so each of a "
                       "release's six server changes would restart its balancer and breakers "
                       "from nothing.",
    "instance-crash": "vulcand retries a GET on a network error (its default predicate) but "
                      "may send the retry to the same dead server.",
    "host-partition": "vulcand may retry a timed-out GET on the same silent server, waiting "
                      "out the timeout again.",
    "etcd-outage": "vulcand fails to start while etcd is down, so the node restarted during "
                   "the outage would have served nothing.",
    "drain-503": "vulcand with scroll's predicate also retries the 503, but may retry on the "
                 "same draining server.",
    "sick-instance": "vulcand resets its circuit breakers and balancer state on every route "
                     "change, so each registration in the mesh would hand the sick instance "
                     "its full share again.",
}


def svg(results, title):
    """One panel per scenario: requests/s (blue), errors/s (red), p99 ms per second (grey,
    own scale, right), faults as dashed vertical lines."""
    w, ph, left, right, top = 760, 150, 60, 60, 40
    panels = [r for r in results if r.get("timeline", {}).get("seconds")]
    height = top + len(panels) * (ph + 50) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>',
           f'<text x="{left}" y="34" fill="#555">requests/s (blue), errors/s (red), p99 ms '
           f'(grey, right scale); dashed: fault</text>']
    for i, r in enumerate(panels):
        tl = r["timeline"]
        secs = tl["seconds"]
        y0 = top + i * (ph + 50) + 30
        n = max(len(secs), 1)
        x = lambda s: left + (w - left - right) * s / n  # noqa: E731
        rmax = max(max(s[1] for s in secs), 1)
        pmax = max(max(s[3] for s in secs), 1)
        y = lambda v, top_v: y0 + ph - ph * v / top_v  # noqa: E731
        verdict = "ok" if not r.get("problems") else "FAIL"
        out.append(f'<text x="{left}" y="{y0 - 8}" font-weight="bold">{escape(r["name"])} '
                   f'({r["requests"]} requests, {r["failed"]} failed, p99 {r["p99_ms"]} ms, '
                   f'{verdict})</text>')
        out.append(f'<rect x="{left}" y="{y0}" width="{w - left - right}" height="{ph}" '
                   f'fill="none" stroke="#ccc"/>')
        out.append(f'<text x="{left - 4}" y="{y0 + 8}" text-anchor="end" fill="#1f5fbf">'
                   f'{rmax}/s</text>')
        out.append(f'<text x="{left - 4}" y="{y0 + ph}" text-anchor="end">0</text>')
        out.append(f'<text x="{w - right + 4}" y="{y0 + 8}" fill="#777">{pmax} ms</text>')
        out.append(f'<text x="{w - right}" y="{y0 + ph + 14}" text-anchor="end">'
                   f'{len(secs)} s</text>')
        for col, colour, top_v in ((3, "#999", pmax), (1, "#1f5fbf", rmax), (2, "#d0302f", rmax)):
            # each second's figure is drawn at the middle of its second
            pts = " ".join(f"{x(s[0] + 0.5):.1f},{y(s[col], top_v):.1f}" for s in secs)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                       f'stroke-width="1.5"/>')
        for k, (at, label) in enumerate(tl["faults"]):
            fx = left + (w - left - right) * min(max(at, 0), n) / n
            out.append(f'<line x1="{fx:.1f}" y1="{y0}" x2="{fx:.1f}" y2="{y0 + ph}" '
                       f'stroke="#000" stroke-dasharray="4 3"/>')
            out.append(f'<text x="{fx + 3:.1f}" y="{y0 + 12 + 12 * (k % 3)}" fill="#000">'
                       f'{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(results, out_dir, quick, started, rev):
    """latest.{json,md,svg} in `out_dir`, each copied into history/; returns the markdown."""
    os.makedirs(os.path.join(out_dir, "history"), exist_ok=True)
    doc = {"generated": started, "revision": rev, "quick": quick, "scenarios": results}
    kind = "quick" if quick else "full"
    files = {"json": json.dumps(doc, indent=1) + "\n",
             "svg": svg(results, f"ringway mesh lab, {kind} run, {started}, {rev}")}
    lines = [f"# Mesh lab ({kind} run, {started}, {rev})", "",
             "`bench/mesh/run" + (" --quick" if quick else "") + "`: 4 hosts in network "
             "namespaces, 3-member etcd cluster, one ringway per host. Failed = no answer or "
             "not 200; idempotent = GET.", "",
             "![timelines: requests/s, errors/s and p99 per second, faults marked](latest.svg)", "",
             "| scenario | requests | failed | failed idempotent | p50 ms | p99 ms | settle ms "
             "| verdict |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        verdict = "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])
        lines.append(f"| {r['name']} | {r['requests']} | {r['failed']} | "
                     f"{r['failed_idempotent']} | {r['p50_ms']} | {r['p99_ms']} | "
                     f"{r['settle_ms'] if r['settle_ms'] is not None else '–'} | {verdict} |")
    for r in results:
        lines += ["", f"### {r['name']}", ""]
        details = {k: v for k, v in r.items() if k not in STANDARD}
        if details:
            lines.append("; ".join(f"{DETAILS.get(k, k)} {v}" for k, v in details.items()) + ".")
        if r.get("spread"):
            lines += ["", "Answers per instance: " + "; ".join(
                f"{s}: " + ", ".join(f"{i} {n}" for i, n in sorted(c.items()))
                for s, c in sorted(r["spread"].items())) + "."]
        if r["name"] in VULCAND:
            lines += ["", f"vulcand: {VULCAND[r['name']]}"]
    files["md"] = "\n".join(lines) + "\n"
    stamp = started.replace(":", "")[:15]
    for ext, text in files.items():
        with open(os.path.join(out_dir, f"latest.{ext}"), "w") as f:
            f.write(text)
        shutil.copy(os.path.join(out_dir, f"latest.{ext}"),
                    os.path.join(out_dir, "history", f"{stamp}-{rev}.{ext}"))
    return files["md"]
