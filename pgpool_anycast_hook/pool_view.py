"""What the guard knows of pgpool's own view (SHOW POOL_NODES), as a pure state machine.

pgpool refuses or holds new connections while it fails over, and a failover can take
seconds. A query that times out or fails then says nothing about the backends, so it
must not count as an outage at once: the last answer stays in force (STALE) for
`limit` queries in a row, and only then is the view LOST, which the policy treats as a
failure. Any answer makes it KNOWN again.

States:
- OFF: the guard does not query (neither the policy nor the configuration asks for it).
- INIT: no answer yet since the guard started (or since the view was forgotten).
- KNOWN: the last query was answered.
- STALE: fewer than `limit` queries in a row went unanswered; the last answer holds.
- LOST: `limit` queries in a row went unanswered; pgpool's view is unknown.
"""

from enum import StrEnum
from typing import NamedTuple

from pgpool_anycast_hook.pool_nodes import BackendNode, balanced_up, reported_primary


class ViewState(StrEnum):
    OFF = "OFF"
    INIT = "INIT"
    KNOWN = "KNOWN"
    STALE = "STALE"
    LOST = "LOST"


class PoolView(NamedTuple):
    state: ViewState = ViewState.INIT
    nodes: tuple[BackendNode, ...] = ()  # the last answer (kept while STALE, and shown when LOST)
    misses: int = 0  # queries unanswered in a row
    error: str = ""  # why the last query went unanswered

    @property
    def in_force(self) -> bool:
        """Does the last answer still count?"""
        return self.state in (ViewState.KNOWN, ViewState.STALE)

    def primary(self) -> int | None:
        """The node pgpool reports as a usable primary, while its answer is in force."""
        return reported_primary(self.nodes) if self.in_force else None

    def backends_up(self) -> int:
        """How many backends pgpool can balance reads to, while its answer is in force."""
        return balanced_up(self.nodes) if self.in_force else 0


def answered(view: PoolView, nodes: tuple[BackendNode, ...]) -> PoolView:
    return PoolView(ViewState.KNOWN, nodes, 0, "")


def missed(view: PoolView, error: str, limit: int) -> PoolView:
    """One query unanswered (timed out, refused, failed): STALE, INIT, or LOST at `limit`."""
    if view.state is ViewState.OFF:
        return view
    misses = view.misses + 1
    if misses >= limit:
        return PoolView(ViewState.LOST, view.nodes, misses, error)
    if view.state is ViewState.INIT:
        return PoolView(ViewState.INIT, (), misses, error)
    return PoolView(ViewState.STALE, view.nodes, misses, error)


def to_record(view: PoolView) -> dict[str, object]:
    """The view as guard.json and `status --json` show it."""
    return {
        "state": view.state.value,
        "primary": view.primary(),
        "backends_up": view.backends_up(),
        "misses": view.misses,
        "error": view.error,
        "nodes": [node._asdict() for node in view.nodes],
    }


def from_record(record: object) -> PoolView:
    """The view the guard wrote into guard.json (untrusted: any JSON); OFF if unreadable."""
    if not isinstance(record, dict):
        return PoolView(ViewState.OFF)
    try:
        state = ViewState(str(record.get("state")))
        nodes = tuple(
            BackendNode(**{k: v for k, v in node.items() if k in BackendNode._fields})
            for node in record.get("nodes") or ()
        )
        misses, error = record.get("misses", 0), record.get("error", "")
        if not all(isinstance(n.node_id, int) and isinstance(n.status, str)
                   and isinstance(n.role, str) for n in nodes):  # fmt: skip
            raise TypeError("not a node")
        if not isinstance(misses, int) or not isinstance(error, str):
            raise TypeError("not a view")
    except (ValueError, TypeError, AttributeError):
        return PoolView(ViewState.OFF)
    return PoolView(state, nodes, misses, error)
