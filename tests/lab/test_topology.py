"""End-to-end: the article's topology with real FRR, pgpool2, PostgreSQL and systemd.

Each test starts from the nominal lab (conftest.lab): three balancers announce
198.18.2.0/32, the router has three next hops. Timing bounds are generous (2 shared
cores); the measured values are printed and recorded as test properties.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from lab import frr, netns, postgres
from lab.hosts import ANYCAST, BACKENDS, CLIENT, PGPOOL_PORT, PRIMARY
from lab.measure import Load, RouteWatch, connect_many
from lab.topology import Lab
from tests.lab.conftest import Report


def test_connections_spread_over_all_three_balancers(lab: Lab, report: Report) -> None:
    result = connect_many(45)
    assert not result.failures, result.errors()
    assert len(result.attempts) == 45
    per_balancer = result.by_balancer()
    report("connections_per_balancer", dict(per_balancer))
    report("connections_per_backend", dict(result.by_backend()))
    assert set(per_balancer) == set(lab.balancers), per_balancer


def test_kill_9_of_pgpool_withdraws_that_balancer_only(lab: Lab, report: Report) -> None:
    victim = lab.balancers["bal1"]
    survivors = set(lab.balancers) - {victim.name}
    with RouteWatch(duration=60) as watch:
        load = Load(rate=50, duration=5)
        time.sleep(1.5)
        killed_at = victim.kill_pgpool()
        dropped_at, hops = watch.wait_for(
            lambda h: victim.host.ospf_ip not in h, 10, after=killed_at
        )
        result = load.result()
    report("kill9_to_withdraw_ms", round(1000 * (dropped_at - killed_at)))
    report("kill9_failed_connections", len(result.failures))
    assert sorted(hops) == sorted(
        b.host.ospf_ip for b in lab.balancers.values() if b.name in survivors
    )
    assert victim.unit_state() in ("failed", "inactive")
    assert not victim.has_anycast()
    # A connection already on its way to bal1 when the route changed may fail; every
    # one started after that must succeed, through the two others.
    after = [a for a in result.attempts if a.start > dropped_at + 0.05]
    assert len(after) >= 50, "the load did not run past the withdrawal"
    assert all(a.ok for a in after), [a.balancer for a in after if not a.ok]
    assert {a.balancer for a in after} == survivors


def test_primary_failure_withdraws_everywhere_and_attach_announces_again(
    lab: Lab, report: Report
) -> None:
    with RouteWatch(duration=120) as watch:
        stopped_at = time.monotonic()
        postgres.stop(PRIMARY)
        gone_at, _ = watch.wait_for(lambda h: not h, 30, after=stopped_at)
        report("primary_stop_to_all_withdrawn_ms", round(1000 * (gone_at - stopped_at)))
        for bal in lab.balancers.values():
            assert not bal.has_anycast(), bal.name
            assert bal.unit_state() == "active", bal.name  # pgpool still runs, read-only
        assert "withdraw" in " ".join(lab.balancers["bal1"].hook_lines())

        postgres.start(PRIMARY)
        postgres.wait_streaming(len(BACKENDS) - 1, 60)
        attached_at = time.monotonic()
        for bal in lab.balancers.values():
            attach_with_retry(bal.attach_node, 0)
        back_at, _ = watch.wait_for(lambda h: set(h) == lab.all_next_hops(), 60, after=attached_at)
    report("attach_to_all_announced_ms", round(1000 * (back_at - attached_at)))
    for bal in lab.balancers.values():
        assert bal.has_anycast(), bal.name
    assert not connect_many(15).failures


def attach_with_retry(attach: Callable[[int], str], node_id: int) -> None:
    """pcp refuses while pgpool is still busy with the failover; retry, bounded."""
    deadline = time.monotonic() + 60
    while True:
        try:
            attach(node_id)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_planned_restart_under_connection_per_transaction_load(lab: Lab, report: Report) -> None:
    victim = lab.balancers["bal2"]
    # pgbench ends a client at its first failed connection, so with enough clients
    # each aborted client is one failed connection. One thread per client: pgbench
    # connects synchronously, and a thread whose connect waits in a busy pgpool's
    # accept queue would stall its other clients, which hold pgpool children meanwhile.
    rate, seconds, clients = 40, 10, 24
    with RouteWatch(duration=60) as watch:
        pgbench = netns.run_background(
            CLIENT.netns,
            [
                "env",
                "PGCONNECT_TIMEOUT=5",  # a connection that hangs counts as failed, bounded
                str(postgres.PG_BIN / "pgbench"),
                "-h", ANYCAST, "-p", str(PGPOOL_PORT), "-U", "postgres",
                "-n", "-C", "-S", "-R", str(rate), "-T", str(seconds),
                "-c", str(clients), "-j", str(clients),
                "postgres",
            ],
        )  # fmt: skip
        time.sleep(3)
        restart_at = time.monotonic()
        victim.restart_pgpool()
        withdrawn_at, _ = watch.wait_for(
            lambda h: victim.host.ospf_ip not in h, 30, after=restart_at
        )
        back_at, _ = watch.wait_for(lambda h: victim.host.ospf_ip in h, 60, after=withdrawn_at)
        out, _ = pgbench.communicate(timeout=seconds + 60)
    processed = int(re.search(r"actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    aborted = len(re.findall(r"aborted while establishing connection", out))
    failed_tx = re.search(r"number of failed transactions: (\d+)", out)
    report("planned_restart_pgbench_processed", processed)
    report("planned_restart_failed_connections", aborted)
    report("planned_restart_failed_transactions", int(failed_tx.group(1)) if failed_tx else 0)
    report("planned_restart_withdrawn_for_ms", round(1000 * (back_at - withdrawn_at)))
    # The run measured something: most scheduled transactions happened, and the restart
    # fell inside it (the router lost and regained bal2 while pgbench ran).
    assert processed >= rate * seconds // 2, out
    assert withdrawn_at < restart_at + seconds
    assert aborted < clients, f"every pgbench client aborted:\n{out}"


def test_restart_with_stale_status_file_recovers_by_itself(lab: Lab, report: Report) -> None:
    victim = lab.balancers["bal3"]
    victim.stop_pgpool()
    frr.wait_next_hops(lab.all_next_hops() - {victim.host.ospf_ip}, 30)
    # What pgpool leaves behind after it saw the primary fail: node 0 down.
    victim.write_status_file("down\nup\nup\n")
    cursor = victim.journal_cursor()
    started_at = time.monotonic()
    victim.start_pgpool()
    waited = frr.wait_next_hops(lab.all_next_hops(), 60)
    report("stale_status_start_to_announced_ms", round(1000 * (time.monotonic() - started_at)))
    assert waited >= 0
    assert victim.has_anycast()
    assert victim.node_states()[0] in ("up", "waiting")
    assert "primary" in victim.node_info(0)
    log = "\n".join(victim.hook_lines(cursor))
    assert "action=clean" in log and "action=add" in log, log
