"""pool_view: a query unanswered during a failover is no outage until `limit` in a row."""

from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.pool_nodes import BackendNode
from pgpool_anycast_hook.pool_view import (
    PoolView,
    ViewState,
    answered,
    from_record,
    missed,
    to_record,
)

PRIMARY_UP = (
    BackendNode(0, "pg1", "5432", "up", "primary"),
    BackendNode(1, "pg2", "5432", "up", "standby"),
)

# One query result: None for unanswered, else the nodes pgpool reported.
results = st.lists(st.none() | st.just(PRIMARY_UP), max_size=40)


def run(outcomes: list[tuple[BackendNode, ...] | None], limit: int) -> PoolView:
    view = PoolView()
    for nodes in outcomes:
        view = missed(view, "timeout", limit) if nodes is None else answered(view, nodes)
    return view


@given(outcomes=results, limit=st.integers(1, 10))
def test_the_state_follows_the_answers(
    outcomes: list[tuple[BackendNode, ...] | None], limit: int
) -> None:
    view = run(outcomes, limit)
    trailing_misses = len(outcomes) - max(
        (i + 1 for i, nodes in enumerate(outcomes) if nodes is not None), default=0
    )
    ever_answered = any(nodes is not None for nodes in outcomes)
    assert view.misses == trailing_misses
    if trailing_misses >= limit:
        assert view.state is ViewState.LOST
        assert view.primary() is None and view.backends_up() == 0  # a failure: nothing counts
    elif not ever_answered:
        assert view.state is ViewState.INIT and view.primary() is None
    elif trailing_misses:
        assert view.state is ViewState.STALE
        assert view.primary() == 0 and view.backends_up() == 2  # the last answer holds
    else:
        assert view.state is ViewState.KNOWN and view.primary() == 0


def test_one_answer_after_lost_is_known_again() -> None:
    view = run([PRIMARY_UP, None, None, None], limit=3)
    assert view.state is ViewState.LOST and view.error == "timeout"
    assert answered(view, PRIMARY_UP) == PoolView(ViewState.KNOWN, PRIMARY_UP, 0, "")


def test_off_stays_off() -> None:
    assert missed(PoolView(ViewState.OFF), "x", 1).state is ViewState.OFF


@given(view=st.builds(PoolView, st.sampled_from(ViewState), st.just(PRIMARY_UP),
                      st.integers(0, 9), st.text(max_size=20)))  # fmt: skip
def test_a_record_reads_back(view: PoolView) -> None:
    assert from_record(to_record(view)) == view


@given(record=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4)))  # fmt: skip
def test_any_json_gives_a_view(record: object) -> None:
    assert isinstance(from_record(record), PoolView)
    known = from_record({"state": "KNOWN", "nodes": [record]})
    assert known.state in (ViewState.OFF, ViewState.KNOWN)


def test_all_backends_down_is_an_answer_not_a_miss() -> None:
    """pgpool's refusal when every backend is down, as recorded from 4.3.5 and 4.6.1."""
    import json
    import select
    from pathlib import Path

    from pgpool_anycast_hook.config import Config
    from pgpool_anycast_hook.guard_view import ViewFollower
    from pgpool_anycast_hook.pgpool_conf import PgpoolSettings
    from pgpool_anycast_hook.pgpool_probe import QueryAnswer

    config = Config(mode="guarded", primary_node_id=None)
    settings = PgpoolSettings("", True, "/tmp", 9999, 9898, "*", "/run/postgresql", "/x", 2)

    for name in ("pgpool-4.3.5-all-down.json", "pgpool-4.6.1-all-down.json"):
        recorded = json.loads((Path(__file__).parent.parent / "data/pool_nodes" / name).read_text())
        follower = ViewFollower(select.poll())
        follower.configure(config, settings)
        follower.view = PoolView(ViewState.KNOWN, PRIMARY_UP)
        follower.view = follower._counted(QueryAnswer(False, recorded["message"], 0.01), 1.0)
        assert follower.view.state is ViewState.KNOWN, name
        assert {node.status for node in follower.view.nodes} == {"down"}
        assert follower.view.primary() is None and follower.view.backends_up() == 0
        other = follower._counted(QueryAnswer(False, "no answer within 0.25 s", 0.25), 2.0)
        assert other.state is ViewState.STALE  # a timeout is a miss
