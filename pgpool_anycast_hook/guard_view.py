"""The guard's question to pgpool itself: `SHOW POOL_NODES`, once per interval, never blocking.

pgpool knows which backend is the primary after a promotion, and which backends it
balances reads to; pgpool_status knows neither. So, when the policy needs it
(primary_node_id = "auto", announce_when = "any-backend") or query_pool_nodes asks
for it, the guard keeps one query in flight at most, through pgpool's unix socket
with libpq (pgpool_probe.QueryProbe), bounded by pool_nodes_timeout. What the
answers mean over time (a query unanswered during a failover is not an outage yet)
is pool_view.py's, pure.

QueryFollower is the machinery both of the guard's continuous questions share (this
one, and PostgreSQL's role in guard_role.py): one QueryProbe in flight at most,
registered with the guard's poller, its answer counted by the subclass.
"""

import contextlib
import select
from typing import Generic, TypeVar

from pgpool_anycast_hook import policy
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.errors import ConfigError
from pgpool_anycast_hook.pgpool_conf import PgpoolSettings
from pgpool_anycast_hook.pgpool_probe import QueryAnswer, QueryProbe, conninfo
from pgpool_anycast_hook.pool_nodes import PoolNodesError, parse_pool_nodes
from pgpool_anycast_hook.pool_view import PoolView, ViewState, answered, missed

State = TypeVar("State")

STATEMENT = "SHOW POOL_NODES"
# pgpool refuses every new connection with this once all its backends are down (4.1-4.7):
# that is an answer, not a miss (tests/data/pool_nodes/pgpool-*-all-down.json).
ALL_DOWN = "all backend nodes are down"


class QueryFollower(Generic[State]):
    """One statement asked again and again, never blocking; `view` is what the answers mean."""

    statement = ""

    def __init__(self, poller: select.poll, view: State) -> None:
        self.poller = poller
        self.view = view
        self.query: QueryProbe | None = None
        self.fd = -1  # the descriptor registered for the query in flight
        self.answered_started: float | None = None  # when the last answered query began
        self.latency: float | None = None  # of the last answer, seconds
        self._conninfo = ""
        self._timeout = 0.25
        self._limit = 1

    def asking(self) -> bool:
        """Is a query to be sent at all? (The subclass's configuration says.)"""
        raise NotImplementedError

    def _counted(self, result: QueryAnswer, started: float) -> State:
        """The view after `result` of a query that began at `started`."""
        raise NotImplementedError

    def start(self, now: float) -> State | None:
        """A query, unless none is asked for or one is still in flight; as `poke`."""
        if not self.asking() or self.query is not None:
            return None
        self.query = QueryProbe(self._conninfo, self.statement, self._timeout, now)
        return self.poke(now)  # a step now: it may have failed already (no socket to wait on)

    def owns(self, fd: int) -> bool:
        return self.query is not None and fd == self.fd

    def deadline(self) -> float | None:
        return None if self.query is None else self.query.deadline

    def poke(self, now: float, expire_only: bool = False) -> State | None:
        """Let the query take a step; the view before it, if the query ended now."""
        if self.query is None:
            return None
        result = self.query.expire(now) if expire_only else self.query.advance(now)
        if result is None:
            self._register()
            return None
        started = self.query.started
        self.cancel()
        before = self.view
        self.view = self._counted(result, started)
        return before

    def cancel(self) -> None:
        """Drop the query in flight, if any (its answer would come too late to count)."""
        self._unregister()
        if self.query is not None:
            self.query.close()
            self.query = None

    def _register(self) -> None:
        self._unregister()
        assert self.query is not None
        fd = self.query.fileno()
        if fd >= 0:
            self.poller.register(fd, self.query.events())
            self.fd = fd

    def _unregister(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(self.fd)
            self.fd = -1


def import_psycopg(what: str) -> None:
    """Import libpq's binding now, once, not inside the loop's first tick; ConfigError
    naming `what` needs it when it cannot be imported."""
    try:
        import psycopg.pq  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"{what} needs python3-psycopg: {error}") from None


class ViewFollower(QueryFollower[PoolView]):
    statement = STATEMENT

    def __init__(self, poller: select.poll) -> None:
        super().__init__(poller, PoolView(ViewState.OFF))

    def asking(self) -> bool:
        return self.view.state is not ViewState.OFF

    def configure(self, config: Config, settings: PgpoolSettings) -> None:
        """(Re)read what to ask and whether to ask at all; at start and on reload.
        ConfigError when the view is asked for and psycopg cannot be imported."""
        wanted = config.query_pool_nodes or policy.needs_view(
            config.primary_node_id, config.announce_when
        )
        self._conninfo = conninfo(
            settings,
            user=config.pgpool_user,
            dbname=config.pgpool_database,
            passfile=config.pgpool_passfile,
            service=config.pgpool_service,
        )
        self._timeout, self._limit = config.pool_nodes_timeout, config.pool_nodes_misses
        if not wanted:
            self.cancel()
            self.view = PoolView(ViewState.OFF)
        elif self.view.state is ViewState.OFF:
            import_psycopg("pgpool's view (SHOW POOL_NODES)")
            self.view = PoolView(ViewState.INIT)

    def forget(self) -> None:
        """pgpool went away: its last answer says nothing about the next pgpool."""
        self.cancel()
        if self.view.state is not ViewState.OFF:
            self.view = PoolView(ViewState.INIT)

    def _counted(self, result: QueryAnswer, started: float) -> PoolView:
        if not result.ok and ALL_DOWN in result.detail:  # an answer: no backend is up
            self.answered_started, self.latency = started, result.latency
            return answered(self.view, tuple(n._replace(status="down") for n in self.view.nodes))
        if not result.ok:
            return missed(self.view, result.detail, self._limit)
        try:
            nodes = parse_pool_nodes(result.columns, result.rows)
        except PoolNodesError as error:
            return missed(self.view, f"unexpected answer: {error}", self._limit)
        self.answered_started, self.latency = started, result.latency
        return answered(self.view, nodes)
