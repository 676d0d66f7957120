"""The decision, for every combination of action, node, primary, status and hold."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.decision import HookEvent, Outcome, Situation, Verb, decide

NODES = range(0, 4)
OLD_PRIMARIES = [None, -1, 0, 1, 2, 3]


def expected(
    verb: Verb,
    node: int,
    old_primary: int | None,
    primary: int,
    configured: bool,
    usable: bool,
    hold: bool,
) -> Outcome:
    """The rules of the issue, written as a table rather than as code paths."""
    if not configured:
        return Outcome.NOTHING
    compared_with = old_primary if verb is Verb.DEL and old_primary is not None else primary
    if node != compared_with:
        return Outcome.NOTHING
    return {
        Verb.DEL: Outcome.WITHDRAW,
        Verb.CLEAN: Outcome.NOTHING if usable else Outcome.SET_ASIDE_STATUS,
        Verb.ADD: Outcome.ANNOUNCE if usable and not hold else Outcome.NOTHING,
    }[verb]


def test_every_combination() -> None:
    combinations = itertools.product(
        Verb, NODES, OLD_PRIMARIES, NODES, [True, False], [True, False], [True, False]
    )
    count = 0
    for verb, node, old_primary, primary, configured, usable, hold in combinations:
        decision = decide(
            HookEvent(verb, node, old_primary),
            configured,
            primary,
            Situation(primary_usable=usable, hold=hold),
        )
        assert decision.outcome is expected(
            verb, node, old_primary, primary, configured, usable, hold
        ), (verb, node, old_primary, primary, configured)
        assert decision.reason
        count += 1
    assert count == 3 * 4 * 6 * 4 * 8


@given(
    verb=st.sampled_from(Verb),
    node=st.integers(0, 127),
    old_primary=st.none() | st.integers(-1, 127),
    primary=st.integers(0, 127),
    configured=st.booleans(),
    usable=st.booleans(),
    hold=st.booleans(),
)
def test_whole_range(
    verb: Verb,
    node: int,
    old_primary: int | None,
    primary: int,
    configured: bool,
    usable: bool,
    hold: bool,
) -> None:
    decision = decide(
        HookEvent(verb, node, old_primary), configured, primary, Situation(usable, hold)
    )
    assert decision.outcome is expected(verb, node, old_primary, primary, configured, usable, hold)


def test_reasons_say_why() -> None:
    state = Situation(primary_usable=True, hold=False)
    assert decide(HookEvent(Verb.ADD, 0), False, 0, state).reason == "no addresses configured"
    assert "not the primary" in decide(HookEvent(Verb.ADD, 1), True, 0, state).reason
    assert "hold" in decide(HookEvent(Verb.ADD, 0), True, 0, Situation(True, True)).reason
    assert "down" in decide(HookEvent(Verb.ADD, 0), True, 0, Situation(False, False)).reason
    # a hold never keeps an address up
    assert (
        decide(HookEvent(Verb.DEL, 0), True, 0, Situation(True, True)).outcome is Outcome.WITHDRAW
    )


@given(
    verb=st.sampled_from([Verb.ADD, Verb.DEL]),
    node=st.integers(0, 127),
    old_primary=st.none() | st.integers(-1, 127),
    current=st.none() | st.integers(0, 127),
    when=st.sampled_from(["primary", "any-backend"]),
    fixed=st.booleans(),
)
def test_with_the_view_events_are_hints(
    verb: Verb, node: int, old_primary: int | None, current: int | None, when: str, fixed: bool
) -> None:
    """ "auto" or "any-backend": only `del` of the primary right now withdraws (and only
    where the primary matters); every other event makes the guard ask pgpool again."""
    primary_node_id = 0 if fixed else None
    if fixed and when == "primary":
        return  # the fixed-id rules: test_every_combination
    decision = decide(
        HookEvent(verb, node, old_primary), True, primary_node_id,
        Situation(True, False, current), when,
    )  # fmt: skip
    right_now = old_primary if old_primary is not None else (0 if fixed else current)
    if when == "primary" and verb is Verb.DEL and node == right_now:
        assert decision.outcome is Outcome.WITHDRAW
    else:
        assert decision.outcome is Outcome.REEVALUATE


def test_clean_leaves_pgpool_status_alone_with_auto() -> None:
    decision = decide(HookEvent(Verb.CLEAN, 0), True, None, Situation(False, False))
    assert decision.outcome is Outcome.NOTHING and "auto" in decision.reason
