"""The guard's state machine: when to announce, renew, withdraw or wait. Pure.

Every tick the guard (guard.py) asks policy.verdict whether the addresses should
be announced, from what it sees: pgpool's process (a pidfd), the probe's health
(check_state.next_state: rise and fall counts), pgpool_status, the hold, and the
last event pgpool sent. This module turns that verdict into an action:

- Withdrawals are never delayed.
- Flap damping: after a withdrawal, the addresses are announced again only after
  `hold_down` seconds in which the verdict said "present" without a break. That
  covers failback `add`, a pgpool start and the probe's rise alike, so a pgpool
  in a restart loop cannot make the routers' ECMP set flap (every change of that
  set also moves other balancers' flows). A planned withdrawal (`drain`, the
  ExecStop= of a `systemctl stop` or `restart`) is not a failure and owes no
  hold-down of its own (`withdrawn`): the node is back as soon as it answers.
- While announced, every tick renews the addresses' lease (guard_netlink.py), so they
  vanish by themselves if the guard stops renewing them.
- Adoption: a guard that starts while the addresses are present, before its first
  probe has answered, keeps them (renewing) instead of withdrawing: a guard
  restart must not blink an address that should stay up. A verdict that is
  "absent" for any other reason than the unanswered probe withdraws at once.

States, as `status` shows them: ANNOUNCED, WITHDRAWN, HOLDING_DOWN (the verdict
says present, the hold-down runs), ADOPTING (present, waiting for the first probe).
"""

from enum import StrEnum
from typing import Any, NamedTuple

from pgpool_anycast_hook.check_state import CheckState, Health, next_state


class Phase(StrEnum):
    ANNOUNCED = "ANNOUNCED"
    WITHDRAWN = "WITHDRAWN"
    HOLDING_DOWN = "HOLDING_DOWN"
    ADOPTING = "ADOPTING"


class Action(StrEnum):
    ANNOUNCE = "announce"  # add the addresses, with a fresh lease
    RENEW = "renew"  # they are up: renew their lease
    WITHDRAW = "withdraw"
    WAIT = "wait"  # change nothing


class GuardState(NamedTuple):
    phase: Phase
    withdrawn_at: float | None = None  # monotonic time of the last withdrawal, if any
    wanted_since: float | None = None  # since when the verdict has said "present"


class Step(NamedTuple):
    state: GuardState
    action: Action


def initial(present: bool, withdrawn_at: float | None) -> GuardState:
    """The state of a guard that starts: adopting what it finds on the interface.

    `withdrawn_at` is the time of a withdrawal recorded by an earlier guard, if any
    (so a restart does not skip a hold-down that was running).
    """
    if present:
        return GuardState(Phase.ADOPTING, withdrawn_at)
    return GuardState(Phase.WITHDRAWN, withdrawn_at)


def step(state: GuardState, now: float, present: bool, probe_known: bool, hold_down: float) -> Step:
    """One tick. `present`: policy.verdict's answer (taking an unanswered probe as up);
    `probe_known`: the probe has answered or failed at least once since start."""
    if not present:
        if state.phase in (Phase.ANNOUNCED, Phase.ADOPTING):
            return Step(GuardState(Phase.WITHDRAWN, now, None), Action.WITHDRAW)
        return Step(GuardState(Phase.WITHDRAWN, state.withdrawn_at, None), Action.WAIT)
    if state.phase is Phase.ANNOUNCED:
        return Step(state, Action.RENEW)
    if state.phase is Phase.ADOPTING:
        if probe_known:
            return Step(GuardState(Phase.ANNOUNCED, state.withdrawn_at, now), Action.RENEW)
        return Step(state, Action.RENEW)
    if not probe_known:
        return Step(GuardState(Phase.WITHDRAWN, state.withdrawn_at, None), Action.WAIT)
    wanted_since = state.wanted_since if state.wanted_since is not None else now
    if state.withdrawn_at is None or now - wanted_since >= hold_down:
        return Step(GuardState(Phase.ANNOUNCED, state.withdrawn_at, wanted_since), Action.ANNOUNCE)
    return Step(GuardState(Phase.HOLDING_DOWN, state.withdrawn_at, wanted_since), Action.WAIT)


def first_count(state: GuardState) -> tuple[CheckState, bool]:
    """The probe count for a pgpool the guard starts to follow, and whether it is starting.

    - ADOPTING: INIT; the addresses stay up while the first probe is out.
    - No failure owed (a planned stop, a boot): DOWN, but starting. Probes that fail
      while pgpool starts are not counted, and its first answer is UP at once, the
      way `add --wait-ready` waits for it.
    - After a failure: DOWN, and it must rise `check_rise` answers (and the hold-down).
    """
    if state.phase is Phase.ADOPTING:
        return CheckState(Health.INIT), False
    return CheckState(Health.DOWN), state.withdrawn_at is None


def counted(
    health: CheckState, starting: bool, ok: bool, rise: int, fall: int
) -> tuple[CheckState, bool]:
    """One probe result counted: (the new count, still starting)."""
    if starting:
        return (CheckState(Health.UP), False) if ok else (health, True)
    return next_state(health, ok, False, rise, fall), False


def withdrawn(state: GuardState, now: float, planned: bool) -> GuardState:
    """The state after an event withdrew the addresses (del, drain), whatever the phase.

    Already withdrawn, nothing new came down (ExecStopPost's `del` after a drain or a
    crash). Otherwise a failure starts a hold-down now; a planned withdrawal starts
    none, but keeps one that an earlier failure started and that is not served yet.
    """
    if state.phase is Phase.WITHDRAWN:
        return state._replace(wanted_since=None)
    if not planned:
        return GuardState(Phase.WITHDRAWN, now, None)
    served = state.phase in (Phase.ANNOUNCED, Phase.ADOPTING)
    return GuardState(Phase.WITHDRAWN, None if served else state.withdrawn_at, None)


def owed_withdrawal(record: Any, now: float, hold_down: float, lease: float) -> float | None:
    """How long ago (wall clock) the withdrawal was whose hold-down a new guard still owes.

    `record` is what the previous guard wrote into guard.json (untrusted: any JSON).
    If it still announced, its addresses went when their lease ran out (it hung or
    was stopped): that is the withdrawal, at its last renewal plus the lease, or now
    if that lies ahead (they were removed earlier). Otherwise its own last withdrawal.
    None when there is none, or its hold-down is over, or the record makes no sense.
    """
    if not isinstance(record, dict):
        return None

    def number(key: str) -> float | None:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    renewed, leased = number("renewed_at"), number("lease")
    if record.get("phase") in (Phase.ANNOUNCED, Phase.ADOPTING):
        if renewed is None or leased is None:
            return None
        at: float | None = min(now, renewed + leased)
    else:
        at = number("withdrawn_at_wall")
    if at is None:
        return None
    ago = now - at
    return ago if 0 <= ago < hold_down + lease else None


def hold_down_left(state: GuardState, now: float, hold_down: float) -> float:
    """Seconds until a HOLDING_DOWN guard announces (0 in any other phase)."""
    if state.phase is not Phase.HOLDING_DOWN or state.wanted_since is None:
        return 0.0
    return max(0.0, hold_down - (now - state.wanted_since))


def lease_left(lease: float, renewed_at: float, now: float) -> float:
    """Seconds until an address renewed at `renewed_at` expires (never negative, never
    more than the lease, also when the clock stepped back)."""
    return min(lease, max(0.0, lease - (now - renewed_at)))
