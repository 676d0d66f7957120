"""Everything `status`, `reconcile` and `check` look at, read once per run.

Reading is side-effect free; deciding is desired_state.py; applying is announcement.py.
"""

from typing import NamedTuple

from pgpool_anycast_hook import announcement, pgpool_process, pgpool_status
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.desired_state import Desire, Facts, desired_presence
from pgpool_anycast_hook.hold import Hold, read_hold
from pgpool_anycast_hook.pgpool_conf import PgpoolSettings, read_pgpool_conf


class Observation(NamedTuple):
    settings: PgpoolSettings
    pid: int | None
    alive: bool
    listening: pgpool_process.Endpoint | None
    status_file: str
    status: pgpool_status.PgpoolStatus
    hold: Hold | None
    presence: announcement.Presence

    def facts(self, config: Config) -> Facts:
        return Facts(
            addresses_configured=bool(config.addresses),
            hold=self.hold is not None,
            pgpool_alive=self.alive,
            pgpool_listening=self.listening is not None,
            primary_usable=self.status.node_usable(config.primary_node_id),
            primary_node_id=config.primary_node_id,
        )

    def desire(self, config: Config) -> Desire:
        return desired_presence(self.facts(config))


def observe(config: Config) -> Observation:
    settings = read_pgpool_conf(config.pgpool_conf)
    pid = pgpool_process.read_pid_file(settings.pid_file)
    alive = pgpool_process.pgpool_alive(pid)
    listening = pgpool_process.listening(settings, config.check_timeout) if alive else None
    status_file = config.status_file or settings.status_file
    backends = max(settings.num_backends, config.primary_node_id + 1)
    status = pgpool_status.read_status_file(status_file, backends)
    return Observation(
        settings=settings,
        pid=pid,
        alive=alive,
        listening=listening,
        status_file=status_file,
        status=status,
        hold=read_hold(config.state_dir),
        presence=announcement.actual(config),
    )
