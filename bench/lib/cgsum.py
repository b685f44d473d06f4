#!/usr/bin/env python3
"""Summarise a callgrind output file: user-space instructions per request and the functions
that execute them (self cost), with the callers of selected functions.

    cgsum.py CALLGRIND_OUT REQUESTS [--top N] [--callers SUBSTRING ...]

callgrind_annotate attributes a multi-threaded Rust binary's costs to `clone` when inlined
frames confuse it; this reads the raw format (name compression, `calls=` lines) directly.
"""
import argparse
import collections
import re


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("requests", type=int)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--callers", nargs="*", default=[])
    a = ap.parse_args()
    names, cost = {}, collections.Counter()
    callers = collections.defaultdict(collections.Counter)
    cur = callee = pending = None
    fn_re = re.compile(r"^(c?)fn=\((\d+)\)(?: (.*))?")
    for line in open(a.path, errors="replace"):
        line = line.rstrip("\n")
        m = fn_re.match(line)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            if m.group(1):
                callee = m.group(2)
            else:
                cur = m.group(2)
            continue
        if line.startswith("calls="):
            pending = callee
            continue
        if line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            if len(parts) < 2:
                continue
            if pending is not None:
                callers[pending][cur] += int(parts[1])
                pending = None
            else:
                cost[cur] += int(parts[1])
    total = sum(cost.values())
    n = max(a.requests, 1)
    print(f"user-space instructions: {total:,} for {a.requests:,} requests = {total / n:,.0f} per request")
    for k, v in cost.most_common(a.top):
        print(f"  {v / total * 100:5.2f}%  {v / n:7.0f}/req  {names.get(k, k)[:110]}")
    for want in a.callers:
        for k, name in names.items():
            if want in name and callers[k]:
                print(f"callers of {name[:100]}:")
                for c, v in callers[k].most_common(5):
                    print(f"  {v / n:8.0f}/req  {names.get(c, c)[:110]}")


if __name__ == "__main__":
    main()
