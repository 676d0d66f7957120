"""Poll the router's route to an anycast address (IPv4 /32 or IPv6 /128) and print every
change of its next hops, and of the nexthop group that carries them.

Runs inside the router's namespace (`ip netns exec lab-router /usr/bin/python3 -m
lab.route_watch`), one JSON line per change: {"t": CLOCK_MONOTONIC seconds, "since": ...,
"hops": [...], "group": [...]}. The change happened after "since", the last poll that saw
the old state (on a busy machine a poll can come well after the one before), and by "t".
"hops" is the set of gateways, sorted; "group" is the same gateways in
the kernel's order, with the route's nexthop object id first (or null). Hash-threshold
ECMP maps a flow to a path by its position in that order, so zebra installing the same
hops as a new group in another order moves flows although "hops" stays the same: such a
line has unchanged hops. CLOCK_MONOTONIC is shared by all namespaces, so the caller
compares `t` with its own time.monotonic(). Bounded by --duration; the first line is the
state at start.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import time

from pyroute2 import IPRoute

MAX_DURATION = 300.0
MAIN_TABLE = 254


def anycast_paths(ipr: IPRoute, address: str) -> list[tuple[str, int]]:
    """(gateway, interface index) of each next hop of the main table's host route to
    `address` (its family's full-length prefix), sorted."""
    return sorted(installed_paths(ipr, address)[1])


def installed_paths(ipr: IPRoute, address: str) -> tuple[int | None, list[tuple[str, int]]]:
    """The route's nexthop object id (RTA_NH_ID, None without one) and its paths in the
    kernel's order."""
    parsed = ipaddress.ip_address(address)
    nhid: int | None = None
    family = socket.AF_INET6 if parsed.version == 6 else socket.AF_INET
    paths: list[tuple[str, int]] = []
    for route in ipr.route("dump", family=family):
        if route.get_attr("RTA_TABLE") != MAIN_TABLE:  # zebra's (lab.resilient's copy of
            continue  # the route in its own table is not a second set of hops)
        dst = route.get_attr("RTA_DST")
        if dst is None or ipaddress.ip_address(dst) != parsed:
            continue
        if route["dst_len"] != parsed.max_prefixlen:
            continue
        nhid = route.get_attr("RTA_NH_ID")
        if route.get_attr("RTA_GATEWAY"):
            paths.append((str(ipaddress.ip_address(route.get_attr("RTA_GATEWAY"))),
                          route.get_attr("RTA_OIF")))  # fmt: skip
        for path in route.get_attr("RTA_MULTIPATH") or []:
            if path.get_attr("RTA_GATEWAY"):
                paths.append((str(ipaddress.ip_address(path.get_attr("RTA_GATEWAY"))),
                              path["oif"]))  # fmt: skip
    return nhid, paths


def anycast_hops(ipr: IPRoute, address: str) -> list[str]:
    """The gateways of anycast_paths."""
    return [gateway for gateway, _ in anycast_paths(ipr, address)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="198.18.2.0")
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    deadline = time.monotonic() + min(args.duration, MAX_DURATION)
    last: list[object] | None = None
    seen_at: float | None = None  # the last poll's time
    with IPRoute() as ipr:
        while time.monotonic() < deadline:
            nhid, paths = installed_paths(ipr, args.address)
            now = time.monotonic()
            group: list[object] = [nhid, *(gateway for gateway, _ in paths)]
            if group != last:
                hops = sorted(gateway for gateway, _ in paths)
                since = now if seen_at is None else seen_at
                line = {"t": now, "since": since, "hops": hops, "group": group}
                print(json.dumps(line), flush=True)
                last = group
            seen_at = now
            time.sleep(args.interval)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
