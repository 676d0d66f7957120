"""What the guard knows of the local PostgreSQL's role (serve = "postgresql"), pure.

On a PostgreSQL host the guard announces the anycast address as the last resort,
with a worse metric than the balancers' (docs/examples/*-fallback.conf), and only
while this server is the primary: a standby would take writes it must refuse, a
stopped server none at all. The guard asks `SELECT pg_is_in_recovery(),
pg_postmaster_start_time()` over the unix socket once per interval
(guard_role.py); this module says what the answers mean over time:

- an answer says the role at once: false is PRIMARY, true is STANDBY (a demotion
  is seen on the first answer after it);
- an unanswered query (timeout, refused, the server starting or shutting down)
  keeps the last answer in force (STALE) for `limit` queries in a row, then the
  role is LOST, which withdraws; so a stopped PostgreSQL is withdrawn within
  `limit` x interval;
- the postmaster's start time tells a restarted server from the one a drain was
  made for (guard.py ends a drain on a new postmaster).

States:
- OFF: the guard does not ask (serve = "pgpool").
- INIT: no answer yet since the guard started.
- KNOWN: the last query was answered; `primary` says the role.
- STALE: fewer than `limit` queries in a row unanswered; the last answer holds.
- LOST: `limit` queries in a row unanswered; the role is unknown.
"""

from enum import StrEnum
from typing import NamedTuple

STATEMENT = "SELECT pg_is_in_recovery(), pg_postmaster_start_time()"


class RoleState(StrEnum):
    OFF = "OFF"
    INIT = "INIT"
    KNOWN = "KNOWN"
    STALE = "STALE"
    LOST = "LOST"


class RoleView(NamedTuple):
    state: RoleState = RoleState.INIT
    primary: bool | None = None  # the last answer: not in recovery (kept while STALE and LOST)
    started: str = ""  # the last answer's pg_postmaster_start_time(), as PostgreSQL wrote it
    misses: int = 0  # queries unanswered in a row
    error: str = ""  # why the last query went unanswered

    @property
    def in_force(self) -> bool:
        """Does the last answer still count?"""
        return self.state in (RoleState.KNOWN, RoleState.STALE)

    def is_primary(self) -> bool:
        """Is this server the primary, as far as an answer in force says?"""
        return self.in_force and self.primary is True

    def role(self) -> str | None:
        """ "primary" or "standby" while an answer is in force, else None."""
        if not self.in_force or self.primary is None:
            return None
        return "primary" if self.primary else "standby"


class RoleError(ValueError):
    """An answer that is not the one row of two columns the statement returns."""


def parse_answer(rows: tuple[tuple[str | None, ...], ...]) -> tuple[bool, str]:
    """(in recovery, postmaster start time) from the statement's rows, in libpq's text."""
    if len(rows) != 1 or len(rows[0]) != 2:
        raise RoleError(f"expected one row of two columns, got {len(rows)} row(s)")
    recovery, started = rows[0]
    if recovery not in ("t", "f"):
        raise RoleError(f"pg_is_in_recovery() answered {str(recovery)[:20]!r}")
    return recovery == "t", started or ""


def answered(view: RoleView, in_recovery: bool, started: str) -> RoleView:
    """An answer, whatever came before it (OFF stays OFF)."""
    if view.state is RoleState.OFF:
        return view
    return RoleView(RoleState.KNOWN, not in_recovery, started, 0, "")


def missed(view: RoleView, error: str, limit: int) -> RoleView:
    """One query unanswered: STALE, INIT, or LOST at `limit` in a row."""
    if view.state is RoleState.OFF:
        return view
    misses = view.misses + 1
    if misses >= limit:
        return view._replace(state=RoleState.LOST, misses=misses, error=error)
    if view.state is RoleState.INIT:
        return view._replace(misses=misses, error=error)
    return view._replace(state=RoleState.STALE, misses=misses, error=error)


def new_postmaster(view: RoleView, since: str) -> bool:
    """Does an answer in force come from another postmaster than the one started at `since`
    ("" when none was known: then any answer does)?"""
    return view.state is RoleState.KNOWN and (not since or view.started != since)


def to_record(view: RoleView) -> dict[str, object]:
    """The role as guard.json and `status --json` show it."""
    return {
        "state": view.state.value,
        "role": view.role(),
        "primary": view.primary,
        "started": view.started,
        "misses": view.misses,
        "error": view.error,
    }


def from_record(record: object) -> RoleView:
    """The role the guard wrote into guard.json (untrusted: any JSON); OFF if unreadable."""
    if not isinstance(record, dict):
        return RoleView(RoleState.OFF)
    try:
        state = RoleState(str(record.get("state")))
    except ValueError:
        return RoleView(RoleState.OFF)
    primary, started = record.get("primary"), record.get("started", "")
    misses, error = record.get("misses", 0), record.get("error", "")
    if primary is not None and not isinstance(primary, bool):
        return RoleView(RoleState.OFF)
    if not isinstance(started, str) or not isinstance(error, str):
        return RoleView(RoleState.OFF)
    if isinstance(misses, bool) or not isinstance(misses, int) or misses < 0:
        return RoleView(RoleState.OFF)
    return RoleView(state, primary, started, misses, error)
