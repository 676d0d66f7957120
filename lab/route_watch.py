"""Poll the router's route to the anycast address and print every change of its next hops.

Runs inside the router's namespace (`ip netns exec lab-router /usr/bin/python3 -m
lab.route_watch`), one JSON line per change: {"t": CLOCK_MONOTONIC seconds, "hops": [...]}.
CLOCK_MONOTONIC is shared by all namespaces, so the caller compares `t` with its own
time.monotonic(). Bounded by --duration; the first line is the state at start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pyroute2 import IPRoute

MAX_DURATION = 300.0


def anycast_hops(ipr: IPRoute, address: str) -> list[str]:
    hops: list[str] = []
    for route in ipr.route("dump", family=2):
        if route.get_attr("RTA_TABLE") != 254:  # the main table: zebra's (lab.resilient's
            continue  # copy of the route in its own table is not a second set of hops)
        if route.get_attr("RTA_DST") != address or route["dst_len"] != 32:
            continue
        if route.get_attr("RTA_GATEWAY"):
            hops.append(route.get_attr("RTA_GATEWAY"))
        for path in route.get_attr("RTA_MULTIPATH") or []:
            if path.get_attr("RTA_GATEWAY"):
                hops.append(path.get_attr("RTA_GATEWAY"))
    return sorted(hops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="198.18.2.0")
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    deadline = time.monotonic() + min(args.duration, MAX_DURATION)
    last: list[str] | None = None
    with IPRoute() as ipr:
        while time.monotonic() < deadline:
            hops = anycast_hops(ipr, args.address)
            now = time.monotonic()
            if hops != last:
                print(json.dumps({"t": now, "hops": hops}), flush=True)
                last = hops
            time.sleep(args.interval)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
