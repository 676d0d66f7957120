"""FRR on the router: zebra, bfdd and the profile's routing daemon (ospfd or bgpd) started
by hand in its namespace; the router's routes to the anycast addresses, and its BGP and
BFD sessions (vtysh). The balancers' routing daemons are lab/profiles.py's."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lab import netns, state
from lab.hosts import (
    ANYCAST_PREFIX,
    BALANCERS,
    CLIENT_NET,
    CLIENT_NET6,
    OSPF_NET,
    ROUTER,
)
from lab.profiles import Profile

TEMPLATES = Path(__file__).with_name("templates")
ROUTER_DIR = state.LAB_DIR / "frr-router"
FRR_LIB = Path("/usr/lib/frr")
# The routing daemon of each profile; zebra and bfdd run in both.
ROUTING_DAEMON = {Profile.OSPF: "ospfd", Profile.BGP: "bgpd"}
VTYSH_TIMEOUT = 20.0


def router_configs() -> dict[str, str]:
    """Every daemon's configuration file on the router, by daemon."""
    neighbors = "".join(
        f" neighbor {address} remote-as {bal.asn}\n neighbor {address} peer-group {group}\n"
        for bal in BALANCERS
        for address, group in ((bal.ospf_ip, "balancers4"), (bal.ospf_ip6, "balancers6"))
    )
    return {
        "zebra": "hostname lab-router\n",
        "bfdd": (TEMPLATES / "bfdd-router.conf").read_text(),
        "ospfd": (TEMPLATES / "ospf-router.conf")
        .read_text()
        .format(router_id=ROUTER.loopback_ip, ospf_net=OSPF_NET),
        "bgpd": (TEMPLATES / "bgp-router.conf")
        .read_text()
        .format(
            asn=ROUTER.asn,
            router_id=ROUTER.loopback_ip,
            client_net=CLIENT_NET,
            client_net6=CLIENT_NET6,
            neighbors=neighbors.rstrip("\n"),
        ),
    }


def start_router(profile: Profile) -> None:
    """zebra, bfdd, then the profile's routing daemon, every path inside the lab
    directory."""
    if ROUTER_DIR.exists():
        shutil.rmtree(ROUTER_DIR)
    ROUTER_DIR.mkdir(parents=True)
    shutil.chown(ROUTER_DIR, "frr", "frr")
    Path("/run/frr").mkdir(exist_ok=True)  # ospfd's fixed graceful-restart state file
    shutil.chown("/run/frr", "frr", "frr")
    for daemon, text in router_configs().items():
        conf = ROUTER_DIR / f"{daemon}.conf"
        conf.write_text(text)
        shutil.chown(conf, "frr", "frr")
        conf.chmod(0o640)
    zserv = ROUTER_DIR / "zserv.api"
    start_daemon("zebra")
    wait_for(zserv.exists, 10.0, "zebra's zserv socket")
    start_daemon("bfdd", ["--bfdctl", str(ROUTER_DIR / "bfdd.sock")])
    start_daemon(ROUTING_DAEMON[profile])


def switch_router(profile: Profile) -> None:
    """Stop the other profile's routing daemon (zebra removes its routes), start this one's."""
    for other, daemon in ROUTING_DAEMON.items():
        if other is not profile:
            for record in state.load().processes:
                if record.name == f"router-{daemon}":
                    state.stop_process(record)
            state.forget_process(f"router-{daemon}")
    wanted = f"router-{ROUTING_DAEMON[profile]}"
    if not any(p.name == wanted and state.is_alive(p) for p in state.load().processes):
        start_daemon(ROUTING_DAEMON[profile])


def start_daemon(daemon: str, extra: list[str] | None = None) -> None:
    zserv = ROUTER_DIR / "zserv.api"
    argv = [str(FRR_LIB / daemon), "-f", str(ROUTER_DIR / f"{daemon}.conf"), *(extra or [])]
    log = (ROUTER_DIR / f"{daemon}.log").open("ab")
    proc = subprocess.Popen(
        netns.in_ns(
            ROUTER.netns,
            [
                *argv,
                "-i",
                str(ROUTER_DIR / f"{daemon}.pid"),
                "-z",
                str(zserv),
                "--vty_socket",
                str(ROUTER_DIR),
                "-P",
                "0",
                "-u",
                "frr",
                "-g",
                "frr",
                "--log",
                f"file:{ROUTER_DIR / (daemon + '.log')}",
            ],
        ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    time.sleep(0.05)
    state.record_process(f"router-{daemon}", proc.pid)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def ip_route(prefix: str, as_json: bool = False) -> list[str]:
    """`ip route show PREFIX` in the prefix's family (IPv4 /32 or IPv6 /128)."""
    family = "-6" if ":" in prefix else "-4"
    return ["ip", *(["-j"] if as_json else []), family, "route", "show", prefix]


def next_hops(prefix: str = ANYCAST_PREFIX) -> list[str]:
    """The router's kernel next hops for an anycast prefix (/32 or /128): the balancers'
    addresses on the routing network (br1)."""
    out = netns.ns_run(ROUTER.netns, ip_route(prefix, as_json=True)).stdout
    hops: list[str] = []
    for route in json.loads(out or "[]"):
        if "gateway" in route:
            hops.append(route["gateway"])
        hops.extend(nh["gateway"] for nh in route.get("nexthops", []) if "gateway" in nh)
    return sorted(hops)


def route_text(prefix: str = ANYCAST_PREFIX) -> str:
    return netns.ns_run(ROUTER.netns, ip_route(prefix)).stdout.rstrip()


def wait_next_hops(expected: set[str], timeout: float, prefix: str = ANYCAST_PREFIX) -> float:
    """Wait until the router's next hops for `prefix` are exactly `expected`; return
    seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        current = set(next_hops(prefix))
        if current == expected:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"router next hops for {prefix} {sorted(current)} != {sorted(expected)} "
                f"after {timeout:.0f}s"
            )
        time.sleep(0.05)


def vtysh_json(command: str) -> object:
    """`vtysh -c COMMAND` against the router's own daemons (their vty sockets in the lab
    directory), parsed; bounded."""
    proc = netns.ns_run(
        ROUTER.netns,
        ["vtysh", "--vty_socket", str(ROUTER_DIR), "-c", command],
        timeout=VTYSH_TIMEOUT,
    )
    return json.loads(proc.stdout or "{}")


def bgp_sessions() -> dict[str, str]:
    """The router's BGP neighbours and their states ("Established", ...), both families."""
    found: dict[str, str] = {}
    for family in ("ipv4", "ipv6"):
        summary = vtysh_json(f"show bgp {family} unicast summary json")
        peers = summary.get("peers", {}) if isinstance(summary, dict) else {}
        found.update({address: str(peer.get("state")) for address, peer in peers.items()})
    return found


def bfd_sessions() -> dict[str, str]:
    """The router's BFD peers and their states ("up", "down", ...)."""
    peers = vtysh_json("show bfd peers json")
    if not isinstance(peers, list):
        return {}
    return {str(p.get("peer")): str(p.get("status")) for p in peers}
