"""End-to-end: the article's bonus, the PostgreSQL primary as the last resort (lab/fallback.py).

pg1 runs FRR with the OSPF part of docs/examples/frr-fallback.conf and a guard with
serve = "postgresql", which keeps the anycast address on its lo only while its
PostgreSQL answers as the primary; pgpool's port on the anycast address is redirected to
PostgreSQL's there. What is asserted, from the router's OSPF database and kernel routes
and from real client connections (inet_client_addr() as the backend sees it):
- with the balancers up, pg1's route is in the router's database only as a backup (an
  external type-2 route of metric 100000 beside the balancers' 20) and no client
  reaches pg1 directly;
- with every balancer's pgpool stopped, the router routes to pg1 and clients reach the
  primary directly (inet_client_addr() is the client's own address: no pgpool between);
- with one balancer back, traffic returns to it, and pg1's route is a backup again.

OSPF profile only: the BGP profile's router runs no ospfd for pg1 to speak to (the BGP
part of the example is proven by tests/netns/test_fallback_routing.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lab import fallback, frr
from lab.hosts import ANYCAST, CLIENT_IP, PRIMARY
from lab.measure import RouteWatch, connect_many
from lab.topology import Lab, run_parallel
from tests.lab.conftest import Report
from tests.lab.test_guard_lab import ms, wait_until

FALLBACK_METRIC, BALANCER_METRIC = 100000, 20  # frr-fallback.conf's, FRR's default
ANNOUNCED_BOUND = 30.0  # pg1's adjacency (dead interval 3 s) and its first LSA
# From `systemctl stop pgpool2` on every balancer until the router routes to pg1: the
# drains' withdrawals and one route calculation. Generous; the measured time is reported.
FALLBACK_BOUND = 15.0
RETURN_BOUND = 30.0


@pytest.fixture
def last_resort(ospf_lab: Lab) -> Iterator[Lab]:
    """The OSPF lab with pg1's fallback running; afterwards every pgpool started again,
    the fallback stopped and the router back on the three balancers."""
    try:
        fallback.start()
        wait_until("pg1's guard announcing", fallback.has_address, ANNOUNCED_BOUND, 0.1)
        wait_until(
            "pg1's fallback route in the router's OSPF database",
            lambda: frr.external_lsas(ANYCAST).get(PRIMARY.base_ip) == FALLBACK_METRIC,
            ANNOUNCED_BOUND,
            0.2,
        )
        yield ospf_lab
    finally:
        bals = list(ospf_lab.balancers.values())
        run_parallel([b.start_pgpool for b in bals if b.unit_state() != "active"])
        fallback.stop()
        ospf_lab.converge()


def test_the_primary_answers_only_when_every_balancer_is_gone(
    last_resort: Lab, report: Report
) -> None:
    lab = last_resort
    bals = list(lab.balancers.values())
    assert fallback.has_address(), fallback.guard_log()
    routes = frr.external_lsas(ANYCAST)
    report("router_external_routes", routes)
    assert routes == {PRIMARY.base_ip: FALLBACK_METRIC} | {
        b.host.ospf_ip: BALANCER_METRIC for b in bals
    }
    assert set(frr.next_hops()) == lab.all_next_hops()  # pg1's route: a backup only
    before = connect_many(30)
    assert not before.failures and set(before.by_balancer()) <= set(lab.balancers)

    with RouteWatch(duration=90) as watch:
        stopped_at = time.monotonic()
        run_parallel([b.stop_pgpool for b in bals])
        direct_at, _ = watch.wait_for(
            lambda hops: hops == [PRIMARY.base_ip], FALLBACK_BOUND, after=stopped_at
        )
        direct = connect_many(20)
        back = bals[0]
        started_at = time.monotonic()
        back.start_pgpool()
        back_at, _ = watch.wait_for(
            lambda hops: hops == [back.host.ospf_ip], RETURN_BOUND, after=started_at
        )
        returned = connect_many(20)
    report("fallback_after_stop_ms", ms(direct_at - stopped_at))
    report("fallback_return_ms", ms(back_at - started_at))
    report("fallback_direct_answers", dict(direct.by_balancer()))
    assert not direct.failures, direct.errors()
    assert set(direct.by_balancer()) == {CLIENT_IP}  # no pgpool between client and pg1
    assert set(direct.by_backend()) == {PRIMARY.name}
    assert not returned.failures, returned.errors()
    assert set(returned.by_balancer()) == {back.name}
    assert set(frr.next_hops()) == {back.host.ospf_ip}
    assert frr.external_lsas(ANYCAST).get(PRIMARY.base_ip) == FALLBACK_METRIC  # still the backup
    assert fallback.has_address()
