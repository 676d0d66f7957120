"""End-to-end: the routing profiles themselves (lab/profiles.py), at the router.

The hook and the guard are the same in both profiles; what differs is who carries their
addresses to the router. In both, BFD must watch every balancer with the shipped
examples' numbers (3 x 300 ms), and the router must hold one ECMP next hop per balancer.
The BGP profile adds an IPv4 and an IPv6 eBGP session per balancer (FRR on bal1 and
bal2, BIRD 2 on bal3), the IPv6 anycast /128, and clients over IPv6. Facts come from the
router's vtysh (JSON) and kernel routes; BIRD's from `birdc` inside bal3.
"""

from __future__ import annotations

import time

import pytest

from lab import frr, profiles
from lab.hosts import ANYCAST6, ANYCAST6_PREFIX, BALANCERS
from lab.measure import RouteWatch, connect_many
from lab.profiles import Profile
from lab.topology import Lab
from tests.lab.conftest import Report
from tests.lab.test_guard_lab import wait_until

BFD_MULTIPLIER, BFD_INTERVAL_MS = 3, 300  # docs/examples/*bfd*, *bgp*: 3 x 300 ms
BFD_UP_TIMEOUT = 20.0  # FRR's bfdd sends at 1 s until a session is up, then at 300 ms


def expected_peers(lab: Lab) -> set[str]:
    """The router's neighbours: each balancer's br1 address, and its IPv6 one with BGP."""
    return lab.all_next_hops() | lab.all_next_hops6()


def test_bfd_watches_every_balancer_with_the_shipped_timers(lab: Lab, report: Report) -> None:
    """One BFD session per routing adjacency, up, at 3 x 300 ms: OSPF's three (IPv4),
    BGP's six (an IPv4 and an IPv6 session per balancer, BIRD's on bal3 included). A BFD
    session starts once its routing session is up, so a lab just built or switched may
    have its routes a moment before every BFD session is up: wait for that, bounded."""
    started = time.monotonic()
    wait_until(
        "every BFD session up",
        lambda: frr.bfd_sessions() == dict.fromkeys(expected_peers(lab), "up"),
        BFD_UP_TIMEOUT,
        0.2,
    )
    report("bfd_all_up_after_ms", round(1000 * (time.monotonic() - started)))
    peers = frr.vtysh_json("show bfd peers json")
    assert isinstance(peers, list), peers
    by_peer = {str(p["peer"]): p for p in peers}
    report("bfd_peers", {peer: p.get("status") for peer, p in by_peer.items()})
    assert set(by_peer) == expected_peers(lab), by_peer
    for peer, session in by_peer.items():
        assert session["status"] == "up", (peer, session)
        assert session["detect-multiplier"] == BFD_MULTIPLIER, (peer, session)
        assert session["receive-interval"] <= BFD_INTERVAL_MS, (peer, session)
        assert session["transmit-interval"] <= BFD_INTERVAL_MS, (peer, session)
        # The balancer's side: what it asked the router for.
        assert session["remote-detect-multiplier"] == BFD_MULTIPLIER, (peer, session)
        assert session["remote-transmit-interval"] <= BFD_INTERVAL_MS, (peer, session)


def test_every_balancer_is_a_routing_neighbour_of_the_router(lab: Lab, report: Report) -> None:
    """OSPF: a Full adjacency per balancer. BGP: every IPv4 and IPv6 session Established,
    each from the balancer's own private ASN; bal3's from BIRD (FRR stopped there)."""
    if lab.profile is Profile.OSPF:
        neighbors = frr.vtysh_json("show ip ospf neighbor json")
        assert isinstance(neighbors, dict), neighbors
        found = {
            str(n["ifaceAddress"]): str(n["state"] if "state" in n else n.get("nbrState"))
            for entries in neighbors.get("neighbors", {}).values()
            for n in entries
        }
        report("ospf_neighbors", found)
        assert set(found) == lab.all_next_hops(), found
        assert all(state.startswith("Full") for state in found.values()), found
        return
    sessions = frr.bgp_sessions()
    report("bgp_sessions", sessions)
    assert set(sessions) == expected_peers(lab), sessions
    assert all(state == "Established" for state in sessions.values()), sessions
    for family in ("ipv4", "ipv6"):
        summary = frr.vtysh_json(f"show bgp {family} unicast summary json")
        assert isinstance(summary, dict), summary
        for bal in BALANCERS:
            address = bal.ospf_ip if family == "ipv4" else bal.ospf_ip6
            peer = summary["peers"][address]
            assert peer["remoteAs"] == bal.asn, (family, bal.name, peer)
            assert peer["pfxRcd"] == 1, (family, bal.name, peer)  # the anycast address only
    for name in profiles.BIRD_BALANCERS:
        bal = lab.balancers[name]
        protocols = bal.run(["birdc", "show", "protocols"]).stdout
        report(f"{name}_bird_protocols", protocols.strip().splitlines())
        established = [line for line in protocols.splitlines() if "Established" in line]
        assert {line.split()[0] for line in established} == {"router4", "router6"}, protocols
        assert bal.unit_state("frr") != "active"


def test_anycast_routes_have_one_ecmp_next_hop_per_balancer(lab: Lab, report: Report) -> None:
    """The /32 in both profiles; the /128 in the BGP profile. OSPFv2 carries no IPv6: in
    the OSPF profile the router has no route to the IPv6 anycast address, although every
    balancer holds it on lo (the hook's configuration is the same in both profiles)."""
    v4, v6 = frr.next_hops(), frr.next_hops(ANYCAST6_PREFIX)
    report("router_hops_v4", v4)
    report("router_hops_v6", v6)
    assert sorted(v4) == sorted(lab.all_next_hops())
    for bal in lab.balancers.values():
        assert bal.has_anycast() and bal.has_anycast6(), bal.name
    if lab.profile.announces_ipv6:
        assert sorted(v6) == sorted(lab.all_next_hops6())
        assert "nexthop via" in frr.route_text(ANYCAST6_PREFIX)  # one multipath route
    else:
        assert v6 == [], v6


def test_ipv6_connections_spread_over_all_three_balancers(bgp_lab: Lab, report: Report) -> None:
    """BGP profile only: the OSPF profile announces no IPv6 (see above). pgpool listens
    on the IPv6 anycast address (listen_addresses = '*'), 4.1.4 on bal3 too."""
    result = connect_many(45, target=ANYCAST6)
    assert not result.failures, result.errors()
    assert len(result.attempts) == 45
    per_balancer = result.by_balancer()
    report("v6_connections_per_balancer", dict(per_balancer))
    assert set(per_balancer) == set(bgp_lab.balancers), per_balancer


@pytest.mark.parametrize("name", ["bal1", "bal3"], ids=["frr", "bird"])
def test_guard_withdrawal_removes_the_v4_and_the_v6_next_hop(
    bgp_lab: Lab, report: Report, name: str
) -> None:
    """BGP profile only (the OSPF profile has no IPv6 next hop to lose; its IPv4 one is
    test_topology's and test_guard_lab's). kill -9 of pgpool: the guard withdraws both
    addresses, and the router drops that balancer from both routes, the other two stay;
    on bal1 through FRR, on bal3 through BIRD. lab.restore() brings it back afterwards."""
    lab = bgp_lab
    victim = lab.balancers[name]
    hop4, hop6 = victim.host.ospf_ip, victim.host.ospf_ip6
    try:
        with RouteWatch(duration=60) as v4, RouteWatch(duration=60, address=ANYCAST6) as v6:
            killed_at = victim.kill_pgpool()
            dropped4, hops4 = v4.wait_for(lambda h: hop4 not in h, 10, after=killed_at)
            dropped6, hops6 = v6.wait_for(lambda h: hop6 not in h, 10, after=killed_at)
            time.sleep(0.2)
            still4, still6 = v4.current(), v6.current()
        report(f"{name}_kill9_to_v4_withdrawn_ms", round(1000 * (dropped4 - killed_at)))
        report(f"{name}_kill9_to_v6_withdrawn_ms", round(1000 * (dropped6 - killed_at)))
        assert set(hops4) == lab.all_next_hops() - {hop4}, hops4
        assert set(hops6) == lab.all_next_hops6() - {hop6}, hops6
        assert set(still4) == set(hops4) and set(still6) == set(hops6), (still4, still6)
        assert dropped4 - killed_at < 1.0 and dropped6 - killed_at < 1.0
        assert not victim.has_anycast() and not victim.has_anycast6()
    finally:
        lab.restore()
