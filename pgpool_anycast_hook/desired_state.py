"""Should the addresses be announced now? A pure function of what status/reconcile observed.

Used by `status` (to report drift), `reconcile` (to apply it) and `check` (once
its health counters say pgpool is up).
"""

from typing import NamedTuple


class Facts(NamedTuple):
    addresses_configured: bool
    hold: bool  # an operator's maintenance hold (`disable`) is set
    pgpool_alive: bool  # the pid in pgpool's pid file is a running pgpool
    pgpool_listening: bool  # pgpool accepts connections on its socket or port
    primary_usable: bool  # pgpool_status, read with pgpool's rule, lets pgpool use the primary
    primary_node_id: int = 0


class Desire(NamedTuple):
    present: bool
    reason: str


def desired_presence(facts: Facts) -> Desire:
    """Present iff configured, not held, pgpool alive and listening, and the primary usable.

    The first failing condition is the reason, in the order an operator would check them.
    """
    if not facts.addresses_configured:
        return Desire(False, "no addresses configured")
    if facts.hold:
        return Desire(False, "maintenance hold is set (run `enable` to lift it)")
    if not facts.pgpool_alive:
        return Desire(False, "pgpool is not running")
    if not facts.pgpool_listening:
        return Desire(False, "pgpool does not accept connections")
    if not facts.primary_usable:
        return Desire(False, f"pgpool_status marks primary node {facts.primary_node_id} down")
    return Desire(True, f"pgpool serves and primary node {facts.primary_node_id} is usable")
