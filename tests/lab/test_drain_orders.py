"""End-to-end: a planned restart with the hook's drain against manage.sh's stop-first order.

One round of each on bal1 under the same connection-per-query load (bench/drain_orders
runs more rounds and a third order). manage.sh's order stops pgpool while the router
still sends clients to it; the drain withdraws the route first and, with
serving_route = true, keeps the node accepting the address until pgpool stops. The
numbers are printed and recorded as test properties.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest

from lab import balancers
from lab.balancers import Balancer, DrainFacts, StopOrder
from lab.measure import PlannedStop, planned_stop_under_load
from lab.topology import Lab
from tests.lab.conftest import Report

RATE, SECONDS = 100.0, 8.0  # the drain's restart is back within about 5 s of 8
DRAIN_SECONDS, DRAIN_TIMEOUT = 1.0, 2.0


@pytest.fixture
def victim(standalone_lab: Lab) -> Iterator[Balancer]:
    """bal1 (standalone wiring), put back to the lab's own stop order whatever the test did."""
    bal = standalone_lab.balancers["bal1"]
    try:
        yield bal
    finally:
        balancers.clear_stop_order(bal)


def restart_under_load(bal: Balancer, order: StopOrder) -> PlannedStop:
    balancers.set_stop_order(bal, order, DRAIN_SECONDS, DRAIN_TIMEOUT)
    facts = partial(balancers.drain_facts, bal) if order is StopOrder.DRAIN else None
    return planned_stop_under_load(
        partial(balancers.stop_and_start, bal, order),
        bal.host.ospf_ip,
        RATE,
        SECONDS,
        while_withdrawn=facts,
    )


def test_drain_fails_no_more_connections_than_stopping_first(
    standalone_lab: Lab, victim: Balancer, report: Report
) -> None:
    lab = standalone_lab
    stop_first = restart_under_load(victim, StopOrder.STOP_THEN_WITHDRAW)
    assert lab.is_nominal()
    drain = restart_under_load(victim, StopOrder.DRAIN)

    for name, run in (("stop_first", stop_first), ("drain", drain)):
        report(f"{name}_failed_connections", len(run.result.failures))
        report(f"{name}_failed_in_flight_at_return", len(run.failed_in_flight(run.back_at)))
        report(f"{name}_attempts", len(run.result.attempts))
        report(f"{name}_errors", dict(run.result.errors()))
        report(f"{name}_next_hop_missing_ms", round(1000 * (run.back_at - run.withdrawn_at)))
        # The load covered the whole event: before the stop and after the return.
        assert any(a.start < run.started_at for a in run.result.attempts), name
        assert any(a.start > run.back_at for a in run.result.attempts), name

    facts = drain.seen
    assert isinstance(facts, DrainFacts)
    report("drain_router_hops_while_withdrawn", facts.router_hops)
    report("drain_zebra_protocols_while_withdrawn", facts.zebra_protocols)
    # The router withdrew bal1's next hop while bal1 still held its serving route, and
    # neither zebra nor the router took that route for an announcement.
    assert not facts.router_has_victim and len(facts.router_hops) == 2, facts
    assert facts.has_serving_route, facts
    assert not facts.address_on_lo, facts
    assert "connected" not in facts.zebra_protocols, facts
    assert facts.unit_state == "deactivating", facts  # still in ExecStop= (drain)
    # When bal1 comes back, the router's ECMP rehash resets some connections then in
    # flight, whatever the stop order was; compare what the stop itself cost.
    assert around_the_stop(drain) <= around_the_stop(stop_first)


def around_the_stop(run: PlannedStop) -> int:
    """Failed connections, except those in flight when the next hop came back."""
    return len(run.result.failures) - len(run.failed_in_flight(run.back_at))
