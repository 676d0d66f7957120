"""guard_state.step: withdrawals never wait, announcements wait out the hold-down. Pure."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.check_state import CheckState, Health, next_state
from pgpool_anycast_hook.guard_state import (
    Action,
    GuardState,
    Phase,
    counted,
    first_count,
    hold_down_left,
    initial,
    lease_left,
    owed_withdrawal,
    step,
    withdrawn,
)

HOLD_DOWN = 5.0
ticks = st.lists(
    st.tuples(st.floats(0.0, 3.0), st.booleans(), st.booleans()),  # (dt, present, probe_known)
    max_size=60,
)


def test_every_phase_and_input_once() -> None:
    phases = [GuardState(p, w, s) for p in Phase for w in (None, 0.0) for s in (None, 0.0)]
    for state, present, known in itertools.product(phases, [True, False], [True, False]):
        new, action = step(state, 10.0, present, known, HOLD_DOWN)
        if not present:
            assert new.phase is Phase.WITHDRAWN
            withdrawing = state.phase in (Phase.ANNOUNCED, Phase.ADOPTING)
            assert action is (Action.WITHDRAW if withdrawing else Action.WAIT)
        elif state.phase in (Phase.ANNOUNCED, Phase.ADOPTING):
            assert action is Action.RENEW  # what is up stays up, and keeps its lease
        else:
            assert action in (Action.ANNOUNCE, Action.WAIT)
            assert action is not Action.ANNOUNCE or known


@given(start_present=st.booleans(), inputs=ticks)
def test_a_run_of_ticks_keeps_every_promise(start_present: bool, inputs: list) -> None:
    state = initial(start_present, None)
    up = start_present
    now = 0.0
    last_withdrawal: float | None = None
    wanted_since: float | None = None
    for dt, present, known in inputs:
        now += dt
        wanted_since = (wanted_since if wanted_since is not None else now) if present else None
        state, action = step(state, now, present, known, HOLD_DOWN)
        if not present:
            assert action in (Action.WITHDRAW, Action.WAIT)
            assert action is Action.WITHDRAW or not up  # never delayed
        if action is Action.WITHDRAW:
            up, last_withdrawal = False, now
        elif action is Action.ANNOUNCE:
            assert not up and present and known
            if last_withdrawal is not None:  # damping: continuous health for hold_down
                assert wanted_since is not None and now - wanted_since >= HOLD_DOWN
            up = True
        elif action is Action.RENEW:
            assert up and present
        assert (state.phase in (Phase.ANNOUNCED, Phase.ADOPTING)) is up
        assert 0.0 <= hold_down_left(state, now, HOLD_DOWN) <= HOLD_DOWN


def test_a_restart_loop_cannot_flap_faster_than_the_hold_down() -> None:
    state = initial(False, None)
    now, announcements = 0.0, []
    for _ in range(200):  # pgpool up for 1 s, down for 1 s, again and again
        for present in (True, False):
            for _tick in range(2):
                now += 0.5
                state, action = step(state, now, present, True, HOLD_DOWN)
                if action is Action.ANNOUNCE:
                    announcements.append(now)
    assert announcements == [0.5]  # the first, then never again: health never lasts 5 s


def test_adopting_keeps_the_addresses_until_the_probe_answers() -> None:
    state = initial(True, None)
    for now in (0.5, 1.0, 1.5):
        state, action = step(state, now, True, False, HOLD_DOWN)
        assert (state.phase, action) == (Phase.ADOPTING, Action.RENEW)
    state, action = step(state, 2.0, True, True, HOLD_DOWN)
    assert (state.phase, action) == (Phase.ANNOUNCED, Action.RENEW)
    assert step(initial(True, None), 0.5, False, False, HOLD_DOWN)[1] is Action.WITHDRAW


@given(
    lease=st.floats(2.0, 3600.0),
    renewed=st.floats(0.0, 1e6),
    elapsed=st.floats(-1e3, 1e4),
)
def test_the_lease_left_is_within_zero_and_the_lease(
    lease: float, renewed: float, elapsed: float
) -> None:
    left = lease_left(lease, renewed, renewed + elapsed)
    assert 0.0 <= left <= lease
    if 0.0 <= elapsed <= lease:
        assert abs(left - (lease - elapsed)) < 1e-6
    if elapsed >= lease:
        assert left == 0.0


@given(
    phase=st.sampled_from(list(Phase)),
    withdrawn_at=st.none() | st.floats(0.0, 9.0),
    wanted_since=st.none() | st.floats(0.0, 9.0),
    planned=st.booleans(),
)
def test_an_event_withdrawal_owes_a_hold_down_only_after_a_failure(
    phase: Phase, withdrawn_at: float | None, wanted_since: float | None, planned: bool
) -> None:
    before = GuardState(phase, withdrawn_at, wanted_since)
    after = withdrawn(before, 10.0, planned)
    assert after.phase is Phase.WITHDRAWN
    if phase is Phase.WITHDRAWN:
        assert after == before._replace(
            wanted_since=None
        )  # ExecStopPost's del after a drain or a crash: nothing new
    elif not planned:
        assert after.withdrawn_at == 10.0 and after.wanted_since is None
    elif phase is Phase.HOLDING_DOWN:
        assert after.withdrawn_at == withdrawn_at  # a failure's hold-down is still owed
    else:
        assert after.withdrawn_at is None
    # What the next healthy, probed tick does: announce at once unless a hold-down is owed.
    _, action = step(after, 10.5, True, True, HOLD_DOWN)
    owed = after.withdrawn_at is not None
    assert action is (Action.WAIT if owed else Action.ANNOUNCE)


def test_drain_then_stop_then_start_announces_without_a_hold_down() -> None:
    state = GuardState(Phase.ANNOUNCED, None, 0.0)
    state = withdrawn(state, 10.0, planned=True)  # ExecStop= drain
    state, action = step(state, 10.2, False, True, HOLD_DOWN)  # pgpool exits
    assert action is Action.WAIT
    state = withdrawn(state, 10.3, planned=False)  # ExecStopPost= del
    state, action = step(state, 12.0, True, True, HOLD_DOWN)  # the new pgpool answers
    assert action is Action.ANNOUNCE


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "phase": st.sampled_from([*Phase, "bogus"]) | json_values,
        "renewed_at": st.floats(0.0, 200.0) | json_values,
        "lease": st.floats(0.0, 20.0) | json_values,
        "withdrawn_at_wall": st.floats(0.0, 200.0) | json_values,
    },
)


@given(record=records | json_values, now=st.floats(0.0, 200.0))
def test_an_earlier_guards_record_owes_at_most_one_hold_down(record: object, now: float) -> None:
    """Whatever guard.json holds: None, or a withdrawal within hold_down + lease ago."""
    ago = owed_withdrawal(record, now, HOLD_DOWN, 10.0)
    assert ago is None or 0 <= ago < HOLD_DOWN + 10.0


def test_a_guard_that_hung_announced_owes_a_hold_down_from_its_lease_end() -> None:
    announced = {"phase": "ANNOUNCED", "renewed_at": 100.0, "lease": 3.0,
                 "withdrawn_at_wall": 50.0}  # fmt: skip
    assert owed_withdrawal(announced, 104.0, HOLD_DOWN, 3.0) == 1.0  # gone at 103
    assert owed_withdrawal(announced, 101.0, HOLD_DOWN, 3.0) == 0.0  # removed early: now
    assert owed_withdrawal(announced, 120.0, HOLD_DOWN, 3.0) is None  # served long ago
    withdrawn = {"phase": "WITHDRAWN", "withdrawn_at_wall": 100.0}
    assert owed_withdrawal(withdrawn, 102.0, HOLD_DOWN, 3.0) == 2.0
    assert owed_withdrawal({"phase": "WITHDRAWN", "withdrawn_at_wall": None}, 1.0, 5.0, 3.0) is None
    assert (
        owed_withdrawal({"phase": "ANNOUNCED", "renewed_at": True, "lease": 3}, 1.0, 5.0, 3.0)
        is None
    )


@given(
    phase=st.sampled_from(list(Phase)),
    withdrawn_at=st.none() | st.floats(0.0, 9.0),
    results=st.lists(st.booleans(), max_size=12),
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
)
def test_a_new_pgpool_rises_at_its_first_answer_only_when_no_failure_is_owed(
    phase: Phase, withdrawn_at: float | None, results: list[bool], rise: int, fall: int
) -> None:
    """Owed a failure (or adopting): exactly check_state's count. Otherwise: DOWN until
    the first answer, UP at it, and check_state's count from there on."""
    health, starting = first_count(GuardState(phase, withdrawn_at, None))
    plain = health  # the same results counted by check_state alone
    started = not starting
    for ok in results:
        health, starting = counted(health, starting, ok, rise, fall)
        if started:
            plain = next_state(plain, ok, False, rise, fall)
        elif ok:
            started, plain = True, CheckState(Health.UP)
        assert health == plain
        assert starting is not started


def test_after_a_planned_stop_the_failures_while_pgpool_starts_do_not_count() -> None:
    health, starting = first_count(GuardState(Phase.WITHDRAWN, None, None))
    for _ in range(5):  # refused while pgpool starts
        health, starting = counted(health, starting, False, 2, 3)
        assert starting and health.health is Health.DOWN
    health, starting = counted(health, starting, True, 2, 3)
    assert health.health is Health.UP and not starting
    after_crash, starting = first_count(GuardState(Phase.WITHDRAWN, 10.0, None))
    after_crash, _ = counted(after_crash, starting, True, 2, 3)
    assert after_crash.health is Health.RISING  # a failure is owed: rise again
