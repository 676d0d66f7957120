"""End-to-end: the guard (guarded wiring) when pgpool or the guard itself fail.

The guard's promises are about time: withdraw at once when pgpool dies, within
about check_fall probes when it hangs, within `lease` when the guard itself hangs;
announce again only after `hold_down` of continuous health; keep the address while
a killed guard is restarted; drain a planned restart in a few seconds. Each test
breaks bal1 one way, follows the router's next hops (RouteWatch, every 5 ms) and
checks those times with generous bounds (2 shared, noisy cores). Measured values are
printed and recorded as test properties. Every test puts bal1 back: its own conf.d
file removed, the guard reloaded or restarted, pgpool continued and running.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from lab import balancers
from lab.balancers import GUARD_UNIT, Balancer
from lab.measure import RouteWatch, planned_stop_under_load
from lab.topology import Lab
from pgpool_anycast_hook.config import Config
from tests.lab.conftest import Report

DEFAULTS = Config()  # the lab's guard runs with the defaults (lab-guarded.toml: drain only)
INTERVAL, LEASE, HOLD_DOWN = DEFAULTS.interval, DEFAULTS.lease, DEFAULTS.hold_down
CHECK_TIMEOUT, RISE, FALL = DEFAULTS.check_timeout, DEFAULTS.check_rise, DEFAULTS.check_fall
MARGIN = 2.0  # seconds of slack on every bound that a busy machine can stretch
# The numbers: a lease of 3 s renewed every 1.5 s.
SHORT_LEASE, SLOW_INTERVAL = 3.0, 1.5
RESTART_SEC = 0.5  # pgpool-anycast-hook-guard.service
WATCHDOG_SEC = 5.0
ABORT_SEC = 15.0  # TimeoutStopSec=, which TimeoutAbortSec= defaults to

Hops = list[str]
Changes = list[tuple[float, Hops]]


@pytest.fixture
def victim(lab: Lab) -> Iterator[Balancer]:
    """bal1, put back whatever the test did to it, pgpool or guard."""
    bal = lab.balancers["bal1"]
    try:
        yield bal
    finally:
        put_back(lab, bal)


def put_back(lab: Lab, bal: Balancer) -> None:
    """Continue what a test stopped, drop its settings, and wait for the lab to be nominal."""
    with contextlib.suppress(RuntimeError):
        bal.signal_all_pgpool(signal.SIGCONT)
    with contextlib.suppress(RuntimeError):
        bal.signal_guard(signal.SIGCONT)
    if bal.unit_state(GUARD_UNIT) != "active":
        bal.run(["systemctl", "reset-failed", GUARD_UNIT], check=False)
        bal.run(["systemctl", "start", GUARD_UNIT], timeout=60)
    balancers.clear_guard_settings(bal, LEASE)
    balancers.remove_serving_route(bal)  # the guard keeps one it added (serving_route)
    if bal.unit_state() != "active":
        bal.start_pgpool()
    if not lab.is_nominal():
        lab.restore()


# -- helpers -----------------------------------------------------------------------


def wait_until(what: str, ready: Callable[[], bool], timeout: float, every: float = 0.1) -> float:
    """Poll `ready` until it holds (bounded in time); returns time.monotonic() then."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)
    return time.monotonic()


def pgpool_settled(bal: Balancer) -> bool:
    """pgpool2.service is down and done (ExecStopPost `del` ran)."""
    return bal.unit_state() in ("failed", "inactive")


def new_guard_pid(bal: Balancer, old: int) -> int:
    """The guard's MainPID once systemd runs a guard other than `old` (0 until then)."""
    if bal.unit_state(GUARD_UNIT) != "active":
        return 0
    pid = bal.guard_main_pid()
    return pid if pid not in (0, old) else 0


def adopted(bal: Balancer, old: int) -> bool:
    """guard.json is a guard's other than `old`, and it says ANNOUNCED."""
    status = balancers.guard_status(bal)
    return status.get("pid") not in (None, old) and status.get("phase") == "ANNOUNCED"


def between(changes: Changes, start: float, end: float) -> Changes:
    """The changes in [start, end], with the state in force at `start` first."""
    before = [c for c in changes if c[0] <= start][-1:]
    return before + [c for c in changes if start < c[0] <= end]


def outages(changes: Changes, hop: str) -> list[tuple[float, float]]:
    """(withdrawn at, back at) for every time `hop` left the route and came back."""
    found: list[tuple[float, float]] = []
    gone: float | None = None
    for stamp, hops in changes:
        if hop not in hops and gone is None:
            gone = stamp
        elif hop in hops and gone is not None:
            found.append((gone, stamp))
            gone = None
    return found


def guard_lines(bal: Balancer, cursor: str, text: str) -> list[str]:
    """The guard's own log lines after `cursor` that contain `text` (each once)."""
    return [
        line
        for line in bal.unit_log(cursor)
        if "]: pgpool-anycast-hook: action=guard" in line and text in line
    ]


def ms(seconds: float) -> int:
    return round(1000 * seconds)


# -- 1. pgpool crashes -------------------------------------------------------------


def test_kill_9_of_pgpool_withdraws_at_once_and_returns_after_hold_down(
    lab: Lab, victim: Balancer, report: Report
) -> None:
    hop = victim.host.ospf_ip
    others = lab.all_next_hops() - {hop}
    with RouteWatch(duration=120) as watch:
        killed_at = victim.kill_pgpool()
        dropped_at, hops = watch.wait_for(lambda h: hop not in h, 10, after=killed_at)
        wait_until("pgpool2 stopped", partial(pgpool_settled, victim), 30)
        started_at = time.monotonic()
        victim.start_pgpool()
        back_at, _ = watch.wait_for(lambda h: hop in h, HOLD_DOWN + 30, after=dropped_at)
        changes = between(watch.changes, killed_at, back_at)
    report("kill9_to_withdrawn_ms", ms(dropped_at - killed_at))
    report("kill9_start_to_announced_ms", ms(back_at - started_at))
    report("kill9_to_announced_ms", ms(back_at - killed_at))
    assert dropped_at - killed_at < 1.0
    assert set(hops) == others
    assert all(others <= set(h) for _, h in changes), changes  # the other two stayed
    # Health can only begin once pgpool starts again; hold_down of it comes first.
    assert back_at - killed_at >= HOLD_DOWN
    assert back_at - started_at >= HOLD_DOWN
    assert back_at - started_at <= HOLD_DOWN + RISE * INTERVAL + 2 * MARGIN
    assert victim.has_anycast()


# -- 2. pgpool hangs -----------------------------------------------------------------


def test_sigstop_of_pgpool_main_process_alone_keeps_it_announced(
    lab: Lab, victim: Balancer, report: Report
) -> None:
    """pgpool's children accept and answer on their own: the node still serves, and the
    guard's probe (answered by a child) rightly keeps it announced."""
    hop = victim.host.ospf_ip
    window = FALL * INTERVAL + CHECK_TIMEOUT + 2 * MARGIN  # longer than a hang takes
    with RouteWatch(duration=60) as watch:
        stopped_at = victim.signal_pgpool(signal.SIGSTOP)
        time.sleep(1.0)
        answered = victim.answers()
        time.sleep(max(0.0, stopped_at + window - time.monotonic()))
        changes = between(watch.changes, stopped_at, time.monotonic())
        victim.signal_pgpool(signal.SIGCONT)
    report("sigstop_main_only_answers", answered)
    report("sigstop_main_only_route_changes", len(changes) - 1)
    assert answered
    assert all(hop in h for _, h in changes), changes


def test_sigstop_of_all_pgpool_processes_withdraws_then_hold_down_after_sigcont(
    lab: Lab, victim: Balancer, report: Report
) -> None:
    hop = victim.host.ospf_ip
    stopped = len(victim.pgpool_host_pids())
    cursor = victim.journal_cursor()
    with RouteWatch(duration=120) as watch:
        stopped_at = victim.signal_all_pgpool(signal.SIGSTOP)
        dropped_at, _ = watch.wait_for(lambda h: hop not in h, 30, after=stopped_at)
        time.sleep(1.0)
        continued_at = victim.signal_all_pgpool(signal.SIGCONT)
        back_at, _ = watch.wait_for(lambda h: hop in h, HOLD_DOWN + 30, after=continued_at)
        changes = between(watch.changes, stopped_at, back_at)
    report("sigstop_processes_stopped", stopped)
    report("sigstop_to_withdrawn_ms", ms(dropped_at - stopped_at))
    report("sigcont_to_announced_ms", ms(back_at - continued_at))
    assert stopped > 1  # the main process and its children
    assert len(outages(changes, hop)) == 1, changes
    # The guard starts a probe every interval, beside those still waiting: the first one
    # that pgpool leaves unanswered fails after check_timeout, the next ones an interval
    # apart, so check_fall failures take check_timeout + (check_fall - 1) intervals after
    # the first probe the hang caught, which started within an interval of the stop.
    # Not before one whole check_timeout either: one slow answer withdraws nothing.
    assert dropped_at - stopped_at >= CHECK_TIMEOUT
    assert dropped_at - stopped_at <= FALL * INTERVAL + CHECK_TIMEOUT + MARGIN
    assert back_at - continued_at >= HOLD_DOWN
    assert back_at - continued_at <= CHECK_TIMEOUT + RISE * INTERVAL + HOLD_DOWN + MARGIN
    assert guard_lines(victim, cursor, 'health="FALLING->DOWN"')
    assert victim.unit_state() == "active"  # nothing but the guard noticed the hang


# -- 3. the guard is killed ------------------------------------------------------------


def test_sigkill_of_the_guard_keeps_the_address_and_the_new_guard_adopts_it(
    lab: Lab, victim: Balancer, report: Report
) -> None:
    hop = victim.host.ospf_ip
    old_pid = victim.guard_main_pid()
    cursor = victim.journal_cursor()
    with RouteWatch(duration=60) as watch:
        killed_at = victim.signal_guard(signal.SIGKILL)
        wait_until("a new guard", partial(new_guard_pid, victim, old_pid), 20, 0.05)
        restarted_at = time.monotonic()
        new_pid = victim.guard_main_pid()
        adopted_at = wait_until("the new guard announced", partial(adopted, victim, old_pid), 20)
        # Past the old guard's lease: only the new guard's renewals keep the address now.
        time.sleep(max(0.0, killed_at + LEASE + MARGIN - time.monotonic()))
        changes = between(watch.changes, killed_at, time.monotonic())
    report("guard_sigkill_to_new_guard_ms", ms(restarted_at - killed_at))
    report("guard_sigkill_to_adopted_ms", ms(adopted_at - killed_at))
    report("guard_sigkill_route_changes", len(changes) - 1)
    assert new_pid not in (0, old_pid)
    assert restarted_at - killed_at <= RESTART_SEC + 2 * MARGIN
    assert all(hop in h for _, h in changes), changes  # never dropped
    assert len(changes) == 1, changes
    assert victim.has_anycast()
    assert guard_lines(victim, cursor, 'transition="ADOPTING->ANNOUNCED"')


# -- 4. the guard hangs: the lease --------------------------------------------------


@pytest.fixture
def short_lease(victim: Balancer) -> Balancer:
    """bal1's guard with a lease of 3 s renewed every 1.5 s (victim restores the rest)."""
    balancers.set_guard_settings(
        victim, f"lease = {SHORT_LEASE:g}\ninterval = {SLOW_INTERVAL:g}\n", SHORT_LEASE
    )
    return victim


def test_short_lease_stays_announced_while_the_guard_renews_it(
    lab: Lab, short_lease: Balancer, report: Report
) -> None:
    hop = short_lease.host.ospf_ip
    with RouteWatch(duration=60) as watch:
        watched_from = time.monotonic()
        time.sleep(2 * SHORT_LEASE)
        changes = between(watch.changes, watched_from, time.monotonic())
    report("short_lease_route_changes_in_6s", len(changes) - 1)
    assert all(hop in h for _, h in changes), changes
    assert len(changes) == 1, changes
    assert short_lease.has_anycast()


def test_sigstop_of_the_guard_expires_the_lease_then_the_watchdog_restarts_it(
    lab: Lab, short_lease: Balancer, report: Report
) -> None:
    victim = short_lease
    hop = victim.host.ospf_ip
    old_pid = victim.guard_main_pid()
    with RouteWatch(duration=120) as watch:
        stopped_at = victim.signal_guard(signal.SIGSTOP)
        renewed_at = balancers.guard_status(victim).get("renewed_at")  # its last renewal
        dropped_at, _ = watch.wait_for(lambda h: hop not in h, SHORT_LEASE + 10, after=stopped_at)
        dropped_wall = time.time() - (time.monotonic() - dropped_at)
        wait_until(
            "the watchdog's new guard",
            partial(new_guard_pid, victim, old_pid),
            WATCHDOG_SEC + ABORT_SEC + 2 * MARGIN,
            0.05,
        )
        restarted_at = time.monotonic()
        new_pid = victim.guard_main_pid()
        back_at, _ = watch.wait_for(lambda h: hop in h, HOLD_DOWN + 30, after=dropped_at)
    assert isinstance(renewed_at, float)
    report("guard_sigstop_to_withdrawn_ms", ms(dropped_at - stopped_at))
    report("guard_last_renewal_to_withdrawn_ms", ms(dropped_wall - renewed_at))
    report("guard_sigstop_to_new_guard_ms", ms(restarted_at - stopped_at))
    report("guard_new_guard_to_announced_ms", ms(back_at - restarted_at))
    # The last renewal came at most one interval before the stop; the kernel removes the
    # address a lease after it (it checks lifetimes on whole seconds).
    assert dropped_at - stopped_at >= SHORT_LEASE - SLOW_INTERVAL - 0.2
    assert dropped_at - stopped_at <= SHORT_LEASE + MARGIN
    assert SHORT_LEASE - 0.1 <= dropped_wall - renewed_at <= SHORT_LEASE + MARGIN
    assert new_pid not in (0, old_pid)
    assert restarted_at - stopped_at <= WATCHDOG_SEC + ABORT_SEC + 2 * MARGIN
    # The lease ran out under a hung guard: a failure, so the new guard owes a hold-down.
    assert back_at - restarted_at >= HOLD_DOWN
    assert back_at - restarted_at <= HOLD_DOWN + RISE * SLOW_INTERVAL + 2 * MARGIN


# -- 5. pgpool in a restart loop: flap damping ---------------------------------------

KILLS = 5
# Each kill comes once the guard holds down, well inside hold_down: at ~1.5 s cycles.
HOLDING_WITHIN = HOLD_DOWN - 1.0


def holding_down(bal: Balancer, pgpool_pid: int) -> bool:
    """guard.json (written every tick) says HOLDING_DOWN for this pgpool, not a killed one."""
    status = balancers.guard_status(bal)
    return status.get("phase") == "HOLDING_DOWN" and status.get("pgpool_pid") == pgpool_pid


def test_pgpool_restart_loop_never_flaps_faster_than_hold_down(
    lab: Lab, victim: Balancer, report: Report
) -> None:
    hop = victim.host.ospf_ip
    others = lab.all_next_hops() - {hop}
    cursor = victim.journal_cursor()
    with RouteWatch(duration=180) as watch:
        first_kill = last_kill = victim.kill_pgpool()
        cycles: list[float] = []
        for _ in range(KILLS - 1):
            wait_until("pgpool2 stopped", partial(pgpool_settled, victim), 30)
            last_start = time.monotonic()
            victim.start_pgpool()
            pgpool = partial(holding_down, victim, victim.pgpool_main_pid())
            wait_until("a hold-down", pgpool, HOLDING_WITHIN, 0.05)
            kill = victim.kill_pgpool()
            cycles.append(kill - last_kill)
            last_kill = kill
        wait_until("pgpool2 stopped", partial(pgpool_settled, victim), 30)
        last_start = time.monotonic()
        victim.start_pgpool()
        back_at, _ = watch.wait_for(lambda h: hop in h, HOLD_DOWN + 30, after=last_start)
        time.sleep(0.5)
        changes = between(watch.changes, first_kill, time.monotonic())
    gaps = [back - gone for gone, back in outages(changes, hop)]
    announced = guard_lines(victim, cursor, "->ANNOUNCED")
    held = guard_lines(victim, cursor, "->HOLDING_DOWN")  # healthy again, not yet announced
    report("restart_loop_kills", KILLS)
    report("restart_loop_seconds", round(last_start - first_kill, 1))
    report("restart_loop_kill_every_ms", [ms(c) for c in cycles])
    report("restart_loop_outages_ms", [ms(g) for g in gaps])
    report("restart_loop_announcements", len(announced))
    report("restart_loop_hold_downs_started", len(held))
    report("restart_loop_last_start_to_announced_ms", ms(back_at - last_start))
    assert all(others <= set(h) for _, h in changes), changes
    assert gaps and all(gap >= HOLD_DOWN for gap in gaps), gaps
    assert len(gaps) == 1, changes  # out once, for the whole loop, and back once
    assert len(announced) == 1, announced
    # The loop did tempt the guard: after every start pgpool was healthy again.
    assert len(held) == KILLS, held
    assert back_at - last_start >= HOLD_DOWN


# -- 6. a planned restart: drain -------------------------------------------------------

RATE, SECONDS = 100.0, 10.0
# A generous bound on the drain, the stop, the start and the guard's first answer, which
# a busy machine stretches several times over: drain_timeout (5 s), pgpool 4.3's stop,
# which can hang until the lab's TimeoutStopSec (20 s, lab/README.md; seen: 26 s out of
# the route), the start. That no hold-down was owed is checked from the guard's journal,
# not from this time.
MAX_OUT_OF_ROUTE = 35.0
STRAY_RESETS = 15  # resets at no visible change of the router's group (see the test)
RESETS = {"Connection reset by peer", "Broken pipe"}  # a moved flow, as the client sees it


@pytest.fixture
def serving(victim: Balancer) -> Balancer:
    """bal1's guard with serving_route = true (victim removes it and the route)."""
    balancers.set_guard_settings(victim, "serving_route = true\n", LEASE)
    return victim


def test_planned_restart_drains_under_load_and_is_back_without_hold_down(
    lab: Lab, serving: Balancer, report: Report
) -> None:
    victim = serving
    cursor = victim.journal_cursor()
    run = planned_stop_under_load(
        victim.restart_pgpool,
        victim.host.ospf_ip,
        RATE,
        SECONDS,
        while_withdrawn=partial(balancers.drain_facts, victim),
    )
    out_of_route = run.back_at - run.withdrawn_at
    facts = run.seen
    assert isinstance(facts, balancers.DrainFacts)
    report("drain_failed_connections", len(run.result.failures))
    report("drain_errors", dict(run.result.errors()))
    report("drain_attempts", len(run.result.attempts))
    report("drain_out_of_route_ms", ms(out_of_route))
    report("drain_restart_command_ms", ms(run.finished_at - run.started_at))
    report("drain_serving_route_while_withdrawn", facts.has_serving_route)
    assert any(a.start < run.started_at for a in run.result.attempts)
    assert any(a.start > run.back_at for a in run.result.attempts)
    # The drain itself fails no connection. What fails are connections in flight at a
    # change of the router's nexthop group: its hash-threshold ECMP moves some flows of
    # the other balancers too, and the balancer a flow lands on resets it (lab/README.md,
    # resilient hashing). Such a change is one of its two changes of next hops, or a new
    # group zebra installs for the same hops in another order. Nothing is refused and
    # nothing times out.
    at_changes = {id(a) for a in run.failed_at_regroupings()}
    report("drain_failed_in_flight_at_a_change", len(at_changes))
    report("drain_router_group_changes", len(run.regroupings))
    stray = [a for a in run.result.failures if id(a) not in at_changes]
    # A few resets come at no change the router's table shows (1 run in 3 on a busy
    # 2-core machine, up to 14, in bursts ending within 50 ms of each other; cause not
    # found yet). Bounded and reported, with their times, for the next look.
    report(
        "drain_stray_resets",
        [(round(a.start - run.started_at, 3), round(a.end - run.started_at, 3)) for a in stray],
    )
    report(
        "drain_events",
        {"withdrawn": round(run.withdrawn_at - run.started_at, 3),
         "back": round(run.back_at - run.started_at, 3),
         "regroupings": [(round(x - run.started_at, 3), round(y - run.started_at, 3))
                         for x, y in run.regroupings]},
    )  # fmt: skip
    assert len(stray) <= STRAY_RESETS, stray
    assert {a.balancer for a in run.result.failures} <= RESETS, run.result.errors()
    assert out_of_route <= MAX_OUT_OF_ROUTE
    assert not facts.router_has_victim and len(facts.router_hops) == 2, facts
    assert facts.has_serving_route, facts  # bal1 still accepts flows the router moves late
    assert not facts.address_on_lo, facts
    assert facts.unit_state == "deactivating", facts  # still in ExecStop= (drain)
    assert not guard_lines(victim, cursor, "HOLDING_DOWN")  # a planned stop owes none
