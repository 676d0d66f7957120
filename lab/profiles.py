"""The lab's two routing profiles, and the balancers' routing daemons for each.

The hook and its guard never know which daemon announces their addresses; only the
routing configuration differs between the profiles:
- `ospf` (the default): FRR ospfd and bfdd on every balancer, loading
  docs/examples/frr-ospf-bfd.conf (`redistribute connected` of the anycast /32,
  `ip ospf bfd`); the router runs zebra, bfdd and ospfd. IPv4 only: ospfd speaks
  OSPFv2, so the IPv6 anycast address sits on lo unannounced.
- `bgp`: eBGP from each balancer (its own private ASN, hosts.Host.asn) to the router,
  one IPv4 and one IPv6 session each, BFD on every session. bal1 and bal2 run FRR
  bgpd and bfdd loading docs/examples/frr-bgp.conf; bal3 runs BIRD 2 loading
  docs/examples/bird-bgp.conf; the router runs zebra, bfdd and bgpd (ECMP over
  three ASNs with multipath-relax). Both anycast addresses, /32 and /128.
- `two-site`: OSPF + BFD as in `ospf`, over two sites. Site A is the router with
  bal1 and bal2 on br1; site B is router2 with bal3 on its own LAN (br2, bal3's
  eth2) and its own client2. The routers share area 0 over an inter-site link of
  cost hosts.SITE_COST (a LAN costs 10): every balancer's external route has the same
  type-2 metric, so each router prefers the balancers with the shorter path to them,
  its own site's, and uses the other site's only when its own have all withdrawn.
  bal3 loads the same example, rendered for eth2 and its site-B address.

The lab loads the shipped examples themselves, not copies that could drift. Each is
valid as shipped: it is written with one balancer's real lab values (bal1's for FRR,
bal3's for BIRD), and rendering it for another balancer replaces exactly those
literal values (its name, its address on the routing network, its ASN) with that
balancer's. A value the file no longer contains stops the lab, loudly.

Switching profiles reuses the booted containers: it restarts routing daemons only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from lab.hosts import BALANCERS, SITE_B, Host
from testbed.container import Container

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs/examples"
FRR_CONF = "/etc/frr/frr.conf"
FRR_DAEMONS = "/etc/frr/daemons"
BIRD_CONF = "/etc/bird/bird.conf"
# Balancers that run BIRD 2 instead of FRR in the BGP profile.
BIRD_BALANCERS = frozenset({"bal3"})
UNIT_TIMEOUT = 90.0


class Profile(enum.Enum):
    OSPF = "ospf"
    BGP = "bgp"
    TWO_SITE = "two-site"

    @property
    def uses_ospf(self) -> bool:
        """Whether the balancers and routers speak OSPF (ospf and two-site)."""
        return self is not Profile.BGP

    @property
    def two_sites(self) -> bool:
        """Whether router2 and site B are in use."""
        return self is Profile.TWO_SITE

    @property
    def announces_ipv6(self) -> bool:
        """Whether the router learns the IPv6 anycast /128 in this profile."""
        return self is Profile.BGP


def routing_interface(host: Host, profile: Profile) -> str:
    """A balancer's interface towards its router: eth1 on br1 (site A's LAN), except a
    site-B balancer's eth2 in two-site. Its router-id stays its br1 address in every
    profile: a switch then leaves no second router's LSAs behind to age out."""
    if profile.two_sites and host.name in SITE_B:
        return "eth2"
    return "eth1"


@dataclass(frozen=True)
class Example:
    """A shipped configuration file and the balancer whose values it is written with."""

    name: str  # under docs/examples/
    written_for: Host
    has_hostname: bool  # FRR's `hostname` line (BIRD has none)
    has_asn: bool  # BGP's local ASN

    @property
    def path(self) -> Path:
        return EXAMPLES / self.name

    def substitutions(self, host: Host, interface: str = "eth1") -> list[tuple[str, str]]:
        """(value in the file, value for `host`) pairs: the only per-host values, and the
        interface towards the router if not the file's eth1."""
        ref = self.written_for
        pairs = [(ref.ospf_ip, host.ospf_ip)]  # its address on br1, and its router-id
        if interface != "eth1":
            pairs.append(("interface eth1\n", f"interface {interface}\n"))
        if self.has_asn:
            pairs.append((str(ref.asn), str(host.asn)))
        if self.has_hostname:
            pairs.append((f"hostname {ref.name}\n", f"hostname {host.name}\n"))
        return pairs

    def render(self, host: Host, interface: str = "eth1") -> str:
        text = self.path.read_text()
        for old, new in self.substitutions(host, interface):
            if old not in text:
                raise RuntimeError(
                    f"{self.path.relative_to(REPO)} no longer contains {old.strip()!r}, "
                    f"the value of {self.written_for.name} the lab replaces for each balancer"
                )
            text = text.replace(old, new)
        return text


BAL1, _, BAL3 = BALANCERS
FRR_OSPF_BFD = Example("frr-ospf-bfd.conf", BAL1, has_hostname=True, has_asn=False)
FRR_BGP = Example("frr-bgp.conf", BAL1, has_hostname=True, has_asn=True)
BIRD_BGP = Example("bird-bgp.conf", BAL3, has_hostname=False, has_asn=True)


def runs_bird(host: Host, profile: Profile) -> bool:
    return profile is Profile.BGP and host.name in BIRD_BALANCERS


def example_for(host: Host, profile: Profile) -> Example:
    if profile.uses_ospf:
        return FRR_OSPF_BFD
    return BIRD_BGP if runs_bird(host, profile) else FRR_BGP


def differs(host: Host, old: Profile, new: Profile) -> bool:
    """Whether a balancer's routing daemon or its configuration changes between profiles
    (bal1 and bal2 are the same in ospf and two-site)."""
    before = (example_for(host, old), routing_interface(host, old), frr_daemons(old))
    return before != (example_for(host, new), routing_interface(host, new), frr_daemons(new))


def frr_daemons(profile: Profile) -> dict[str, bool]:
    """Which FRR daemons /etc/frr/daemons enables (zebra, staticd: always)."""
    return {"ospfd": profile.uses_ospf, "bgpd": not profile.uses_ospf, "bfdd": True}


def configure_balancer(box: Container, host: Host, profile: Profile) -> None:
    """Stop the other profile's routing daemon, write this one's configuration, (re)start
    it. pgpool, the guard and the addresses on lo are left alone."""
    text = example_for(host, profile).render(host, routing_interface(host, profile))
    if runs_bird(host, profile):
        box.run(["systemctl", "stop", "frr"], timeout=UNIT_TIMEOUT)
        box.write_file(BIRD_CONF, text, 0o640)
        box.run(["chown", "bird:bird", BIRD_CONF])
        box.run(["systemctl", "restart", "bird"], timeout=UNIT_TIMEOUT)
        return
    box.run(["systemctl", "stop", "bird"], timeout=UNIT_TIMEOUT)
    for daemon, enabled in frr_daemons(profile).items():
        value = "yes" if enabled else "no"
        box.run(["sed", "-i", f"s/^{daemon}=.*/{daemon}={value}/", FRR_DAEMONS])
    box.write_file(FRR_CONF, text, 0o640)
    box.run(["chown", "frr:frr", FRR_CONF])
    box.run(["systemctl", "restart", "frr"], timeout=UNIT_TIMEOUT)
