"""python3 -m lab up [--profile P] | demo [--profile P] [--keep] | down | status
(P: ospf, bgp or two-site; demo also takes all, every profile in turn)"""

from __future__ import annotations

import argparse
import os
import sys

from lab import frr, state, topology
from lab.hosts import ANYCAST6_PREFIX, ANYCAST_PREFIX, ROUTER2
from lab.profiles import Profile

ALL = "all"  # demo only: every profile in turn, in the same containers
# From ospf only bal3 and router2 switch to two-site; then to bgp.
DEMO_ORDER = (Profile.OSPF, Profile.TWO_SITE, Profile.BGP)


def add_profile(parser: argparse.ArgumentParser, every: bool = False) -> None:
    parser.add_argument(
        "--profile",
        choices=[p.value for p in Profile] + ([ALL] if every else []),
        default=Profile.OSPF.value,
        help="routing: FRR OSPF + BFD (default); eBGP + BFD, IPv4 and IPv6, with BIRD "
        "on bal3; or two-site: OSPF + BFD with bal3 behind a second router, at a second "
        "site" + ("; or all three in turn (demo)" if every else "") + ". A running lab "
        "switches its routing daemons only",
    )


def routes_text(profile: Profile) -> str:
    """The router's routes to both anycast addresses (the IPv6 one: BGP profile only),
    and router2's (two-site profile)."""
    lines = []
    for prefix in (ANYCAST_PREFIX, ANYCAST6_PREFIX):
        lines.append(frr.route_text(prefix) or f"(no route to {prefix})")
    if profile.two_sites:
        lines.append(f"router2 (site B): {frr.route_text(router=ROUTER2) or '(no route)'}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m lab",
        description="The article's anycast pgpool topology in network namespaces (root).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build the lab (or reuse the running one) and leave it up")
    add_profile(up)
    demo = commands.add_parser("demo", help="bring the lab up, run the demo, tear down")
    add_profile(demo, every=True)
    demo.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    commands.add_parser("down", help="tear everything down, also after a failed run")
    commands.add_parser("status", help="show what runs and the router's route")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("python3 -m lab: must run as root (namespaces, systemd-nspawn)", file=sys.stderr)
        return 2

    if args.command == "up":
        built = topology.up(profile=Profile(args.profile))
        print(routes_text(built.profile))
        return 0
    if args.command == "down":
        topology.down()
        return 0
    if args.command == "status":
        lab = topology.attach_running()
        if lab is None:
            print("lab is not (completely) up; `python3 -m lab down` cleans any leftovers")
            return 1
        print(
            f"lab up, profile: {lab.profile.value}, wiring: {lab.wiring.value}, "
            f"state: {state.STATE_FILE}"
        )
        print(routes_text(lab.profile))
        return 0
    from lab import demo as demo_module

    chosen = DEMO_ORDER if args.profile == ALL else (Profile(args.profile),)
    try:
        for profile in chosen:
            lab = topology.up(profile=profile)
            demo_module.run(lab)
    finally:
        if args.keep:
            print("\nlab left up (--keep); `python3 -m lab down` removes it", file=sys.stderr)
        else:
            topology.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
