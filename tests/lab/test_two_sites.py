"""End-to-end: two sites (lab/profiles.py's two-site profile), the article's reason for anycast.

Site A is the router with bal1 and bal2 and the client; site B is router2 with bal3 on
its own LAN and client2. The routers share OSPF area 0 over a link of cost
hosts.SITE_COST, so each router's best route to the anycast address goes to its own
site's balancers, and the other site's route is known but unused. The hook, the guard
and their configuration are the same as in every profile.

What is asserted, from the routers' kernel routes and OSPF databases and from real client
connections (who answered: inet_client_addr() seen by the backend):
- each site's clients land only on their own site's balancers;
- when every balancer of site A withdraws (their pgpools stopped, a planned stop), site
  A's clients land on site B; when A comes back, they come back. The crossing time is
  measured and bounded generously (SITE_FAILOVER_BOUND); the only connections that fail
  are resets in flight at a change of the router's next hops (ECMP rehash).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import pytest

from lab import balancers, frr
from lab.hosts import ANYCAST, CLIENT2, ROUTER2, ROUTER2_SITE_IP, SITE_A, SITE_B
from lab.measure import Load, RouteWatch, connect_many, failed_during
from lab.topology import Lab, run_parallel
from tests.lab.conftest import Report
from tests.lab.test_guard_lab import LEASE, RESETS, STRAY_RESETS, ms

RATE = 40.0  # connections per second from site A's client during the failover
# From `systemctl stop pgpool2` on both site-A balancers until the router routes to site
# B: the drain's withdrawal plus OSPF's flooding and route calculation. Generous for a
# noisy 2-core machine; the measured time is reported (README: two sites).
SITE_FAILOVER_BOUND = 15.0
SITE_RETURN_BOUND = 30.0  # from `systemctl start` on both until both are next hops again
SETTLE = 1.0  # after a change of route, before connections must land on the new site


@pytest.fixture
def site_a_serving(two_site_lab: Lab) -> Iterator[Lab]:
    """The two-site lab with serving_route = true on site A's guards, as an operator
    sets it for planned stops: a withdrawn balancer still accepts the flows the router
    sends it until the router has converged (docs: serving_route). Afterwards site A's
    pgpools are started again and the setting and its routes removed."""
    site_a = [two_site_lab.balancers[name] for name in SITE_A]
    run_parallel([partial(balancers.set_guard_settings, b, "serving_route = true\n", LEASE)
                  for b in site_a])  # fmt: skip
    try:
        yield two_site_lab
    finally:
        run_parallel([bal.start_pgpool for bal in site_a if bal.unit_state() != "active"])
        run_parallel([partial(balancers.clear_guard_settings, b, LEASE) for b in site_a])
        for bal in site_a:
            balancers.remove_serving_route(bal)


def test_each_site_uses_only_its_own_balancers(two_site_lab: Lab, report: Report) -> None:
    lab = two_site_lab
    site_a_hops = {lab.balancers[name].host.ospf_ip for name in SITE_A}
    site_b_hops = {lab.balancers[name].host.site_b_ip for name in SITE_B}
    assert set(frr.next_hops()) == site_a_hops
    assert set(frr.next_hops(router=ROUTER2)) == site_b_hops
    # Site B's announcement reaches site A too: known, and unused while A has its own.
    advertisers = set(frr.external_lsas(ANYCAST))
    report("site_a_external_lsa_advertisers", sorted(advertisers))
    assert advertisers == {bal.host.ospf_ip for bal in lab.balancers.values()}
    at_a = connect_many(60)
    at_b = connect_many(30, client=CLIENT2)
    report("site_a_client_spread", dict(at_a.by_balancer()))
    report("site_b_client_spread", dict(at_b.by_balancer()))
    assert not at_a.failures and not at_b.failures, (at_a.errors(), at_b.errors())
    assert set(at_a.by_balancer()) == set(SITE_A)  # both, and nothing from site B
    assert set(at_b.by_balancer()) == set(SITE_B)


def test_site_a_withdrawn_sends_its_clients_to_site_b_and_back(
    site_a_serving: Lab, report: Report
) -> None:
    lab = site_a_serving
    site_a = [lab.balancers[name] for name in SITE_A]
    site_a_hops = {bal.host.ospf_ip for bal in site_a}
    total = 90.0
    with RouteWatch(duration=total) as watch:
        load = Load(rate=RATE, duration=total)
        try:
            time.sleep(1.5)  # connections before, for the comparison
            stopped_at = time.monotonic()
            run_parallel([bal.stop_pgpool for bal in site_a])
            crossed_at, _ = watch.wait_for(
                lambda hops: hops == [ROUTER2_SITE_IP], SITE_FAILOVER_BOUND, after=stopped_at
            )
            time.sleep(2 * SETTLE)
            during_b = connect_many(10, client=CLIENT2)  # site B's own clients: unmoved
            started_at = time.monotonic()
            run_parallel([bal.start_pgpool for bal in site_a])
            back_at, _ = watch.wait_for(
                lambda hops: set(hops) == site_a_hops, SITE_RETURN_BOUND, after=started_at
            )
            time.sleep(2 * SETTLE)
        finally:
            load.stop()
        result = load.result()
        changes = list(watch.changes)
        regroupings = list(watch.regroupings)
    report("site_failover_ms", ms(crossed_at - stopped_at))
    report("site_return_ms", ms(back_at - started_at))
    report("site_failover_attempts", len(result.attempts))
    report("site_failover_failed", len(result.failures))
    report("site_failover_errors", dict(result.errors()))
    report(
        "site_failover_failures",
        [(round(a.start - stopped_at, 3), round(a.end - stopped_at, 3), a.balancer)
         for a in result.failures],
    )  # fmt: skip
    # Never without a route: every change between the stop and the return has a hop.
    report("router_changes", [(round(t - stopped_at, 3), hops) for t, hops in changes])
    assert all(hops for t, hops in changes if stopped_at <= t <= back_at), changes
    before = [a for a in result.attempts if a.end < stopped_at]
    on_b = [a for a in result.attempts if crossed_at + SETTLE <= a.start and a.end < started_at]
    after = [a for a in result.attempts if a.start > back_at + SETTLE]
    assert before and on_b and after, (len(before), len(on_b), len(after))
    assert {a.balancer for a in before if a.ok} <= set(SITE_A)
    assert all(a.ok and a.balancer in SITE_B for a in on_b), on_b
    assert all(a.ok and a.balancer in SITE_A for a in after), after
    assert set(during_b.by_balancer()) == set(SITE_B) and not during_b.failures
    # What fails are connections in flight at a change of the router's nexthop group
    # (of its next hops, or the same hops regrouped): ECMP rehash.
    spans = [(since, at) for since, at in regroupings if stopped_at <= at <= back_at]
    at_changes = {id(a) for a in failed_during(result.failures, spans)}
    stray = [a for a in result.failures if id(a) not in at_changes]
    report("site_failover_stray_resets", len(stray))
    assert len(stray) <= STRAY_RESETS, stray  # as in the drain test (test_guard_lab)
    assert {a.balancer for a in result.failures} <= RESETS, result.errors()
