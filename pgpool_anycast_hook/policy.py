"""Should the addresses be announced? One pure function answers, whichever command asks.

`add`, `del` (decision.py), the guard, `reconcile`, `status`, `check` and `drain` all
describe what they know as Facts and take the Verdict from `verdict`, so the rule and
its reasons live here once and cannot drift between commands. The conditions are
checked in the order an operator would check them, and the first that fails is the
reason. Each reason has a short code, for metrics labels and on_change.

What "pgpool serves" means is the operator's choice (`announce_when`):
- "primary" (the article's rule): a usable primary. With a fixed primary_node_id it is
  the one pgpool_status lets pgpool use; with primary_node_id = "auto" (None here) it is
  whichever node pgpool itself reports as the primary and up (SHOW POOL_NODES).
- "any-backend": at least one backend pgpool can balance reads to is up; with no
  primary, writes fail and reads go on.

On a PostgreSQL host (serve = "postgresql", the last resort when every balancer is
gone) no pgpool is followed at all: the addresses are announced while the local
server answers and is a primary (role_view.py), and the hold and a drain hold there
as everywhere.
"""

from typing import NamedTuple

from pgpool_anycast_hook.pool_view import PoolView, ViewState
from pgpool_anycast_hook.role_view import RoleState, RoleView

PRIMARY = "primary"
ANY_BACKEND = "any-backend"
ANNOUNCE_WHEN = (PRIMARY, ANY_BACKEND)
SERVE_PGPOOL = "pgpool"
SERVE_POSTGRESQL = "postgresql"

NO_ADDRESSES = "no addresses configured"
HOLD = "maintenance hold is set (run `enable` to lift it)"
PGPOOL_DOWN = "pgpool is not running"
NOT_LISTENING = "pgpool does not answer on its socket or port"
PRIMARY_GOING_AWAY = "primary node {node} is going away"
DRAINED = "drained for a planned stop (until pgpool starts again, or `add`)"
PRIMARY_DOWN = "pgpool_status marks primary node {node} down"
SERVES = "pgpool serves and primary node {node} is usable"
VIEW_UNKNOWN = "pgpool's view is not known here (the guard reports it in guard.json)"
VIEW_PENDING = "waiting for pgpool's first answer to SHOW POOL_NODES"
VIEW_LOST = "pgpool's view is unknown: SHOW POOL_NODES unanswered {misses} times ({error})"
NO_PRIMARY = "pgpool reports no primary that is up"
SERVES_PRIMARY = "pgpool serves and reports primary node {node} up"
NO_BACKEND = "pgpool reports no backend up to balance reads to"
SERVES_BACKENDS = "pgpool serves and reports {count} backend(s) up{writes}"
DRAINED_POSTGRESQL = "drained for a planned stop (until PostgreSQL starts again)"
ROLE_UNKNOWN = "PostgreSQL's role is not known here (the guard reports it in guard.json)"
ROLE_PENDING = "waiting for PostgreSQL's first answer to SELECT pg_is_in_recovery()"
ROLE_LOST = "PostgreSQL's role is unknown: unanswered {misses} times ({error})"
STANDBY = "PostgreSQL is a standby (pg_is_in_recovery() is true)"
SERVES_AS_PRIMARY = "PostgreSQL is the primary (last resort, behind the balancers)"

CODES = {
    NO_ADDRESSES: "no-addresses",
    HOLD: "hold",
    PGPOOL_DOWN: "pgpool-down",
    NOT_LISTENING: "not-listening",
    PRIMARY_GOING_AWAY: "primary-going-away",
    DRAINED: "drained",
    PRIMARY_DOWN: "primary-down",
    SERVES: "serves",
    VIEW_UNKNOWN: "view-unknown",
    VIEW_PENDING: "view-pending",
    VIEW_LOST: "view-lost",
    NO_PRIMARY: "no-primary",
    SERVES_PRIMARY: "serves",
    NO_BACKEND: "no-backend",
    SERVES_BACKENDS: "serves",
    DRAINED_POSTGRESQL: "drained",
    ROLE_UNKNOWN: "role-unknown",
    ROLE_PENDING: "role-pending",
    ROLE_LOST: "role-lost",
    STANDBY: "standby",
    SERVES_AS_PRIMARY: "serves",
}


class Facts(NamedTuple):
    addresses_configured: bool
    hold: bool  # an operator's maintenance hold (`disable`) is set
    pgpool_alive: bool  # the pid in pgpool's pid file is a running pgpool
    pgpool_listening: bool  # pgpool answers an SSLRequest on its socket or port
    primary_usable: bool  # pgpool_status, read with pgpool's rule, lets pgpool use the primary
    primary_node_id: int | None = 0  # None: "auto", the primary pgpool reports
    primary_going_away: bool = False  # pgpool said so: `del` for the primary
    announce_when: str = PRIMARY
    view: PoolView = PoolView(ViewState.OFF)  # SHOW POOL_NODES, when the guard asks it
    drained: bool = False  # `drain` withdrew for a planned stop, whatever pgpool says now
    serve: str = SERVE_PGPOOL  # "postgresql": the local PostgreSQL's role decides, not pgpool
    role: RoleView = RoleView(RoleState.OFF)  # its role, as the guard asks it (serve: postgresql)


class Verdict(NamedTuple):
    present: bool
    reason: str
    code: str = ""


def _verdict(present: bool, template: str, **values: object) -> Verdict:
    return Verdict(present, template.format(**values), CODES[template])


def verdict(facts: Facts) -> Verdict:
    """Present iff configured, not held, pgpool alive and listening, and serving as
    `announce_when` asks."""
    node = facts.primary_node_id
    if not facts.addresses_configured:
        return _verdict(False, NO_ADDRESSES)
    if facts.serve == SERVE_POSTGRESQL:
        return _postgresql_verdict(facts)
    if facts.primary_going_away and facts.announce_when == PRIMARY:
        return _verdict(False, PRIMARY_GOING_AWAY, node=node)
    if facts.drained:
        return _verdict(False, DRAINED)
    if facts.hold:
        return _verdict(False, HOLD)
    if not facts.pgpool_alive:
        return _verdict(False, PGPOOL_DOWN)
    if not facts.pgpool_listening:
        return _verdict(False, NOT_LISTENING)
    if node is not None and facts.announce_when == PRIMARY:
        if not facts.primary_usable:
            return _verdict(False, PRIMARY_DOWN, node=node)
        return _verdict(True, SERVES, node=node)
    view = facts.view
    if view.state is ViewState.OFF:
        return _verdict(False, VIEW_UNKNOWN)
    if view.state is ViewState.LOST:
        return _verdict(False, VIEW_LOST, misses=view.misses, error=view.error or "no answer")
    if not view.in_force:  # INIT: provisional, as for an unanswered first probe
        return _verdict(True, VIEW_PENDING)
    primary = view.primary()
    if facts.announce_when == PRIMARY:
        if primary is None:
            return _verdict(False, NO_PRIMARY)
        return _verdict(True, SERVES_PRIMARY, node=primary)
    count = view.backends_up()
    if not count:
        return _verdict(False, NO_BACKEND)
    writes = "" if primary is not None else " (no primary: writes fail)"
    return _verdict(True, SERVES_BACKENDS, count=count, writes=writes)


def _postgresql_verdict(facts: Facts) -> Verdict:
    """serve = "postgresql": a drain and the hold first, then the local server's role."""
    if facts.drained:
        return _verdict(False, DRAINED_POSTGRESQL)
    if facts.hold:
        return _verdict(False, HOLD)
    role = facts.role
    if role.state is RoleState.OFF:
        return _verdict(False, ROLE_UNKNOWN)
    if role.state is RoleState.LOST:
        return _verdict(False, ROLE_LOST, misses=role.misses, error=role.error or "no answer")
    if not role.in_force:  # INIT: provisional, as for an unanswered first probe
        return _verdict(True, ROLE_PENDING)
    if not role.is_primary():
        return _verdict(False, STANDBY)
    return _verdict(True, SERVES_AS_PRIMARY)


def needs_view(primary_node_id: int | None, announce_when: str) -> bool:
    """Does the verdict depend on pgpool's view (SHOW POOL_NODES)?"""
    return primary_node_id is None or announce_when != PRIMARY
