"""role_view: PostgreSQL's role, as the guard's answers make it over time (serve = "postgresql")."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.role_view import (
    RoleError,
    RoleState,
    RoleView,
    answered,
    from_record,
    missed,
    new_postmaster,
    parse_answer,
    to_record,
)

# One query's outcome: None for unanswered, else (in recovery, postmaster start time).
outcomes = st.lists(
    st.none() | st.tuples(st.booleans(), st.sampled_from(["t0", "t1", "t2"])), max_size=40
)


def run(results: list[tuple[bool, str] | None], limit: int) -> RoleView:
    view = RoleView()
    for result in results:
        view = missed(view, "timeout", limit) if result is None else answered(view, *result)
    return view


@given(results=outcomes, limit=st.integers(1, 10))
def test_the_role_follows_the_answers(results: list[tuple[bool, str] | None], limit: int) -> None:
    view = run(results, limit)
    answers = [r for r in results if r is not None]
    last = answers[-1] if answers else None
    trailing = len(results) - max((i + 1 for i, r in enumerate(results) if r), default=0)
    assert view.misses == trailing
    if trailing >= limit:
        assert view.state is RoleState.LOST
        assert not view.is_primary() and view.role() is None  # nothing counts: withdraw
    elif last is None:
        assert view.state is RoleState.INIT and view.role() is None
    else:
        assert view.state is (RoleState.STALE if trailing else RoleState.KNOWN)
        assert view.is_primary() is (not last[0])  # the last answer holds, a demotion at once
        assert view.role() == ("standby" if last[0] else "primary")
        assert view.started == last[1]


@given(results=outcomes, limit=st.integers(1, 10))
def test_primary_only_on_an_answer_in_force_that_said_false(
    results: list[tuple[bool, str] | None], limit: int
) -> None:
    view = run(results, limit)
    assert view.is_primary() is (view.in_force and view.primary is True)


@given(results=outcomes, limit=st.integers(1, 10))
def test_the_record_round_trips(results: list[tuple[bool, str] | None], limit: int) -> None:
    view = run(results, limit)
    assert from_record(to_record(view)) == view


@given(record=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner) | st.dictionaries(st.text(max_size=8),
                                                                           inner)))  # fmt: skip
def test_any_record_is_a_view_or_off(record: object) -> None:
    view = from_record(record)
    assert isinstance(view, RoleView) and isinstance(view.state, RoleState)


def test_off_stays_off() -> None:
    off = RoleView(RoleState.OFF)
    assert answered(off, False, "t0") == off and missed(off, "x", 1) == off


def test_a_demotion_is_seen_at_the_first_answer() -> None:
    view = answered(RoleView(), False, "t0")
    assert view.is_primary()
    assert not answered(view, True, "t0").is_primary()


def test_new_postmaster() -> None:
    view = answered(RoleView(), False, "t1")
    assert new_postmaster(view, "t0") and not new_postmaster(view, "t1")
    assert new_postmaster(view, "")  # nothing was known at the drain: any answer
    assert not new_postmaster(missed(view, "x", 3), "t0")  # stale: no new answer


@pytest.mark.parametrize(
    ("rows", "expected"),
    [((("f", "2026-01-01 00:00:00+00"),), (False, "2026-01-01 00:00:00+00")),
     ((("t", None),), (True, ""))],
)  # fmt: skip
def test_parse_answer(rows: tuple[tuple[str | None, ...], ...], expected: tuple[bool, str]) -> None:
    assert parse_answer(rows) == expected


@pytest.mark.parametrize("rows", [(), (("f",),), (("yes", "x"),), (("f", "x"), ("f", "x"))])
def test_parse_answer_refuses(rows: tuple[tuple[str | None, ...], ...]) -> None:
    with pytest.raises(RoleError):
        parse_answer(rows)


def test_the_guard_asks_over_the_unix_socket_only() -> None:
    from pgpool_anycast_hook.config import Config
    from pgpool_anycast_hook.guard_role import role_conninfo

    config = Config(serve="postgresql", postgresql_socket_dir="/run/pg", postgresql_port=5433,
                    postgresql_user="anycast")  # fmt: skip
    text = role_conninfo(config)
    assert "host='/run/pg'" in text and "port='5433'" in text and "user='anycast'" in text
    assert "passfile" not in text  # empty: libpq's default, not an empty file name
    assert "sslmode='disable'" in text
