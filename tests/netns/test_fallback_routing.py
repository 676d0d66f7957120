"""The shipped fallback examples do what they say: a router prefers the balancer, and takes
the PostgreSQL host's route only when no balancer announces the anycast address.

Three namespaces the test creates (fb-<pid>-<n>-r, -bal, -pg), joined by veth pairs:
the router runs FRR's zebra and ospfd; the balancer runs them with
docs/examples/frr.conf as shipped; the PostgreSQL host runs them with the OSPF part of
docs/examples/frr-fallback.conf, or BIRD 2 with the OSPF part of bird-fallback.conf
(each file says: keep the protocol your balancers use); and over eBGP, bgpd with the
BGP part of frr-fallback.conf against a balancer that announces without a prepend.
Every address is the examples' own, inside these namespaces only. The anycast address
is put on lo by hand, as the guards would; the router's choice is read from its kernel
route (`ip -j route`).

Every daemon is ended by its PID, every wait is bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.conftest import require_root
from tests.netns.test_guard import holds_throughout, wait_until

pytestmark = pytest.mark.netns

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
ANYCAST = "198.18.2.0/32"
BALANCER, PG_HOST = "198.18.1.94", "198.18.0.11"  # the examples' own addresses
ROUTER_CONF = """hostname fb-router
interface rbal
 ip ospf area 0.0.0.0
 ip ospf hello-interval 1
 ip ospf dead-interval 3
 ip ospf retransmit-interval 1
exit
interface rpg
 ip ospf area 0.0.0.0
 ip ospf hello-interval 1
 ip ospf dead-interval 3
 ip ospf retransmit-interval 1
exit
router ospf
 ospf router-id 198.18.9.1
 timers throttle spf 0 50 500
 timers throttle lsa all 0
 timers lsa min-arrival 0
exit
"""
CONVERGE = 30.0  # seconds for adjacencies (broadcast links wait out the dead interval) and SPF
_names = itertools.count()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


def ospf_part(path: Path, marker: str) -> str:
    """The file up to its BGP section: what an operator keeps for OSPF."""
    text = path.read_text()
    assert marker in text, f"{path.name} lost its {marker!r} section marker"
    return text.split(marker)[0]


class Daemons:
    """Routing daemons started in the test's namespaces, ended by their PIDs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []

    def _start(self, namespace: str, argv: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            self.processes.append(subprocess.Popen(
                ["ip", "netns", "exec", namespace, *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            ))  # fmt: skip

    def frr(self, namespace: str, name: str, config: str, routing: str = "ospfd") -> None:
        """zebra, then `routing` (ospfd, bgpd), both reading `config`, every path in a
        directory of their own."""
        directory = self.root / name
        directory.mkdir()
        shutil.chown(directory, "frr", "frr")
        conf = directory / "frr.conf"
        conf.write_text(config)
        shutil.chown(conf, "frr", "frr")
        zserv = directory / "zserv.api"
        for daemon in ("zebra", routing):
            self._start(namespace, [f"/usr/lib/frr/{daemon}", "-f", str(conf),
                                    "-i", str(directory / f"{daemon}.pid"), "-z", str(zserv),
                                    "--vty_socket", str(directory), "-P", "0",
                                    "-u", "frr", "-g", "frr",
                                    "--log", f"file:{directory / (daemon + '.log')}"],
                        directory / f"{daemon}.out")  # fmt: skip
            if daemon == "zebra":
                assert wait_until(zserv.exists, 10.0) is not None, self.logs()

    def bird(self, namespace: str, name: str, config: str) -> None:
        directory = self.root / name
        directory.mkdir()
        conf = directory / "bird.conf"
        conf.write_text(config)
        self._start(namespace, ["/usr/sbin/bird", "-f", "-c", str(conf),
                                "-s", str(directory / "bird.ctl"),
                                "-P", str(directory / "bird.pid")],
                    directory / "bird.out")  # fmt: skip

    def logs(self) -> str:
        return "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.root.glob("*/*.out")) + sorted(
                             self.root.glob("*/*.log")))  # fmt: skip

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


class Topology(tuple[str, str, str]):
    @property
    def router(self) -> str:
        return self[0]

    @property
    def balancer(self) -> str:
        return self[1]

    @property
    def pg(self) -> str:
        return self[2]


def bgp_part(path: Path) -> str:
    """The file without its OSPF section: what an operator keeps for BGP."""
    head, rest = path.read_text().split("! ---- OSPF")
    return head + "! ---- BGP" + rest.split("! ---- BGP")[1]


BGP_ROUTER_CONF = """hostname fb-router
router bgp 65000
 bgp router-id 198.18.9.1
 no bgp ebgp-requires-policy
 neighbor 198.18.1.94 remote-as 65010
 neighbor 198.18.1.94 timers 1 3
 neighbor 198.18.0.11 remote-as 65020
 neighbor 198.18.0.11 timers 1 3
exit
"""
# A balancer over eBGP (the project ships no BGP balancer example): its anycast address
# with no prepend, nothing else.
BGP_BALANCER_CONF = """frr defaults traditional
hostname fb-balancer
ip prefix-list pgpool-anycast seq 10 permit 198.18.2.0/32
route-map pgpool-anycast permit 10
 match ip address prefix-list pgpool-anycast
exit
router bgp 65010
 bgp router-id 198.18.1.94
 neighbor 198.18.1.1 remote-as 65000
 neighbor 198.18.1.1 timers 1 3
 address-family ipv4 unicast
  redistribute connected route-map pgpool-anycast
  neighbor 198.18.1.1 route-map pgpool-anycast out
 exit-address-family
exit
"""


def advertisers(router: str, daemons: Daemons) -> set[str]:
    """Who the router's OSPF database has an external LSA for the anycast address from."""
    out = subprocess.run(["ip", "netns", "exec", router, "vtysh", "--vty_socket",
                          str(daemons.root / "router"), "-c",
                          f"show ip ospf database external {ANYCAST.split('/')[0]}"],
                         capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    return set(re.findall(r"Advertising Router: (\S+)", out))


def next_hops(router: str) -> set[str]:
    out = subprocess.run(["ip", "-j", "-n", router, "route", "show", ANYCAST],
                         capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    hops: set[str] = set()
    for route in json.loads(out or "[]"):
        if "gateway" in route:
            hops.add(route["gateway"])
        hops.update(nh["gateway"] for nh in route.get("nexthops", []) if "gateway" in nh)
    return hops


@pytest.fixture
def topology() -> Iterator[tuple[Topology, Daemons]]:
    require_root()
    for binary in ("/usr/lib/frr/zebra", "/usr/lib/frr/ospfd", "/usr/sbin/bird"):
        if not os.path.exists(binary):
            pytest.fail(f"{binary} is missing: run scripts/setup-dev.sh (frr, bird2)")
    tag = f"fb-{os.getpid()}-{next(_names)}"
    names = Topology((f"{tag}-r", f"{tag}-bal", f"{tag}-pg"))
    root = Path(tempfile.mkdtemp(prefix="pah-fallback-routing-", dir="/tmp"))
    os.chmod(root, 0o755)
    daemons = Daemons(root)
    made: list[str] = []
    try:
        for name in names:
            ip("netns", "add", name)
            made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        for here, there, peer, mine, theirs in (
            ("rbal", "eth1", names.balancer, "198.18.1.1/24", f"{BALANCER}/24"),
            ("rpg", "eth0", names.pg, "198.18.0.1/24", f"{PG_HOST}/24"),
        ):
            ip("-n", names.router, "link", "add", here, "type", "veth", "peer", "name", there,
               "netns", peer)  # fmt: skip
            ip("-n", names.router, "address", "add", mine, "dev", here)
            ip("-n", names.router, "link", "set", here, "up")
            ip("-n", peer, "address", "add", theirs, "dev", there)
            ip("-n", peer, "link", "set", there, "up")
        yield names, daemons
    finally:
        daemons.stop()
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("pg_daemon", ["frr", "bird"])
def test_the_postgresql_host_is_the_last_resort(
    topology: tuple[Topology, Daemons], pg_daemon: str
) -> None:
    names, daemons = topology
    daemons.frr(names.router, "router", ROUTER_CONF)
    daemons.frr(names.balancer, "balancer", (EXAMPLES / "frr.conf").read_text())
    if pg_daemon == "frr":
        daemons.frr(names.pg, "pg", ospf_part(EXAMPLES / "frr-fallback.conf", "! ---- BGP"))
    else:
        daemons.bird(names.pg, "pg", ospf_part(EXAMPLES / "bird-fallback.conf", "# ---- BGP"))
    for namespace in (names.balancer, names.pg):  # as the guards would
        ip("-n", namespace, "address", "add", ANYCAST, "dev", "lo")

    def via(*hops: str) -> bool:
        return next_hops(names.router) == set(hops)

    # The balancer is preferred; the PostgreSQL host's route stays unused beside it.
    assert wait_until(lambda: via(BALANCER), CONVERGE, step=0.1) is not None, daemons.logs()
    # The router knows both routes (an external LSA from each), and uses the balancer's.
    both = {BALANCER, PG_HOST}
    known = wait_until(lambda: advertisers(names.router, daemons) == both, CONVERGE, step=0.2)
    assert known is not None, (advertisers(names.router, daemons), daemons.logs())
    assert holds_throughout(lambda: via(BALANCER), 2.0, step=0.1), next_hops(names.router)

    # Every balancer gone: the router takes the PostgreSQL host's route.
    ip("-n", names.balancer, "address", "del", ANYCAST, "dev", "lo")
    assert wait_until(lambda: via(PG_HOST), 10.0, step=0.05) is not None, daemons.logs()

    # A balancer back: the router returns to it, the fallback unused again.
    ip("-n", names.balancer, "address", "add", ANYCAST, "dev", "lo")
    assert wait_until(lambda: via(BALANCER), 10.0, step=0.05) is not None, daemons.logs()

    # The PostgreSQL host withdraws too (its guard saw a standby): only the balancer.
    ip("-n", names.pg, "address", "del", ANYCAST, "dev", "lo")
    assert holds_throughout(lambda: via(BALANCER), 2.0, step=0.1), next_hops(names.router)
    ip("-n", names.balancer, "address", "del", ANYCAST, "dev", "lo")
    assert wait_until(lambda: via(), 10.0, step=0.05) is not None, next_hops(names.router)


def bgp_paths(router: str, daemons: Daemons) -> int:
    """How many paths the router's BGP table holds for the anycast address."""
    out = subprocess.run(["ip", "netns", "exec", router, "vtysh", "--vty_socket",
                          str(daemons.root / "router"), "-c", f"show ip bgp {ANYCAST} json"],
                         capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    try:
        return len(json.loads(out).get("paths", []))
    except ValueError:
        return 0


def test_over_bgp_the_prepended_route_is_the_last_resort(
    topology: tuple[Topology, Daemons],
) -> None:
    """frr-fallback.conf's BGP part: the router prefers the balancer's shorter AS path."""
    names, daemons = topology
    daemons.frr(names.router, "router", BGP_ROUTER_CONF, routing="bgpd")
    daemons.frr(names.balancer, "balancer", BGP_BALANCER_CONF, routing="bgpd")
    daemons.frr(names.pg, "pg", bgp_part(EXAMPLES / "frr-fallback.conf"), routing="bgpd")
    for namespace in (names.balancer, names.pg):
        ip("-n", namespace, "address", "add", ANYCAST, "dev", "lo")

    def via(*hops: str) -> bool:
        return next_hops(names.router) == set(hops)

    both = wait_until(lambda: bgp_paths(names.router, daemons) == 2, CONVERGE, step=0.2)
    assert both is not None, daemons.logs()
    assert wait_until(lambda: via(BALANCER), 5.0, step=0.1) is not None, daemons.logs()
    assert holds_throughout(lambda: via(BALANCER), 2.0, step=0.1), next_hops(names.router)
    ip("-n", names.balancer, "address", "del", ANYCAST, "dev", "lo")
    assert wait_until(lambda: via(PG_HOST), 15.0, step=0.05) is not None, daemons.logs()
    ip("-n", names.balancer, "address", "add", ANYCAST, "dev", "lo")
    assert wait_until(lambda: via(BALANCER), 15.0, step=0.05) is not None, daemons.logs()
