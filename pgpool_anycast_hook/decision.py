"""What a hook event (add, del, clean) does: a pure function of the event, config and state.

Whether the addresses should be announced is policy.py's answer; this module maps
pgpool's events onto it. Nothing here touches the system, so every combination can
be tested exhaustively.

When the guard follows pgpool's own view (primary_node_id = "auto", or announce_when
= "any-backend"), pgpool's events are hints: the guard asks pgpool again at once
(REEVALUATE). Only a `del` for the node that is the primary right now still withdraws
at once, and only where the primary matters (announce_when = "primary").
"""

from enum import StrEnum
from typing import NamedTuple

from pgpool_anycast_hook import policy


class Verb(StrEnum):
    ADD = "add"  # failback_command, ExecStartPost: the primary is back
    DEL = "del"  # failover_command, follow_*_command, ExecStopPost
    CLEAN = "clean"  # ExecStartPre: repair pgpool_status before pgpool reads it


class Outcome(StrEnum):
    ANNOUNCE = "announce"  # make every configured address present
    WITHDRAW = "withdraw"  # make every configured address absent
    SET_ASIDE_STATUS = "set-aside-status"  # move pgpool_status out of pgpool's way
    REEVALUATE = "reevaluate"  # the guard: probe and ask pgpool now, then decide
    NOTHING = "nothing"


class Decision(NamedTuple):
    outcome: Outcome
    reason: str


class HookEvent(NamedTuple):
    verb: Verb
    node: int  # pgpool's %d
    old_primary: int | None = None  # pgpool's %P when passed


class Situation(NamedTuple):
    primary_usable: bool  # pgpool_status, read with pgpool's rule, lets pgpool use the primary
    hold: bool  # an operator's maintenance hold (`disable`) is set
    current_primary: int | None = None  # "auto": the primary pgpool reported last, if any


def deciding_primary(
    event: HookEvent, primary_node_id: int | None, current_primary: int | None = None
) -> int | None:
    """`del N P` compares N with pgpool's %P; everything else with the configured primary
    (with "auto", the one pgpool reported last; None when it reported none)."""
    if event.verb is Verb.DEL and event.old_primary is not None:
        return event.old_primary
    return current_primary if primary_node_id is None else primary_node_id


def decide(
    event: HookEvent,
    addresses_configured: bool,
    primary_node_id: int | None,
    state: Situation,
    announce_when: str = policy.PRIMARY,
) -> Decision:
    """What pgpool's (or systemd's) event means for the addresses.

    Events for another node than the primary change nothing; `clean` is about
    pgpool_status only. For the primary, policy.verdict answers: `del` says the
    primary is going away, and `add` comes from pgpool itself (failback, or
    ExecStartPost once pgpool listens), so pgpool is taken as alive and listening.
    An `add` that the policy turns down changes nothing; it never withdraws.
    """
    if not addresses_configured:
        return Decision(Outcome.NOTHING, policy.NO_ADDRESSES)
    if primary_node_id is None and event.verb is Verb.CLEAN:
        return Decision(Outcome.NOTHING, "primary_node_id is auto: pgpool_status is left as is")
    primary = deciding_primary(event, primary_node_id, state.current_primary)
    if policy.needs_view(primary_node_id, announce_when) and event.verb is not Verb.CLEAN:
        if announce_when == policy.PRIMARY and event.verb is Verb.DEL and event.node == primary:
            going = policy.PRIMARY_GOING_AWAY.format(node=primary)
            return Decision(Outcome.WITHDRAW, going)
        return Decision(Outcome.REEVALUATE, f"a hint: pgpool's view decides ({announce_when})")
    if event.node != primary:
        return Decision(Outcome.NOTHING, f"node {event.node} is not the primary ({primary})")
    if event.verb is Verb.CLEAN:
        if state.primary_usable:
            return Decision(Outcome.NOTHING, f"pgpool_status lets pgpool use node {primary}")
        return Decision(Outcome.SET_ASIDE_STATUS, f"pgpool_status would keep node {primary} down")
    judged = policy.verdict(
        policy.Facts(
            addresses_configured=True,
            hold=state.hold,
            pgpool_alive=True,
            pgpool_listening=True,
            primary_usable=state.primary_usable,
            primary_node_id=primary,
            primary_going_away=event.verb is Verb.DEL,
        )
    )
    if judged.present:
        return Decision(Outcome.ANNOUNCE, judged.reason)
    return Decision(Outcome.WITHDRAW if event.verb is Verb.DEL else Outcome.NOTHING, judged.reason)
