"""Resilient ECMP on the lab router, emulated, so that its effect can be measured today.

Why: with hash-threshold ECMP (the kernel's "mpath" nexthop groups, all FRR 8.4 and
10.3 can install for OSPF or BGP routes), a change of the next-hop set moves some flows
between the remaining next hops too, and each moved TCP flow is reset by the balancer
that did not expect it. A resilient nexthop group (Linux 5.13+) moves only the buckets
of the next hop that left, and hands buckets to a returning one only once they have
been idle. FRR's zebra cannot put its own routes in such a group in any release so
far (`zebra nexthop-group resilience ...` is in its development branch); see README.md.

This mirror does in the router's namespace what that zebra would do: it follows
zebra's route to the anycast /32 and keeps the same next hops in a resilient group,
with a copy of the route in its own table, looked up before the main one. Routing
decisions stay zebra's (every next hop appears and goes when zebra's does, a poll
later); only the hashing changes. On SIGTERM or at its deadline it removes its rule,
route and nexthop objects. Runs as `ip netns exec lab-router /usr/bin/python3 -m
lab.resilient`; prints one JSON line per change, like lab.route_watch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute

from lab import netns
from lab.hosts import ANYCAST, ROUTER
from lab.route_watch import anycast_paths

TABLE = "4242"  # the mirror's own routing table
RULE_PRIORITY = "4242"  # before the main table's rule (32766)
# Nexthop ids well above the small ones zebra allocates, new for each run: zebra learns
# the kernel's nexthop objects and puts back, as its own hash-threshold ones, those a
# mirror deleted, so an id is never used twice.
GROUP_ID = 4_000_000 + 16 * (os.getpid() % 100_000)
HOP_ID_BASE = GROUP_ID + 1
BUCKETS = 128
IDLE_TIMER = 1  # seconds: a bucket idle this long may move to a returning next hop
MAX_DURATION = 600.0
SYSTEM_PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parent.parent


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, timeout=10, stdin=subprocess.DEVNULL)


def apply(ipr: IPRoute, paths: list[tuple[str, int]], ids: dict[str, int]) -> None:
    """Make the mirror's route use exactly `paths` (gateway, interface index)."""
    if not paths:
        subprocess.run(
            ["ip", "route", "del", f"{ANYCAST}/32", "table", TABLE],
            check=False, timeout=10, stdin=subprocess.DEVNULL, capture_output=True,
        )  # fmt: skip
        return
    for gateway, oif in paths:
        if gateway not in ids:
            ids[gateway] = HOP_ID_BASE + len(ids)
            dev = ipr.get_links(oif)[0].get_attr("IFLA_IFNAME")
            ip("nexthop", "replace", "id", str(ids[gateway]), "via", gateway, "dev", dev)
    members = "/".join(str(ids[g]) for g, _ in paths)
    ip("nexthop", "replace", "id", str(GROUP_ID), "group", members, "type", "resilient",
       "buckets", str(BUCKETS), "idle_timer", str(IDLE_TIMER))  # fmt: skip
    ip("route", "replace", f"{ANYCAST}/32", "nhid", str(GROUP_ID), "table", TABLE)


def clean_up(ids: dict[str, int]) -> None:
    for argv in (
        ["rule", "del", "priority", RULE_PRIORITY],
        ["route", "flush", "table", TABLE],
        ["nexthop", "del", "id", str(GROUP_ID)],
        *(["nexthop", "del", "id", str(i)] for i in ids.values()),
    ):
        subprocess.run(
            ["ip", *argv], check=False, timeout=10, stdin=subprocess.DEVNULL, capture_output=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=0.002)
    parser.add_argument("--duration", type=float, default=MAX_DURATION)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    deadline = time.monotonic() + min(args.duration, MAX_DURATION)
    ids: dict[str, int] = {}
    last: list[tuple[str, int]] | None = None
    clean_up(ids)  # a rule left by a mirror that was killed
    ip("rule", "add", "to", f"{ANYCAST}/32", "lookup", TABLE, "priority", RULE_PRIORITY)
    try:
        with IPRoute() as ipr:
            while not stop.is_set() and time.monotonic() < deadline:
                paths = anycast_paths(ipr, ANYCAST)
                if paths != last:
                    apply(ipr, paths, ids)
                    print(json.dumps({"t": time.monotonic(), "hops": [g for g, _ in paths]}),
                          flush=True)  # fmt: skip
                    last = paths
                stop.wait(args.interval)
    finally:
        clean_up(ids)


@contextmanager
def mirrored(enabled: bool = True) -> Iterator[None]:
    """The router hashes the anycast route resiliently while inside (nothing if not enabled)."""
    if not enabled:
        yield
        return
    proc = subprocess.Popen(
        netns.in_ns(ROUTER.netns, [SYSTEM_PYTHON, "-m", "lab.resilient"]),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first line: the group follows zebra's route
        if not first:
            raise RuntimeError("lab.resilient exited before it mirrored the route")
        yield
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


if __name__ == "__main__":
    main()
