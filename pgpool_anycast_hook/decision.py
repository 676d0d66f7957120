"""What the address state should be: a pure function of the event, config and pgpool state.

Nothing here touches the system, so every combination can be tested exhaustively.
"""

from enum import StrEnum
from typing import NamedTuple


class Verb(StrEnum):
    ADD = "add"  # failback_command, ExecStartPost: the primary is back
    DEL = "del"  # failover_command, follow_*_command, ExecStopPost
    CLEAN = "clean"  # ExecStartPre: repair pgpool_status before pgpool reads it


class Outcome(StrEnum):
    ANNOUNCE = "announce"  # make every configured address present
    WITHDRAW = "withdraw"  # make every configured address absent
    SET_ASIDE_STATUS = "set-aside-status"  # move pgpool_status out of pgpool's way
    NOTHING = "nothing"


class Decision(NamedTuple):
    outcome: Outcome
    reason: str


class HookEvent(NamedTuple):
    verb: Verb
    node: int  # pgpool's %d
    old_primary: int | None = None  # pgpool's %P when passed


class PgpoolState(NamedTuple):
    primary_usable: bool  # pgpool_status, read with pgpool's rule, lets pgpool use the primary
    hold: bool  # an operator's maintenance hold (`disable`) is set


def deciding_primary(event: HookEvent, primary_node_id: int) -> int:
    """`del N P` compares N with pgpool's %P; everything else with the configured primary."""
    if event.verb is Verb.DEL and event.old_primary is not None:
        return event.old_primary
    return primary_node_id


def decide(
    event: HookEvent, addresses_configured: bool, primary_node_id: int, state: PgpoolState
) -> Decision:
    if not addresses_configured:
        return Decision(Outcome.NOTHING, "no addresses configured")
    primary = deciding_primary(event, primary_node_id)
    if event.node != primary:
        return Decision(Outcome.NOTHING, f"node {event.node} is not the primary ({primary})")
    if event.verb is Verb.DEL:
        return Decision(Outcome.WITHDRAW, f"primary node {primary} is going away")
    if event.verb is Verb.CLEAN:
        if state.primary_usable:
            return Decision(Outcome.NOTHING, f"pgpool_status lets pgpool use node {primary}")
        return Decision(Outcome.SET_ASIDE_STATUS, f"pgpool_status would keep node {primary} down")
    if state.hold:
        return Decision(Outcome.NOTHING, "maintenance hold is set (run `enable` to lift it)")
    if not state.primary_usable:
        return Decision(Outcome.NOTHING, f"pgpool_status marks primary node {primary} down")
    return Decision(Outcome.ANNOUNCE, f"primary node {primary} is usable")
