"""FRR started by hand in a lab namespace: on the router, zebra, bfdd and the profile's
routing daemon (ospfd or bgpd); on site B's router2 in the two-site profile, zebra, bfdd
and ospfd. The routers' routes to the anycast addresses, and their OSPF, BGP and BFD
sessions (vtysh). The balancers' routing daemons are lab/profiles.py's.

Every file of such an instance lives in its own directory under the lab's (never
/etc/frr), and its daemons are recorded in the lab's state as "<instance>-<daemon>"."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import netns, state
from lab.hosts import (
    ANYCAST_PREFIX,
    BALANCERS,
    BASE_NET,
    CLIENT_NET,
    CLIENT_NET6,
    OSPF_NET,
    PRIMARY,
    ROUTER,
    ROUTER2,
    SITE_B_NET,
    SITE_COST,
    SITE_LINK_NET,
    Host,
)
from lab.profiles import Profile

TEMPLATES = Path(__file__).with_name("templates")
FRR_LIB = Path("/usr/lib/frr")
# The router's routing daemon in each profile; zebra and bfdd run in all.
ROUTING_DAEMON = {Profile.OSPF: "ospfd", Profile.BGP: "bgpd", Profile.TWO_SITE: "ospfd"}
VTYSH_TIMEOUT = 20.0


@dataclass(frozen=True)
class Instance:
    """One hand-started FRR: its name in the lab's state, its namespace, its directory."""

    name: str
    host: Host

    @property
    def directory(self) -> Path:
        return state.LAB_DIR / f"frr-{self.name}"

    def record(self, daemon: str) -> str:
        """Its daemon's name in the lab's state."""
        return f"{self.name}-{daemon}"

    def owns(self, record: str) -> bool:
        """Whether a name in the lab's state is one of its daemons'."""
        return record.startswith(f"{self.name}-")


ROUTER_FRR = Instance("router", ROUTER)
ROUTER2_FRR = Instance("router2", ROUTER2)
PG1_FRR = Instance("pg1", PRIMARY)  # the last resort's (lab/fallback.py)
ROUTER_DIR = ROUTER_FRR.directory
INSTANCES = (ROUTER_FRR, ROUTER2_FRR, PG1_FRR)


# The router's side of br0, the backends' network: OSPF there meets only the PostgreSQL
# primary's last-resort announcement (lab/fallback.py), whose example has these timers.
BASE_INTERFACE = """interface eth0
 ip ospf hello-interval 1
 ip ospf dead-interval 3
 ip ospf retransmit-interval 1
!
"""


def ospf_router_conf(
    host: Host, lan: tuple[str, str], site_interface: str, base_interface: str = ""
) -> str:
    """ospfd of a router: its LAN with balancers (interface, network), the inter-site
    link (point-to-point, cost SITE_COST), both with BFD, and optionally br0."""
    comment = "OSPF on eth0 (br0) meets the fallback host only." if base_interface else ""
    return (
        (TEMPLATES / "ospf-router.conf")
        .read_text()
        .format(
            hostname=f"lab-{host.name}",
            base_comment=comment,
            base_interface=base_interface,
            base_network=f" network {BASE_NET} area 0\n" if base_interface else "",
            router_id=host.loopback_ip,
            lan_interface=lan[0],
            lan_net=lan[1],
            site_interface=site_interface,
            site_net=SITE_LINK_NET,
            site_cost=SITE_COST,
        )
    )


def bfdd_conf(host: Host) -> str:
    """The routers' bfdd: the balancers' BFD numbers, under the router's own name."""
    return (TEMPLATES / "bfdd-router.conf").read_text().replace("lab-router", f"lab-{host.name}")


def router2_configs() -> dict[str, str]:
    """Site B's router: zebra, bfdd and ospfd, in that order."""
    return {
        "zebra": f"hostname lab-{ROUTER2.name}\n",
        "bfdd": bfdd_conf(ROUTER2),
        "ospfd": ospf_router_conf(ROUTER2, ("eth2", SITE_B_NET), "eth0"),
    }


def router_configs() -> dict[str, str]:
    """Every daemon's configuration file on the router, by daemon."""
    neighbors = "".join(
        f" neighbor {address} remote-as {bal.asn}\n neighbor {address} peer-group {group}\n"
        for bal in BALANCERS
        for address, group in ((bal.ospf_ip, "balancers4"), (bal.ospf_ip6, "balancers6"))
    )
    return {
        "zebra": "hostname lab-router\n",
        "bfdd": bfdd_conf(ROUTER),
        "ospfd": ospf_router_conf(ROUTER, ("eth1", OSPF_NET), "eth3", BASE_INTERFACE),
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
    """The router's zebra, bfdd and routing daemon; router2's in the two-site profile."""
    start_instance(ROUTER_FRR, router_configs())
    for daemon in ("zebra", "bfdd", ROUTING_DAEMON[profile]):
        start_daemon(ROUTER_FRR, daemon)
    if profile.two_sites:
        start_router2()


def start_instance(instance: Instance, configs: dict[str, str]) -> None:
    """A fresh directory with every daemon's configuration file, owned by frr."""
    directory = instance.directory
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    shutil.chown(directory, "frr", "frr")
    Path("/run/frr").mkdir(exist_ok=True)  # ospfd's fixed graceful-restart state file
    shutil.chown("/run/frr", "frr", "frr")
    for daemon, text in configs.items():
        conf = directory / f"{daemon}.conf"
        conf.write_text(text)
        shutil.chown(conf, "frr", "frr")
        conf.chmod(0o640)


def start_router2() -> None:
    """Site B's router, for the two-site profile only."""
    configs = router2_configs()
    start_instance(ROUTER2_FRR, configs)
    for daemon in configs:
        start_daemon(ROUTER2_FRR, daemon)


def stop_instance(instance: Instance, daemons: tuple[str, ...] = ()) -> None:
    """Stop an instance's daemons by recorded PID (all of them unless told), and forget them."""
    names = {instance.record(d) for d in daemons}
    state.stop_matching(lambda name: instance.owns(name) and (not names or name in names))


def is_running(instance: Instance, daemon: str) -> bool:
    """Whether the lab's state records `daemon` of `instance` alive."""
    wanted = instance.record(daemon)
    return any(p.name == wanted and state.is_alive(p) for p in state.load().processes)


def switch_router(profile: Profile) -> None:
    """Stop the other profiles' routing daemon on the router (zebra removes its routes),
    start this one's; start or stop router2 for the two-site profile."""
    wanted = ROUTING_DAEMON[profile]
    stop_instance(ROUTER_FRR, tuple(d for d in set(ROUTING_DAEMON.values()) if d != wanted))
    if not is_running(ROUTER_FRR, wanted):
        start_daemon(ROUTER_FRR, wanted)
    if profile.two_sites and not is_running(ROUTER2_FRR, "ospfd"):
        stop_instance(ROUTER2_FRR)
        start_router2()
    elif not profile.two_sites:
        stop_instance(ROUTER2_FRR)


def start_daemon(instance: Instance, daemon: str) -> None:
    """One FRR daemon of an instance in its namespace, every path in its directory,
    recorded by PID; zebra is waited for (bounded) until its zserv socket exists."""
    directory = instance.directory
    zserv = directory / "zserv.api"
    extra = ["--bfdctl", str(directory / "bfdd.sock")] if daemon == "bfdd" else []
    log_path = directory / f"{daemon}.log"
    argv = [
        str(FRR_LIB / daemon), "-f", str(directory / f"{daemon}.conf"), *extra,
        "-i", str(directory / f"{daemon}.pid"), "-z", str(zserv),
        "--vty_socket", str(directory), "-P", "0", "-u", "frr", "-g", "frr",
        "--log", f"file:{log_path}",
    ]  # fmt: skip
    netns.start_recorded(instance.record(daemon), instance.host.netns, argv, log_path)
    if daemon == "zebra":
        wait_for(zserv.exists, 10.0, f"{instance.name}'s zebra zserv socket")


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


def next_hops(prefix: str = ANYCAST_PREFIX, router: Host = ROUTER) -> list[str]:
    """A router's kernel next hops for an anycast prefix (/32 or /128): the balancers'
    addresses on its LAN (br1; br2 for router2), or the other router's."""
    out = netns.ns_run(router.netns, ip_route(prefix, as_json=True)).stdout
    hops: list[str] = []
    for route in json.loads(out or "[]"):
        if "gateway" in route:
            hops.append(route["gateway"])
        hops.extend(nh["gateway"] for nh in route.get("nexthops", []) if "gateway" in nh)
    return sorted(hops)


def route_text(prefix: str = ANYCAST_PREFIX, router: Host = ROUTER) -> str:
    return netns.ns_run(router.netns, ip_route(prefix)).stdout.rstrip()


def wait_next_hops(
    expected: set[str], timeout: float, prefix: str = ANYCAST_PREFIX, router: Host = ROUTER
) -> float:
    """Wait until a router's next hops for `prefix` are exactly `expected`; return
    seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        current = set(next_hops(prefix, router))
        if current == expected:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{router.name} next hops for {prefix} {sorted(current)} != {sorted(expected)} "
                f"after {timeout:.0f}s"
            )
        time.sleep(0.05)


def vtysh_json(command: str, instance: Instance = ROUTER_FRR) -> object:
    """`vtysh -c COMMAND` against an instance's own daemons (their vty sockets in its
    directory), parsed; bounded."""
    proc = netns.ns_run(
        instance.host.netns,
        ["vtysh", "--vty_socket", str(instance.directory), "-c", command],
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


OSPF_MAX_AGE = 3600  # seconds: an LSA this old is a withdrawal still being flooded


def external_lsas(address: str) -> dict[str, int]:
    """The router's live AS-external LSAs for an address: advertising router -> metric.
    A withdrawn one stays in the database at MaxAge for a while; it is left out."""
    database = vtysh_json(f"show ip ospf database external {address} json")
    if not isinstance(database, dict):
        raise RuntimeError(f"vtysh: not an object: {database!r}")
    return {
        str(lsa["advertisingRouter"]): int(lsa["metric"])
        for lsa in database.get("asExternalLinkStates", [])
        if int(lsa.get("lsaAge", 0)) < OSPF_MAX_AGE
    }


def bfd_sessions(instance: Instance = ROUTER_FRR) -> dict[str, str]:
    """A router's BFD peers and their states ("up", "down", ...)."""
    peers = vtysh_json("show bfd peers json", instance)
    if not isinstance(peers, list):
        return {}
    return {str(p.get("peer")): str(p.get("status")) for p in peers}
