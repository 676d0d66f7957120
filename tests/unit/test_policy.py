"""policy.verdict, the one answer to "should the addresses be announced?", exhaustively."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook import policy
from pgpool_anycast_hook.policy import Facts, verdict
from pgpool_anycast_hook.pool_nodes import BackendNode
from pgpool_anycast_hook.pool_view import PoolView, ViewState
from pgpool_anycast_hook.role_view import RoleState, RoleView

FLAGS = [True, False]


def test_every_combination() -> None:
    count = 0
    for configured, hold, alive, listening, usable, going in itertools.product(FLAGS, repeat=6):
        judged = verdict(Facts(configured, hold, alive, listening, usable, 0, going))
        wanted = configured and not going and not hold and alive and listening and usable
        assert judged.present is wanted
        assert judged.reason
        count += 1
    assert count == 64


@given(
    configured=st.booleans(),
    hold=st.booleans(),
    alive=st.booleans(),
    listening=st.booleans(),
    usable=st.booleans(),
    going=st.booleans(),
    node=st.integers(0, 127),
)
def test_the_reason_is_the_first_failing_condition(
    configured: bool, hold: bool, alive: bool, listening: bool, usable: bool, going: bool, node: int
) -> None:
    judged = verdict(Facts(configured, hold, alive, listening, usable, node, going))
    checks = [
        (configured, policy.NO_ADDRESSES),
        (not going, policy.PRIMARY_GOING_AWAY.format(node=node)),
        (not hold, policy.HOLD),
        (alive, policy.PGPOOL_DOWN),
        (listening, policy.NOT_LISTENING),
        (usable, policy.PRIMARY_DOWN.format(node=node)),
    ]
    first_failing = next((reason for ok, reason in checks if not ok), None)
    assert judged.reason == (first_failing or policy.SERVES.format(node=node))
    assert judged.present is (first_failing is None)


# -- pgpool's own view: primary_node_id = "auto" and announce_when = "any-backend" -----

STANDBY = BackendNode(1, "pg2", "5432", "up", "standby")
views = st.builds(
    PoolView,
    st.sampled_from(ViewState),
    st.lists(
        st.builds(
            BackendNode,
            st.integers(0, 3),
            st.just("h"),
            st.just("5432"),
            st.sampled_from(["up", "waiting", "down", "unused", "quarantine"]),
            st.sampled_from(["primary", "standby"]),
        ),
        max_size=4,
        unique_by=lambda node: node.node_id,
    ).map(tuple),
    st.integers(0, 9),
    st.just("timeout"),
)


@given(view=views, going=st.booleans(), usable=st.booleans(),
       when=st.sampled_from(policy.ANNOUNCE_WHEN))  # fmt: skip
def test_the_view_decides_when_the_policy_asks_for_it(
    view: PoolView, going: bool, usable: bool, when: str
) -> None:
    auto = when == policy.PRIMARY  # else any-backend (with a fixed id: the view decides too)
    judged = verdict(Facts(True, False, True, True, usable, None if auto else 0, going, when, view))
    primary = view.primary()
    if going and when == policy.PRIMARY:
        assert judged.code == "primary-going-away" and not judged.present
    elif view.state is ViewState.OFF:
        assert judged.code == "view-unknown" and not judged.present
    elif view.state is ViewState.LOST:
        assert judged.code == "view-lost" and not judged.present
    elif view.state is ViewState.INIT:
        assert judged.code == "view-pending" and judged.present  # as an unanswered first probe
    elif when == policy.PRIMARY:
        assert judged.present is (primary is not None)
        assert judged.code == ("serves" if primary is not None else "no-primary")
    else:
        assert judged.present is (view.backends_up() > 0), "pgpool_status plays no part"
        if judged.present and primary is None:
            assert "writes fail" in judged.reason
    assert judged.code in policy.CODES.values()


def test_auto_announces_on_a_promoted_node() -> None:
    view = PoolView(ViewState.KNOWN, (BackendNode(0, "pg1", "5432", "down", "standby"),
                                      BackendNode(1, "pg2", "5432", "up", "primary")))  # fmt: skip
    judged = verdict(Facts(True, False, True, True, False, None, False, policy.PRIMARY, view))
    assert judged == policy.Verdict(True, "pgpool serves and reports primary node 1 up", "serves")


def test_a_fixed_id_ignores_the_view() -> None:
    lost = PoolView(ViewState.LOST, (), 6, "timeout")
    assert verdict(Facts(True, False, True, True, True, 0, False, policy.PRIMARY, lost)).present


@given(view=views, when=st.sampled_from(policy.ANNOUNCE_WHEN), node=st.none() | st.just(0))
def test_a_drain_holds_in_every_mode(view: PoolView, when: str, node: int | None) -> None:
    """A planned stop's withdrawal is not undone by pgpool still answering, whatever
    decides otherwise ("auto", "any-backend", a fixed id)."""
    facts = Facts(True, False, True, True, True, node, False, when, view, drained=True)
    assert verdict(facts) == policy.Verdict(False, policy.DRAINED, "drained")


# -- serve = "postgresql": the PostgreSQL host's last resort -----------------------------

roles = st.builds(
    RoleView,
    st.sampled_from(RoleState),
    st.none() | st.booleans(),
    st.sampled_from(["", "t0"]),
    st.integers(0, 20),
    st.sampled_from(["", "refused"]),
)


@given(
    configured=st.booleans(),
    hold=st.booleans(),
    drained=st.booleans(),
    alive=st.booleans(),
    listening=st.booleans(),
    usable=st.booleans(),
    going=st.booleans(),
    role=roles,
    view=views,
)
def test_postgresql_announces_only_while_the_server_is_the_primary(
    configured: bool,
    hold: bool,
    drained: bool,
    alive: bool,
    listening: bool,
    usable: bool,
    going: bool,
    role: RoleView,
    view: PoolView,
) -> None:
    """pgpool's facts mean nothing there; the role, the hold and a drain decide."""
    facts = Facts(configured, hold, alive, listening, usable, 0, going, view=view,
                  drained=drained, serve=policy.SERVE_POSTGRESQL, role=role)  # fmt: skip
    judged = verdict(facts)
    pending = role.state is RoleState.INIT
    wanted = configured and not hold and not drained and (role.is_primary() or pending)
    assert judged.present is wanted
    assert judged.code in policy.CODES.values()
    checks = [
        (configured, "no-addresses"),
        (not drained, "drained"),
        (not hold, "hold"),
        (role.state is not RoleState.OFF, "role-unknown"),
        (role.state is not RoleState.LOST, "role-lost"),
        (not pending, "role-pending"),
        (role.is_primary(), "standby"),
    ]
    first = next((code for ok, code in checks if not ok), "serves")
    assert judged.code == first
    if first == "drained":
        assert "PostgreSQL starts again" in judged.reason


def test_postgresql_codes() -> None:
    facts = Facts(True, False, False, False, False, serve=policy.SERVE_POSTGRESQL)
    lost = RoleView(RoleState.LOST, True, "t0", 4, "connection refused")
    assert verdict(facts._replace(role=lost)) == policy.Verdict(
        False, "PostgreSQL's role is unknown: unanswered 4 times (connection refused)", "role-lost"
    )
    standby = RoleView(RoleState.KNOWN, False, "t0")
    assert verdict(facts._replace(role=standby)).code == "standby"
    primary = RoleView(RoleState.STALE, True, "t0", 1, "timeout")
    assert verdict(facts._replace(role=primary)).present  # the last answer holds
    assert verdict(facts).code == "role-unknown"  # OFF: a command that cannot see the guard
    assert verdict(facts._replace(role=RoleView())).code == "role-pending"
