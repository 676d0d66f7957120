"""FRR: the router's zebra and ospfd started by hand in its namespace, the balancers'
configuration, and reading the router's route to the anycast address."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lab import netns, state
from lab.hosts import ANYCAST, OSPF_NET, ROUTER, Host

TEMPLATES = Path(__file__).with_name("templates")
ROUTER_DIR = state.LAB_DIR / "frr-router"
ZEBRA_BINARY = "/usr/lib/frr/zebra"
OSPFD_BINARY = "/usr/lib/frr/ospfd"


def balancer_config(host: Host) -> str:
    return (
        (TEMPLATES / "frr-balancer.conf")
        .read_text()
        .format(hostname=host.netns, router_id=host.loopback_ip, ospf_net=OSPF_NET)
    )


def start_router() -> None:
    """zebra then ospfd, with every path inside the lab directory."""
    if ROUTER_DIR.exists():
        shutil.rmtree(ROUTER_DIR)
    ROUTER_DIR.mkdir(parents=True)
    shutil.chown(ROUTER_DIR, "frr", "frr")
    Path("/run/frr").mkdir(exist_ok=True)  # ospfd's fixed graceful-restart state file
    shutil.chown("/run/frr", "frr", "frr")
    (ROUTER_DIR / "zebra.conf").write_text("hostname lab-router\n")
    (ROUTER_DIR / "ospfd.conf").write_text(
        (TEMPLATES / "ospf-router.conf")
        .read_text()
        .format(router_id=ROUTER.loopback_ip, ospf_net=OSPF_NET)
    )
    for conf in ROUTER_DIR.glob("*.conf"):
        shutil.chown(conf, "frr", "frr")
        conf.chmod(0o640)
    zserv = ROUTER_DIR / "zserv.api"
    start_daemon("zebra", [ZEBRA_BINARY, "-f", str(ROUTER_DIR / "zebra.conf")], zserv)
    wait_for(zserv.exists, 10.0, "zebra's zserv socket")
    start_daemon("ospfd", [OSPFD_BINARY, "-f", str(ROUTER_DIR / "ospfd.conf")], zserv)


def start_daemon(daemon: str, argv: list[str], zserv: Path) -> None:
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


def next_hops() -> list[str]:
    """The router's kernel next hops for the anycast /32 (OSPF net addresses)."""
    out = netns.ns_run(ROUTER.netns, ["ip", "-j", "route", "show", f"{ANYCAST}/32"]).stdout
    hops: list[str] = []
    for route in json.loads(out or "[]"):
        if "gateway" in route:
            hops.append(route["gateway"])
        hops.extend(nh["gateway"] for nh in route.get("nexthops", []) if "gateway" in nh)
    return sorted(hops)


def route_text() -> str:
    return netns.ns_run(ROUTER.netns, ["ip", "route", "show", f"{ANYCAST}/32"]).stdout.rstrip()


def wait_next_hops(expected: set[str], timeout: float) -> float:
    """Wait until the router's next hops are exactly `expected`; return seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        current = set(next_hops())
        if current == expected:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"router next hops {sorted(current)} != {sorted(expected)} after {timeout:.0f}s"
            )
        time.sleep(0.05)
