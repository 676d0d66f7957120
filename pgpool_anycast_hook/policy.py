"""Should the addresses be announced? One pure function answers, whichever command asks.

`add`, `del` (decision.py), `reconcile`, `status`, `check` and `drain` all describe
what they know as Facts and take the Verdict from `verdict`, so the rule and its
reasons live here once and cannot drift between commands. The conditions are
checked in the order an operator would check them, and the first that fails is
the reason.
"""

from typing import NamedTuple

NO_ADDRESSES = "no addresses configured"
HOLD = "maintenance hold is set (run `enable` to lift it)"
PGPOOL_DOWN = "pgpool is not running"
NOT_LISTENING = "pgpool does not answer on its socket or port"
PRIMARY_GOING_AWAY = "primary node {node} is going away"
PRIMARY_DOWN = "pgpool_status marks primary node {node} down"
SERVES = "pgpool serves and primary node {node} is usable"


class Facts(NamedTuple):
    addresses_configured: bool
    hold: bool  # an operator's maintenance hold (`disable`) is set
    pgpool_alive: bool  # the pid in pgpool's pid file is a running pgpool
    pgpool_listening: bool  # pgpool answers an SSLRequest on its socket or port
    primary_usable: bool  # pgpool_status, read with pgpool's rule, lets pgpool use the primary
    primary_node_id: int = 0
    primary_going_away: bool = False  # pgpool said so: `del` for the primary


class Verdict(NamedTuple):
    present: bool
    reason: str


def verdict(facts: Facts) -> Verdict:
    """Present iff configured, not held, pgpool alive and listening, and the primary usable."""
    node = facts.primary_node_id
    if not facts.addresses_configured:
        return Verdict(False, NO_ADDRESSES)
    if facts.primary_going_away:
        return Verdict(False, PRIMARY_GOING_AWAY.format(node=node))
    if facts.hold:
        return Verdict(False, HOLD)
    if not facts.pgpool_alive:
        return Verdict(False, PGPOOL_DOWN)
    if not facts.pgpool_listening:
        return Verdict(False, NOT_LISTENING)
    if not facts.primary_usable:
        return Verdict(False, PRIMARY_DOWN.format(node=node))
    return Verdict(True, SERVES.format(node=node))
