"""The guard's question to the local PostgreSQL (serve = "postgresql"), never blocking.

On a PostgreSQL host the guard follows no pgpool: once per interval it asks the
server, over its unix socket with libpq (pgpool_probe.QueryProbe, through
guard_view.QueryFollower, the same machinery as SHOW POOL_NODES), whether it is in
recovery, bounded by postgresql_timeout. What the answers mean over time (a miss
is not a loss of the role until postgresql_misses in a row) is role_view.py's,
pure; whether to announce is policy.verdict's.
"""

import select

from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.guard_view import QueryFollower, import_psycopg
from pgpool_anycast_hook.pgpool_probe import QueryAnswer, QueryProbe, drive, libpq_conninfo
from pgpool_anycast_hook.role_view import (
    STATEMENT,
    RoleError,
    RoleState,
    RoleView,
    answered,
    missed,
    parse_answer,
)

POSTGRESQL = "postgresql"


def role_conninfo(config: Config) -> str:
    """libpq's connection string for the local PostgreSQL: its unix socket only."""
    return libpq_conninfo(
        config.postgresql_socket_dir,
        str(config.postgresql_port),
        user=config.postgresql_user,
        dbname=config.postgresql_database,
        passfile=config.postgresql_passfile,
    )


class RoleFollower(QueryFollower[RoleView]):
    statement = STATEMENT

    def __init__(self, poller: select.poll) -> None:
        super().__init__(poller, RoleView(RoleState.OFF))

    def asking(self) -> bool:
        return self.view.state is not RoleState.OFF

    def configure(self, config: Config) -> None:
        """(Re)read whom to ask, and whether; ConfigError when psycopg is missing."""
        self._conninfo = role_conninfo(config)
        self._timeout, self._limit = config.postgresql_timeout, config.postgresql_misses
        if config.serve != POSTGRESQL:
            self.cancel()
            self.view = RoleView(RoleState.OFF)
        elif self.view.state is RoleState.OFF:
            import_psycopg('serve = "postgresql" (SELECT pg_is_in_recovery())')
            self.view = RoleView(RoleState.INIT)

    def _counted(self, result: QueryAnswer, started: float) -> RoleView:
        if not result.ok:
            return missed(self.view, result.detail, self._limit)
        try:
            in_recovery, since = parse_answer(result.rows)
        except RoleError as error:
            return missed(self.view, f"unexpected answer: {error}", self._limit)
        self.answered_started, self.latency = started, result.latency
        return answered(self.view, in_recovery, since)


def ask_once(config: Config, timeout: float) -> tuple[str | None, str, float]:
    """The same question once, for `check`: (role or None, detail, latency in seconds)."""
    answer = drive(QueryProbe(role_conninfo(config), STATEMENT, timeout))
    if not answer.ok:
        return None, answer.detail, answer.latency
    try:
        in_recovery, since = parse_answer(answer.rows)
    except RoleError as error:
        return None, f"unexpected answer: {error}", answer.latency
    role = "standby" if in_recovery else "primary"
    return role, f"PostgreSQL answered: {role} (started {since})", answer.latency
