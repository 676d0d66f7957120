"""The addressing plan: the article's networks, and which namespace holds which address."""

from __future__ import annotations

from dataclasses import dataclass

BASE_NET = "198.18.0.0/24"  # bridge br0: backends, balancers, router
OSPF_NET = "198.18.1.0/24"  # bridge br1: OSPF between router and balancers
CLIENT_NET = "198.18.3.0/24"  # a point-to-point link between router and client
# The second site (the `two-site` profile; built in every profile, used only there):
SITE_LINK_NET = "198.18.4.0/24"  # router (site A) to router2 (site B), OSPF cost SITE_COST
CLIENT2_NET = "198.18.5.0/24"  # router2 to client2
SITE_B_NET = "198.18.6.0/24"  # router2's LAN with bal3 (bal3's eth2)
SITE_COST = 100  # the inter-site link's OSPF cost, both ends; a LAN's is 10
LAB_NET = "198.18.0.0/16"  # everything above; trusted by PostgreSQL
ANYCAST = "198.18.2.0"
ANYCAST_PREFIX = f"{ANYCAST}/32"
# IPv6, from the benchmarking range 2001:2::/48 (RFC 5180), as 198.18.0.0/15 (RFC 2544)
# is for IPv4: the same third group as the IPv4 network's third octet. The anycast
# address is ::1 of its /64, not ::0 (RFC 4291's subnet-router anycast address).
OSPF_NET6 = "2001:2:0:1::/64"  # bridge br1, in both profiles (BGP's IPv6 sessions)
CLIENT_NET6 = "2001:2:0:3::/64"
LAB_NET6 = "2001:2::/48"
ANYCAST6 = "2001:2:0:2::1"
ANYCAST6_PREFIX = f"{ANYCAST6}/128"
ANYCAST_PREFIXES = (ANYCAST_PREFIX, ANYCAST6_PREFIX)  # the hook's `addresses` in the lab
PGPOOL_PORT = 9999
POSTGRES_PORT = 5432

SWITCH_NS = "lab-sw"
PREFIX = "lab-"


@dataclass(frozen=True)
class Host:
    """One namespace of the lab with its addresses (last octet shared across networks)."""

    name: str  # short name: router, bal1, pg1, client
    octet: int
    on_base: bool = True
    on_ospf: bool = False

    @property
    def netns(self) -> str:
        return PREFIX + self.name

    @property
    def base_ip(self) -> str:
        return f"198.18.0.{self.octet}"

    @property
    def ospf_ip(self) -> str:
        return f"198.18.1.{self.octet}"

    @property
    def ospf_ip6(self) -> str:
        """Its IPv6 address on br1 (the routing network, in either profile)."""
        return f"2001:2:0:1::{self.octet}"

    @property
    def loopback_ip(self) -> str:
        return f"198.18.2.{self.octet}"

    @property
    def site_b_ip(self) -> str:
        """Its address on site B's LAN (router2 and bal3 only)."""
        return f"198.18.6.{self.octet}"

    @property
    def asn(self) -> int:
        """Its private ASN in the BGP profile: 64500 + the last octet (bal1 64594)."""
        return 64500 + self.octet


ROUTER = Host("router", 90, on_ospf=True)
ROUTER2 = Host("router2", 89, on_base=False)  # site B's router (two-site profile)
BACKENDS = (Host("pg1", 91), Host("pg2", 92), Host("pg3", 93))
BALANCERS = (
    Host("bal1", 94, on_ospf=True),
    Host("bal2", 95, on_ospf=True),
    Host("bal3", 96, on_ospf=True),
)
CLIENT = Host("client", 2, on_base=False)
ROUTER_CLIENT_IP = "198.18.3.1"
CLIENT_IP = "198.18.3.2"
ROUTER_CLIENT_IP6 = "2001:2:0:3::1"
CLIENT_IP6 = "2001:2:0:3::2"
CLIENT2 = Host("client2", 3, on_base=False)  # site B's client, behind router2
ROUTER2_CLIENT_IP = "198.18.5.1"
CLIENT2_IP = "198.18.5.2"
ROUTER_SITE_IP = "198.18.4.90"  # router's end of the inter-site link
ROUTER2_SITE_IP = "198.18.4.89"
SITE_A = ("bal1", "bal2")  # the balancers of each site in the two-site profile
SITE_B = ("bal3",)

PRIMARY = BACKENDS[0]
ALL_HOSTS = (ROUTER, *BACKENDS, *BALANCERS, CLIENT, ROUTER2, CLIENT2)
ALL_NETNS = (SWITCH_NS, *(h.netns for h in ALL_HOSTS))


def balancer_by_ip(ip: str) -> str:
    """Name of the balancer whose base address a backend sees as inet_client_addr()."""
    for bal in BALANCERS:
        if ip in (bal.base_ip, bal.ospf_ip, bal.site_b_ip):
            return bal.name
    return ip


def backend_by_ip(ip: str) -> str:
    """Name of the backend whose address is inet_server_addr()."""
    for pg in BACKENDS:
        if ip == pg.base_ip:
            return pg.name
    return ip
