"""Everything `status`, `reconcile` and `check` look at, read once per run.

Reading is side-effect free; deciding is policy.py; applying is announcement.py.
`observe` probes pgpool (not with serve = "postgresql": there the guard's report of
PostgreSQL's role counts) and must run outside the run lock; `refresh` re-reads only
what is cheap, for use under it.
"""

import json
from typing import Any, NamedTuple

from pgpool_anycast_hook import announcement, pgpool_process, pgpool_status
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.hold import Hold, read_hold
from pgpool_anycast_hook.pgpool_conf import PgpoolSettings, read_pgpool_conf
from pgpool_anycast_hook.pgpool_probe import ProbeResult
from pgpool_anycast_hook.policy import Facts, Verdict, needs_view, verdict
from pgpool_anycast_hook.pool_view import PoolView, ViewState, from_record
from pgpool_anycast_hook.role_view import RoleState, RoleView
from pgpool_anycast_hook.role_view import from_record as role_from_record
from pgpool_anycast_hook.safe_files import read_regular


class Observation(NamedTuple):
    settings: PgpoolSettings
    pid: int | None
    alive: bool
    listening: pgpool_process.Endpoint | None
    status_file: str
    status: pgpool_status.PgpoolStatus
    hold: Hold | None
    presence: announcement.Presence
    view: PoolView = PoolView(ViewState.OFF)  # pgpool's own, as the guard last reported it
    role: RoleView = RoleView(RoleState.OFF)  # serve = "postgresql": as the guard reported it

    def facts(self, config: Config) -> Facts:
        node = config.primary_node_id
        return Facts(
            addresses_configured=bool(config.addresses),
            hold=self.hold is not None,
            pgpool_alive=self.alive,
            pgpool_listening=self.listening is not None,
            primary_usable=node is not None and self.status.node_usable(node),
            primary_node_id=node,
            announce_when=config.announce_when,
            view=self.view,
            serve=config.serve,
            role=self.role,
        )

    def desire(self, config: Config) -> Verdict:
        return verdict(self.facts(config))


def observe(
    config: Config, settings: PgpoolSettings | None = None, probed: ProbeResult | None = None
) -> Observation:
    """Everything, the probe (an SSLRequest to pgpool) included; changes nothing.

    `probed`: the answer of a probe the caller has just made (check), not repeated.
    """
    settings = settings or read_pgpool_conf(config.pgpool_conf)
    pid = pgpool_process.read_pid_file(settings.pid_file)
    alive = pgpool_process.pgpool_alive(pid)
    if config.serve == "postgresql":  # no pgpool is followed here: the guard's role decides
        listening = None
    elif probed is not None:
        listening = probed.endpoint if alive and probed.ok else None
    else:
        listening = pgpool_process.listening(settings, config.check_timeout) if alive else None
    return _cheap_facts(
        config,
        Observation(
            settings=settings,
            pid=pid,
            alive=alive,
            listening=listening,
            status_file=config.status_file or settings.status_file,
            status=pgpool_status.parse_status(None, 0),
            hold=None,
            presence=announcement.actual(config),
        ),
    )


def refresh(config: Config, seen: Observation) -> Observation:
    """Read again what is cheap (pid, pgpool_status, hold), under the run lock.

    The probe's answer is kept: no probe runs under the lock (run_lock.py). A pgpool
    that died since the probe, or a primary pgpool has marked down since, is seen.
    """
    pid = pgpool_process.read_pid_file(seen.settings.pid_file)
    alive = pid == seen.pid and pgpool_process.pgpool_alive(pid)
    return _cheap_facts(
        config, seen._replace(alive=alive, listening=seen.listening if alive else None)
    )


def _cheap_facts(config: Config, seen: Observation) -> Observation:
    backends = max(seen.settings.num_backends, (config.primary_node_id or 0) + 1)
    return seen._replace(
        status=pgpool_status.read_status_file(seen.status_file, backends),
        hold=read_hold(config.state_dir),
        view=guard_view(config),
        role=guard_role(config),
    )


def guard_record(config: Config) -> dict[str, Any] | None:
    """What the guard last wrote into guard.json beside its socket (untrusted), if any."""
    try:
        data = json.loads(read_regular(config.guard_state_path, 65536))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def guard_view(config: Config) -> PoolView:
    """pgpool's view as the guard reported it, where the policy needs it (guarded mode)."""
    if config.mode != "guarded" or not needs_view(config.primary_node_id, config.announce_when):
        return PoolView(ViewState.OFF)
    record = guard_record(config)
    return from_record(record.get("view") if record else None)


def guard_role(config: Config) -> RoleView:
    """serve = "postgresql": the local server's role as the guard reported it."""
    if config.serve != "postgresql":
        return RoleView(RoleState.OFF)
    record = guard_record(config)
    return role_from_record(record.get("role") if record else None)
