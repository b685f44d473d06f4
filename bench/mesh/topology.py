"""The mesh lab's topology: namespaces, addresses, services, and the one shell helper."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
PREFIX = "rwlab-"
HOSTS = ["h1", "h2", "h3", "h4"]
ETCD_HOSTS = ["h1", "h2", "h3"]
SUBNET = "10.213.0"
EDGE_ADDR = "10.214.0.2"
# service -> (port, hosts running an instance)
SERVICES = {"users": (5001, ["h1", "h2", "h3"]), "orders": (5002, ["h2", "h3"]),
            "late": (5003, []), "later": (5004, []),
            "revived": (5005, []),  # registered only during a scenario
            "drain": (5006, ["h1", "h2", "h3"]), "sick": (5007, ["h1", "h2", "h3"])}
# the predicate scroll (vulcand's service library) sets: a draining instance's 503
# is retried on another server
SCROLL_FAILOVER = "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2"
FRONTEND_SETTINGS = {"drain": {"FailoverPredicate": SCROLL_FAILOVER}}


def ns(host):
    return PREFIX + host


def addr(host):
    return f"{SUBNET}.{HOSTS.index(host) + 1}"


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)
