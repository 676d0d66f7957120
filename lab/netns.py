"""Namespaces, links and commands inside them. Nothing here touches the host's namespace:
veth pairs are created with both ends placed directly in lab namespaces."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from lab import state
from lab.hosts import (
    ALL_HOSTS,
    ALL_NETNS,
    BALANCERS,
    CLIENT,
    CLIENT2,
    CLIENT2_IP,
    CLIENT_IP,
    CLIENT_IP6,
    LAB_NET6,
    ROUTER,
    ROUTER2,
    ROUTER2_CLIENT_IP,
    ROUTER2_SITE_IP,
    ROUTER_CLIENT_IP,
    ROUTER_CLIENT_IP6,
    ROUTER_SITE_IP,
    SITE_B,
    SWITCH_NS,
    Host,
)
from testbed.container import addresses_from_json

NETNS_DIR = Path("/run/netns")
COMMAND_TIMEOUT = 60.0


def run(
    argv: list[str],
    *,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a time bound; raise with its output when it fails."""
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        stdin=None if input_text else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}".rstrip()
        )
    return proc


def in_ns(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def ns_run(netns: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run(in_ns(netns, argv), **kwargs)  # type: ignore[arg-type]


def exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def create_all() -> None:
    """All namespaces, the three bridges, every veth, address and sysctl of the plan."""
    for name in ALL_NETNS:
        if not exists(name):
            run(["ip", "netns", "add", name])
        ns_run(name, ["ip", "link", "set", "lo", "up"])
    for bridge in ("br0", "br1"):
        ns_run(SWITCH_NS, ["ip", "link", "add", bridge, "type", "bridge"])
        ns_run(SWITCH_NS, ["ip", "link", "set", bridge, "up"])
    for host in ALL_HOSTS:
        if host.on_base:
            plug(host, "eth0", "br0", host.base_ip)
        if host.on_ospf:
            plug(host, "eth1", "br1", host.ospf_ip, host.ospf_ip6)
        if host not in (CLIENT, CLIENT2):
            ns_run(host.netns, ["ip", "addr", "add", f"{host.loopback_ip}/32", "dev", "lo"])
        # Replies from the anycast address may leave by another interface than the
        # request came in on; keep reverse-path filtering out of the way.
        sysctl(host.netns, "net.ipv4.conf.all.rp_filter", "0")
        sysctl(host.netns, "net.ipv4.conf.default.rp_filter", "0")
    link_client()
    link_site_b()
    for router in (ROUTER, ROUTER2):
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.fib_multipath_hash_policy", "1"),  # L4 hash: flows spread by port
            ("net.ipv4.fib_multipath_use_neigh", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),  # the same L4 hash for IPv6
        ):
            sysctl(router.netns, key, value)


def plug(host: Host, ifname: str, bridge: str, address: str, address6: str = "") -> None:
    """One veth: `ifname` in the host's namespace, its peer enslaved to `bridge`; an
    IPv6 address too if given (nodad: usable at once, and the plan has no duplicates)."""
    peer = f"{host.name}-{ifname[-1]}"
    run(
        [
            "ip",
            "link",
            "add",
            ifname,
            "netns",
            host.netns,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            SWITCH_NS,
        ]
    )
    ns_run(SWITCH_NS, ["ip", "link", "set", peer, "master", bridge, "up"])
    ns_run(host.netns, ["ip", "addr", "add", f"{address}/24", "dev", ifname])
    if address6:
        ns_run(host.netns, ["ip", "addr", "add", f"{address6}/64", "dev", ifname, "nodad"])
    ns_run(host.netns, ["ip", "link", "set", ifname, "up"])


def veth(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    """A veth pair between two lab namespaces: (namespace, interface, address/len) each
    end, up (the address may be "" for none)."""
    (ns_a, if_a, _), (ns_b, if_b, _) = a, b
    run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth",
         "peer", "name", if_b, "netns", ns_b])  # fmt: skip
    for netns_name, ifname, address in (a, b):
        if address:
            ns_run(netns_name, ["ip", "addr", "add", address, "dev", ifname])
        ns_run(netns_name, ["ip", "link", "set", ifname, "up"])


def link_client() -> None:
    """The client hangs off the router by its own link, with a route to the lab only
    (IPv4 and IPv6)."""
    veth(
        (ROUTER.netns, "eth2", f"{ROUTER_CLIENT_IP}/24"), (CLIENT.netns, "eth0", f"{CLIENT_IP}/24")
    )
    ns_run(CLIENT.netns, ["ip", "route", "add", "198.18.0.0/22", "via", ROUTER_CLIENT_IP])
    ns_run(ROUTER.netns, ["ip", "addr", "add", f"{ROUTER_CLIENT_IP6}/64", "dev", "eth2", "nodad"])
    ns_run(CLIENT.netns, ["ip", "addr", "add", f"{CLIENT_IP6}/64", "dev", "eth0", "nodad"])
    ns_run(CLIENT.netns, ["ip", "-6", "route", "add", LAB_NET6, "via", ROUTER_CLIENT_IP6])


def link_site_b() -> None:
    """Site B (lab/profiles.py's two-site profile; wired in every profile, so that a
    switch only restarts daemons): router2 on an inter-site link to the router (eth3),
    its client2, and its LAN with each site-B balancer (that balancer's eth2). IPv4 only."""
    veth(
        (ROUTER.netns, "eth3", f"{ROUTER_SITE_IP}/24"),
        (ROUTER2.netns, "eth0", f"{ROUTER2_SITE_IP}/24"),
    )
    veth(
        (ROUTER2.netns, "eth1", f"{ROUTER2_CLIENT_IP}/24"),
        (CLIENT2.netns, "eth0", f"{CLIENT2_IP}/24"),
    )
    ns_run(CLIENT2.netns, ["ip", "route", "add", "198.18.0.0/21", "via", ROUTER2_CLIENT_IP])
    ns_run(SWITCH_NS, ["ip", "link", "add", "br2", "type", "bridge"])
    ns_run(SWITCH_NS, ["ip", "link", "set", "br2", "up"])
    for bal in BALANCERS:
        if bal.name in SITE_B:
            plug(bal, "eth2", "br2", bal.site_b_ip)
    plug(ROUTER2, "eth2", "br2", ROUTER2.site_b_ip)


def sysctl(netns: str, key: str, value: str) -> None:
    ns_run(netns, ["sysctl", "-q", "-w", f"{key}={value}"])


def pids_in(netns: str) -> list[int]:
    """Every process in a lab namespace: all of them are ours, since we made the namespace."""
    if not exists(netns):
        return []
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(word) for word in proc.stdout.split()]


def delete_all() -> None:
    for name in ALL_NETNS:
        if exists(name):
            run(["ip", "netns", "del", name], check=False)


def start_recorded(name: str, netns_name: str, argv: list[str], log_path: Path) -> None:
    """Start a daemon inside a namespace, in a session of its own, its output appended to
    `log_path`, and record it in the lab's state as `name` (`down` ends it by PID)."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            in_ns(netns_name, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    time.sleep(0.05)  # one that fails at once is reported by record_process
    state.record_process(name, proc.pid)


def addresses(netns_name: str, ifname: str = "lo") -> list[str]:
    """Addresses on `ifname` in a lab namespace, as "address/prefixlen" strings."""
    out = ns_run(netns_name, ["ip", "-j", "addr", "show", "dev", ifname]).stdout
    return addresses_from_json(out)


def run_background(netns_name: str, argv: list[str]) -> subprocess.Popen[str]:
    """Start a bounded command (the caller's job) inside a namespace; output captured."""
    return subprocess.Popen(
        in_ns(netns_name, argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
