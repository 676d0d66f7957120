"""The check's rise/fall machine, checked against a simple model over random runs."""

from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.check_state import Action, CheckState, Health, action_for, next_state

Step = tuple[bool, bool]  # (probe ok, hold set)


def run(steps: list[Step], rise: int, fall: int) -> list[CheckState]:
    state = CheckState()
    seen = []
    for ok, hold in steps:
        state = next_state(state, ok, hold, rise, fall)
        seen.append(state)
    return seen


@given(
    steps=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60),
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
)
def test_against_a_model(steps: list[Step], rise: int, fall: int) -> None:
    """Withdrawn exactly after `fall` failures in a row; back exactly after `rise` answers."""
    announced = True  # INIT: pgpool's start-up already announced
    oks = fails = 0
    for (ok, hold), state in zip(steps, run(steps, rise, fall), strict=True):
        if hold:
            announced, oks, fails = False, 0, 0
            assert state == CheckState(Health.DISABLED, 0)
            continue
        oks, fails = (oks + 1, 0) if ok else (0, fails + 1)
        if announced and fails >= fall:
            announced = False
        elif not announced and oks >= rise:
            announced = True
        action = action_for(state)
        if announced:
            assert state.health in (Health.UP, Health.FALLING)
            assert action in (Action.FOLLOW_DESIRED, Action.KEEP)
        else:
            assert state.health in (Health.DOWN, Health.RISING)
            assert action in (Action.WITHDRAW, Action.KEEP)
        if state.health is Health.FALLING:
            assert state.streak == fails < fall
        if state.health is Health.RISING:
            assert state.streak == oks < rise


@given(rise=st.integers(1, 5), fall=st.integers(1, 5))
def test_sigstop_then_sigcont(rise: int, fall: int) -> None:
    states = run([(True, False)] + [(False, False)] * fall + [(True, False)] * rise, rise, fall)
    assert states[0].health is Health.UP
    assert states[fall].health is Health.DOWN and action_for(states[fall]) is Action.WITHDRAW
    assert all(s.health is not Health.DOWN for s in states[:fall])
    assert states[-1].health is Health.UP and action_for(states[-1]) is Action.FOLLOW_DESIRED
    assert all(s.health is Health.RISING for s in states[fall + 1 : -1])


def test_a_blip_shorter_than_fall_changes_nothing() -> None:
    states = run([(True, False), (False, False), (False, False), (True, False)], 2, 3)
    assert [s.health for s in states] == [Health.UP, Health.FALLING, Health.FALLING, Health.UP]
    assert [action_for(s) for s in states[1:3]] == [Action.KEEP, Action.KEEP]


def test_hold_withdraws_at_once_and_lifting_it_rises() -> None:
    states = run([(True, True), (True, False), (True, False)], 2, 3)
    assert [s.health for s in states] == [Health.DISABLED, Health.RISING, Health.UP]
    assert action_for(states[0]) is Action.WITHDRAW
