"""End-to-end: a promotion, done the way an operator does it, with the hook's wiring.

pg1 (node 0) stops; once every pgpool has failed it over, pg2 (node 1) is promoted
while pgpool still searches for a primary; later pg1 comes back as a standby of pg2
and is attached. What pgpool does with its standbys depends on its follow command
(follow_primary_command; follow_master_command on pgpool 4.1, which bal3 runs, so each
test holds on 4.1.4 and on 4.3.5): when it is set and pgpool finds a new primary, pgpool
marks every other backend down and leaves re-attaching them to the command. So the
recommended wiring sets none
(failover_command withdraws when the primary fails); a user who needs a follow script
runs one that re-attaches the standbys and calls the hook last
(docs/examples/follow-primary.sh).

test_auto_*, test_any_backend_* and test_follow_script_*[auto] need the guard's
`primary_node_id = "auto"` and `announce_when` (the guard asks pgpool, SHOW POOL_NODES,
which node is the primary); a version without them refuses the test's conf.d file at
`check-config`, before the lab is touched. The others hold with the fixed
`primary_node_id = 0`. Every test leaves the lab to restore(), which rebuilds the
starting roles after a promotion.

These tests run in the OSPF routing profile only (`ospf_lab`), not in both: what they
check is pgpool's and the guard's reaction to a promotion, which the routing daemon only
carries to the router as a withdrawal and an announcement of all three balancers at once;
the BGP profile's runs of test_topology and test_guard_lab check those, and a second
round here (about 140 s) would break the CI's time budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from lab import netns, postgres, state
from lab.balancers import (
    FOLLOW_SCRIPT,
    HOOK,
    PGPOOL_41,
    Balancer,
    Follow,
    guard_status,
    pgpool_conf,
)
from lab.hosts import ANYCAST, BACKENDS, CLIENT, PGPOOL_PORT, balancer_by_ip
from lab.measure import RouteWatch, connect_many
from lab.topology import Lab
from pgpool_anycast_hook.config import Config
from tests.lab.conftest import Report
from tests.lab.test_guard_lab import wait_until

PG1, PG2, PG3 = BACKENDS  # nodes 0, 1, 2
DEFAULTS = Config()  # the lab's guard runs with the defaults
INTERVAL, HOLD_DOWN, RISE = DEFAULTS.interval, DEFAULTS.hold_down, DEFAULTS.check_rise
CHECK_TIMEOUT, FALL = DEFAULTS.check_timeout, DEFAULTS.check_fall
MARGIN = 3.0  # seconds of slack on every bound that a busy machine can stretch
# search_primary_node_timeout during these tests (the lab's is 3 s): pgpool still
# searches for a primary when the operator promotes, however slowly the machine runs.
SEARCH = 10
STREAM_WAIT = 15  # follow-primary.sh: how long a re-pointed standby has to stream
AUTO = {"primary_node_id": "auto"}

Changes = list[tuple[float, list[str]]]


@pytest.fixture
def promotion_lab(ospf_lab: Lab, report: Report) -> Iterator[Lab]:
    """The nominal lab (OSPF profile: see above); afterwards, whatever happened, restore()
    gives back pg1 as primary, pg2 and pg3 as its standbys, the lab's pgpool.conf and
    hook settings."""
    lab = ospf_lab
    postgres.ensure_guard_role()  # a lab built before the role existed
    try:
        yield lab
    finally:
        started = time.monotonic()
        lab.restore()
        report("restore_s", round(time.monotonic() - started, 1))


# -- helpers -----------------------------------------------------------------------


def statuses(bal: Balancer) -> list[str]:
    """pgpool's status of each backend (SHOW POOL_NODES): up, waiting, down."""
    return [status for status, _ in bal.node_roles()]


def pgpool_views(lab: Lab) -> dict[str, list[tuple[str, str]]]:
    return {name: bal.node_roles() for name, bal in lab.balancers.items()}


def everywhere(lab: Lab, holds: Callable[[list[tuple[str, str]]], bool]) -> bool:
    views = pgpool_views(lab).values()
    return all(len(view) == len(BACKENDS) and holds(view) for view in views)


def primary_is(node: int) -> Callable[[list[tuple[str, str]]], bool]:
    return lambda view: view[node] == ("up", "primary")


def node_attached(node: int) -> Callable[[list[tuple[str, str]]], bool]:
    return lambda view: view[node][0] in ("up", "waiting")


def node_down(node: int) -> Callable[[list[tuple[str, str]]], bool]:
    return lambda view: view[node][0] == "down"


def between(changes: Changes, start: float, end: float) -> Changes:
    """The changes in [start, end], with the state in force at `start` first."""
    before = [c for c in changes if c[0] <= start][-1:]
    return before + [c for c in changes if start < c[0] <= end]


@dataclass
class Promotion:
    stopped_at: float  # pg1 stopped (time.monotonic())
    withdrawn_at: float  # the router had no next hop left
    promoted_at: float  # pg_ctl promote of pg2 returned
    found_at: float  # every pgpool showed node 1 as its primary


def fail_primary_and_promote(lab: Lab, watch: RouteWatch) -> Promotion:
    """Stop pg1; once the router has lost every balancer (each pgpool ran its
    failover_command), promote pg2; wait until every pgpool has found it."""
    stopped_at = time.monotonic()
    postgres.stop(PG1)
    withdrawn_at, _ = watch.wait_for(lambda hops: not hops, 30, after=stopped_at)
    postgres.promote(PG2)
    promoted_at = time.monotonic()
    found_at = wait_until(
        "every pgpool shows node 1 as primary", lambda: everywhere(lab, primary_is(1)), SEARCH
    )
    return Promotion(stopped_at, withdrawn_at, promoted_at, found_at)


def attach_everywhere(lab: Lab, node: int) -> None:
    """pcp_attach_node on every pgpool; pcp refuses while a failover still runs, so
    retry, bounded."""
    for bal in lab.balancers.values():
        deadline = time.monotonic() + 30
        while True:
            try:
                bal.attach_node(node)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def rejoin_old_primary(lab: Lab) -> None:
    """The operator's clean-up: pg3 follows pg2, pg1 is rebuilt as pg2's standby, and
    node 0 is attached in every pgpool."""
    postgres.follow(PG3, PG2)
    postgres.rebuild_standby(PG1, PG2)
    postgres.wait_streaming(2, 30, primary=PG2)
    attach_everywhere(lab, 0)
    wait_until("node 0 attached everywhere", lambda: everywhere(lab, node_attached(0)), 30)


def client_psql(sql: str) -> str:
    """One new connection from the client to the anycast address (ECMP picks the
    balancer), one statement; returns its output, raises if it fails."""
    return netns.ns_run(
        CLIENT.netns,
        ["env", "PGCONNECT_TIMEOUT=5", str(postgres.PG_BIN / "psql"), "-X", "-q", "-A", "-t",
         "-h", ANYCAST, "-p", str(PGPOOL_PORT), "-U", "postgres", "-d", "postgres",
         "-v", "ON_ERROR_STOP=1", "-c", sql],
        timeout=30,
    ).stdout.strip()  # fmt: skip


def writes_through_anycast(count: int) -> dict[str, int]:
    """`count` inserts, each on a new connection; which balancer made each (the
    primary sees the balancer as the client)."""
    postgres.psql(PG2, "create table if not exists promotion_writes (balancer inet)")
    seen: dict[str, int] = {}
    for _ in range(count):
        row = client_psql(
            "insert into promotion_writes select inet_client_addr() returning host(balancer)"
        )
        name = balancer_by_ip(row)
        seen[name] = seen.get(name, 0) + 1
    return seen


def assert_reads_everywhere(lab: Lab, report: Report, name: str) -> None:
    reads = connect_many(45)
    report(f"{name}_reads_per_balancer", dict(reads.by_balancer()))
    report(f"{name}_reads_per_backend", dict(reads.by_backend()))
    assert not reads.failures, reads.errors()
    assert set(reads.by_balancer()) == set(lab.balancers), reads.by_balancer()


def follow_lines(bal: Balancer, cursor: str) -> list[str]:
    return [line for line in bal.unit_log(cursor) if "follow-primary.sh" in line]


def follow_settings(lab: Lab, wanted: str) -> dict[str, str]:
    """Which setting each pgpool runs its follow command from; asserts that it holds
    `wanted` there (PGPOOL SHOW), under 4.1's name on the 4.1 balancer."""
    names = {}
    for name, bal in lab.balancers.items():
        setting = bal.follow_setting()
        assert setting == (
            "follow_master_command" if name in PGPOOL_41 else "follow_primary_command"
        ), (name, bal.pgpool_version)
        assert bal.pgpool_setting(setting) == wanted, (name, setting)
        names[name] = f"{setting} (pgpool {bal.pgpool_version})"
    return names


def executed(bal: Balancer, cursor: str, command: str) -> list[str]:
    """pgpool's own log lines `execute command: <command>...` (it runs each command so)."""
    return [line for line in bal.unit_log(cursor) if f"execute command: {command}" in line]


# -- which pgpool each balancer runs ---------------------------------------------------


def test_bal3_runs_pgpool_4_1_and_the_others_4_3(promotion_lab: Lab, report: Report) -> None:
    """The lab is mixed as planned: `pgpool --version` in each container, the lab's
    state, pgpool's own settings (every line of the rendered pgpool.conf is a setting
    this version knows: 4.1 ignores unknown names silently), SHOW POOL_NODES with 4.1's
    12 columns, and the guard reading them with primary_node_id = "auto"."""
    lab = promotion_lab
    recorded = {c.name: c.pgpool for c in state.load().containers}
    versions = {name: bal.installed_pgpool_version() for name, bal in lab.balancers.items()}
    report("pgpool_versions", versions)
    for name, bal in lab.balancers.items():
        assert versions[name].startswith("4.1.4" if name in PGPOOL_41 else "4.3."), versions
        assert recorded[bal.host.netns] == bal.pgpool_version == versions[name], recorded
        settings = {row.split("|")[0] for row in bal.pgpool_setting("all").splitlines()}
        conf = pgpool_conf(lab.wiring, bal.pgpool_version)
        lines = [line for line in conf.splitlines() if "=" in line and line[:1] != "#"]
        names = {line.split("=")[0].strip() for line in lines}
        assert len(names) > 30 and not names - settings, (name, sorted(names - settings))
        columns = list(bal.pool_nodes()[0])
        report(f"{name}_pool_nodes_columns", len(columns))
        if name in PGPOOL_41:
            assert bal.pgpool_setting("master_slave_mode") == "on", name
            assert bal.pgpool_setting("master_slave_sub_mode") == "stream", name
            assert len(columns) == 12 and "pg_status" not in columns, columns
        else:
            assert bal.pgpool_setting("backend_clustering_mode") == "streaming_replication"
            assert len(columns) == 14 and "pg_status" in columns, columns
    lab.set_hook_config(AUTO)

    def views() -> dict[str, object]:
        return {name: guard_status(bal).get("view") for name, bal in lab.balancers.items()}

    def known(view: object) -> bool:
        return isinstance(view, dict) and view.get("state") == "KNOWN"

    wait_until("every guard reads SHOW POOL_NODES", lambda: all(map(known, views().values())), 10)
    summary = {}
    for name, view in views().items():
        assert isinstance(view, dict), (name, view)
        summary[name] = f"{view['state']}, primary {view['primary']}, {view['backends_up']} up"
        assert (view["primary"], view["backends_up"], len(view["nodes"])) == (0, 3, 3), view
    report("guard_views", summary)


# -- the old wiring: follow_primary_command = 'hook del %d %P' ------------------------


def test_old_wiring_leaves_every_standby_detached_after_a_promotion(
    promotion_lab: Lab, report: Report
) -> None:
    """What the previous recommendation did: pgpool marks node 2 (pg3, healthy) down
    when it finds the new primary, runs `del 2 0` for it, and nothing attaches it again."""
    lab = promotion_lab
    lab.set_follow(Follow.HOOK_DEL, SEARCH)
    report("old_wiring_follow_settings", follow_settings(lab, f"{HOOK} del %d %P"))
    cursor = {name: bal.journal_cursor() for name, bal in lab.balancers.items()}
    with RouteWatch(duration=120) as watch:
        promotion = fail_primary_and_promote(lab, watch)
        time.sleep(2 * INTERVAL * FALL)  # health checks run every second: nothing changes
    views = pgpool_views(lab)
    report("old_wiring_pgpool_views", views)
    report(
        "old_wiring_promote_to_found_ms", round(1000 * (promotion.found_at - promotion.promoted_at))
    )
    assert postgres.is_running(PG3) and postgres.in_recovery(PG3)
    for name, view in views.items():
        assert view == [("down", "standby"), ("up", "primary"), ("down", "standby")], (name, view)
        log = "\n".join(lab.balancers[name].unit_log(cursor[name]))
        assert "follow degeneration" in log, name
        # pgpool ran the follow command itself (4.1: from follow_master_command).
        assert executed(lab.balancers[name], cursor[name], f"{HOOK} del 2 0"), name


# -- b. the recommended wiring with a fixed primary_node_id = 0 -----------------------


def test_fixed_primary_id_stays_withdrawn_after_a_promotion_until_node_0_is_back(
    promotion_lab: Lab, report: Report
) -> None:
    """With no follow command pgpool keeps pg3 attached. The fixed id still follows
    node 0, not the primary: the anycast stays withdrawn while pg2 serves, and comes
    back after pg1 is attached again *as a standby* (failback_command `add 0`: node 0 is
    up in pgpool_status, which is all a fixed id asks); pgpool then sends the writes to
    node 1, so clients are served."""
    lab = promotion_lab
    lab.set_hook_config({"primary_node_id": 0})
    lab.set_follow(Follow.NONE, SEARCH)
    with RouteWatch(duration=180) as watch:
        promotion = fail_primary_and_promote(lab, watch)
        views = pgpool_views(lab)
        # Long enough for any announcement the guard could make: rise and hold-down.
        time.sleep(HOLD_DOWN + RISE * INTERVAL + MARGIN)
        after_promotion = between(watch.changes, promotion.withdrawn_at, time.monotonic())
        rejoined_at = time.monotonic()
        rejoin_old_primary(lab)
        attached_at = time.monotonic()
        back_at, _ = watch.wait_for(
            lambda hops: set(hops) == lab.all_next_hops(), HOLD_DOWN + 30, after=attached_at
        )
    final = pgpool_views(lab)
    report(
        "fixed_stop_to_withdrawn_ms", round(1000 * (promotion.withdrawn_at - promotion.stopped_at))
    )
    report("fixed_promote_to_found_ms", round(1000 * (promotion.found_at - promotion.promoted_at)))
    report("fixed_pgpool_views_after_promotion", views)
    report("fixed_rejoin_s", round(attached_at - rejoined_at, 1))
    report("fixed_attach_to_announced_ms", round(1000 * (back_at - attached_at)))
    report("fixed_pgpool_views_after_rejoin", final)
    for name, view in views.items():  # the recommended wiring keeps pg3 attached
        assert view[0][0] == "down" and view[1] == ("up", "primary"), (name, view)
        assert view[2][0] in ("up", "waiting"), (name, view)
    assert all(not hops for _, hops in after_promotion), after_promotion
    assert back_at - attached_at <= HOLD_DOWN + RISE * INTERVAL + 2 * MARGIN
    for name, view in final.items():
        assert view == [("up", "standby"), ("up", "primary"), ("up", "standby")], (name, view)
    writes = writes_through_anycast(9)
    report("fixed_writes_per_balancer", writes)
    assert sum(writes.values()) == 9
    assert_reads_everywhere(lab, report, "fixed")


# -- a. primary_node_id = "auto" ---------------------------------------------------------


def test_auto_primary_announces_the_promoted_node_and_keeps_standbys_attached(
    promotion_lab: Lab, report: Report
) -> None:
    lab = promotion_lab
    lab.set_hook_config(AUTO)
    lab.set_follow(Follow.NONE, SEARCH)
    with RouteWatch(duration=180) as watch:
        promotion = fail_primary_and_promote(lab, watch)
        back_at, _ = watch.wait_for(
            lambda hops: set(hops) == lab.all_next_hops(),
            SEARCH + RISE * INTERVAL + HOLD_DOWN + MARGIN,
            after=promotion.promoted_at,
        )
        views = pgpool_views(lab)
        writes = writes_through_anycast(9)
        assert_reads_everywhere(lab, report, "auto")
        # pg1 back as a standby of pg2 and attached: no route change on the way.
        rejoined_at = time.monotonic()
        rejoin_old_primary(lab)
        time.sleep(CHECK_TIMEOUT + FALL * INTERVAL + MARGIN)  # a withdrawal would show
        rejoin = between(watch.changes, rejoined_at, time.monotonic())
    report(
        "auto_stop_to_withdrawn_ms", round(1000 * (promotion.withdrawn_at - promotion.stopped_at))
    )
    report("auto_promote_to_found_ms", round(1000 * (promotion.found_at - promotion.promoted_at)))
    report("auto_promote_to_announced_ms", round(1000 * (back_at - promotion.promoted_at)))
    report("auto_pgpool_views_after_promotion", views)
    report("auto_writes_per_balancer", writes)
    report("auto_rejoin_route_changes", len(rejoin) - 1)
    for name, view in views.items():
        assert view[0][0] == "down" and view[1] == ("up", "primary"), (name, view)
        assert view[2][0] in ("up", "waiting"), (name, view)  # pg3 still balanced
    assert sum(writes.values()) == 9
    assert len(rejoin) == 1 and set(rejoin[0][1]) == lab.all_next_hops(), rejoin
    for name, view in pgpool_views(lab).items():
        assert view == [("up", "standby"), ("up", "primary"), ("up", "standby")], (name, view)


# -- c. announce_when = "any-backend" ------------------------------------------------------


def test_any_backend_keeps_serving_reads_while_the_primary_is_down(
    promotion_lab: Lab, report: Report
) -> None:
    """No promotion: pgpool fails node 0 over and finds no primary. pgpool itself
    answers nothing while it searches (search_primary_node_timeout, 3 s here: its
    children are restarted after the search); after that every balancer must be
    announced and serve SELECTs from the standbys. Writes fail: there is no primary."""
    lab = promotion_lab
    lab.set_hook_config({"announce_when": "any-backend"})
    with RouteWatch(duration=120) as watch:
        stopped_at = time.monotonic()
        postgres.stop(PG1)
        settled_at = wait_until(
            "every pgpool failed node 0 over", lambda: everywhere(lab, node_down(0)), 30
        )
        back_at, _ = watch.wait_for(
            lambda hops: set(hops) == lab.all_next_hops(),
            HOLD_DOWN + RISE * INTERVAL + 2 * MARGIN,
            after=settled_at,
        )
        assert_reads_everywhere(lab, report, "any_backend")
        changes = between(watch.changes, stopped_at, time.monotonic())
    outage = [hops for _, hops in changes if set(hops) != lab.all_next_hops()]
    report("any_backend_route_changes", [(round(t - stopped_at, 2), h) for t, h in changes])
    report("any_backend_stop_to_all_announced_ms", round(1000 * (back_at - stopped_at)))
    report("any_backend_lost_every_hop", any(not hops for hops in outage))
    with pytest.raises(RuntimeError):
        client_psql("create table promotion_no_primary (id int)")


# -- d. the user's follow script ----------------------------------------------------------


@pytest.mark.parametrize("primary_node_id", [0, "auto"], ids=["fixed", "auto"])
def test_follow_script_repoints_and_reattaches_the_standbys(
    promotion_lab: Lab, report: Report, primary_node_id: int | str
) -> None:
    """docs/examples/follow-primary.sh as follow_primary_command: pgpool detaches
    every standby, the script (run by each pgpool) re-points pg3 at pg2 over SQL,
    attaches it once it streams, leaves the unreachable old primary detached, and
    ends with `pgpool-anycast-hook add 1`. With a fixed id that changes nothing (node 1
    is not node 0); with "auto" the balancers announce the new primary."""
    lab = promotion_lab
    lab.set_hook_config({"primary_node_id": primary_node_id})
    lab.set_follow(Follow.SCRIPT, SEARCH)
    settings = follow_settings(lab, lab.wiring.commands(Follow.SCRIPT)["follow_command"])
    report("follow_script_follow_settings", settings)
    cursor = {name: bal.journal_cursor() for name, bal in lab.balancers.items()}
    with RouteWatch(duration=120) as watch:
        promotion = fail_primary_and_promote(lab, watch)
        attached_at = wait_until(
            "the script attached node 2 everywhere",
            lambda: everywhere(lab, node_attached(2)),
            STREAM_WAIT + MARGIN,
        )
        time.sleep(HOLD_DOWN + RISE * INTERVAL + MARGIN)
        changes = between(watch.changes, promotion.found_at, time.monotonic())
    views = pgpool_views(lab)
    report("follow_script_found_to_attached_ms", round(1000 * (attached_at - promotion.found_at)))
    report("follow_script_pgpool_views", views)
    report(
        "follow_script_route_changes", [(round(t - promotion.found_at, 2), h) for t, h in changes]
    )
    assert "pg3" in postgres.streaming_from(PG2)  # re-pointed by the script, not the test
    for name, view in views.items():
        assert view == [("down", "standby"), ("up", "primary"), ("up", "standby")], (name, view)
        ran = executed(lab.balancers[name], cursor[name], "")
        assert any(FOLLOW_SCRIPT in line for line in ran), ran  # 4.1: follow_master_command
        lines = follow_lines(lab.balancers[name], cursor[name])
        assert any("node 0: " in line and "left detached" in line for line in lines), lines
        assert any("node 2: streams from node 1" in line for line in lines), lines
        hook = "\n".join(lab.balancers[name].hook_lines(cursor[name]))
        assert "action=add node=1" in hook, hook
    if primary_node_id == "auto":
        assert set(changes[-1][1]) == lab.all_next_hops(), changes
        assert_reads_everywhere(lab, report, "follow_script")
    else:
        assert all(not hops for _, hops in changes), changes  # as without the script
