"""The health-check state machine: rise and fall counts, as a pure function.

Shared by the guard's probes (in memory) and the standalone `check` (its state kept
in state_dir between runs). States:

- UP: pgpool answered; the addresses follow the desired state.
- FALLING: pgpool failed fewer than `fall` times in a row; nothing changes yet.
- DOWN: pgpool failed `fall` times in a row; the addresses are withdrawn.
- RISING: pgpool answered fewer than `rise` times in a row after DOWN or
  DISABLED; nothing changes yet.
- DISABLED: the maintenance hold is set; the addresses are withdrawn.

INIT is the state before the first run (no state file). pgpool's start-up already
gated the announcement (`add --wait-ready`), so a success from INIT is UP at once
and a failure from INIT counts as the first of `fall`.
"""

from enum import StrEnum
from typing import NamedTuple


class Health(StrEnum):
    INIT = "INIT"
    UP = "UP"
    FALLING = "FALLING"
    DOWN = "DOWN"
    RISING = "RISING"
    DISABLED = "DISABLED"


class CheckState(NamedTuple):
    health: Health = Health.INIT
    streak: int = 0  # successes (RISING) or failures (FALLING) in a row


class Action(StrEnum):
    FOLLOW_DESIRED = "follow-desired"  # announce or withdraw as policy.verdict says
    WITHDRAW = "withdraw"
    KEEP = "keep"  # change nothing: counting


def next_state(previous: CheckState, ok: bool, hold: bool, rise: int, fall: int) -> CheckState:
    """The state after one probe result."""
    if hold:
        return CheckState(Health.DISABLED, 0)
    health = previous.health
    if ok:
        if health in (Health.INIT, Health.UP, Health.FALLING):
            return CheckState(Health.UP, 0)
        successes = previous.streak + 1 if health is Health.RISING else 1
        return (
            CheckState(Health.UP, 0) if successes >= rise else CheckState(Health.RISING, successes)
        )
    if health in (Health.DOWN, Health.RISING, Health.DISABLED):
        return CheckState(Health.DOWN, 0)
    failures = previous.streak + 1 if health is Health.FALLING else 1
    return CheckState(Health.DOWN, 0) if failures >= fall else CheckState(Health.FALLING, failures)


def action_for(state: CheckState) -> Action:
    if state.health is Health.UP:
        return Action.FOLLOW_DESIRED
    if state.health in (Health.DOWN, Health.DISABLED):
        return Action.WITHDRAW
    return Action.KEEP
