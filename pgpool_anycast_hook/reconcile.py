"""`reconcile`, `disable` and `enable`: make the addresses match the desired state.

`reconcile` runs at ExecStartPre (pgpool is not running yet, so leftovers of an
unclean stop are removed), by hand, and after `enable`. With serve = "postgresql"
it only ever withdraws (as the guard's last report, guard.json, and the hold say):
only the guard announces there, with a lease. It probes pgpool before it
takes the run lock and re-reads only cheap facts under it. `disable` writes the
maintenance hold first and then withdraws, so that no concurrent `add` can put the
addresses back in between (an add that overlaps takes them back, run_lock.py).
"""

import getpass
import os

from pgpool_anycast_hook import announcement
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.errors import file_errors
from pgpool_anycast_hook.hold import clear_hold, write_hold
from pgpool_anycast_hook.observation import observe, refresh
from pgpool_anycast_hook.run_lock import run_lock, withdrawal_mark
from pgpool_anycast_hook.run_log import RunLog


def reconcile(config: Config, dry_run: bool, log: RunLog, hold_lifted: bool = False) -> int:
    """Apply the desired state; `hold_lifted`: as if the hold were gone (enable --dry-run)."""
    if not config.addresses:
        log.set(decision="nothing", reason="no addresses configured", changed="none")
        return 0
    if config.serve == "postgresql":
        return _reconcile_postgresql(config, dry_run, log, hold_lifted)
    mark = withdrawal_mark(config.state_dir)
    seen = observe(config)  # the probe: never under the lock
    with run_lock(config.lock_path, config.lock_timeout):
        seen = refresh(config, seen)
        if hold_lifted:
            seen = seen._replace(hold=None)
        desire = seen.desire(config)
        log.set(
            pgpool="alive" if seen.alive else "down",
            listening=str(seen.listening) if seen.listening else "no",
            status=seen.status.summary(),
            hold="yes" if seen.hold else "no",
            decision="announce" if desire.present else "withdraw",
            reason=desire.reason,
        )
        changed = announcement.follow(config, desire.present, dry_run, mark, log)
        log.set(changed=announcement.changed_field(changed))
    if dry_run:
        log.set(result="dry-run")
    return 0


def _reconcile_postgresql(config: Config, dry_run: bool, log: RunLog, hold_lifted: bool) -> int:
    """serve = "postgresql": withdraw what the guard's last word (guard.json) and the hold
    say should be absent; announcing, with a lease, is the guard's alone."""
    with run_lock(config.lock_path, config.lock_timeout):
        seen = observe(config)  # probes nothing with serve = "postgresql"
        if hold_lifted:
            seen = seen._replace(hold=None)
        desire = seen.desire(config)
        log.set(serve="postgresql", role=seen.role.role() or seen.role.state.value,
                hold="yes" if seen.hold else "no",
                decision="leave-to-guard" if desire.present else "withdraw",
                reason=desire.reason)  # fmt: skip
        changed = [] if desire.present else announcement.withdraw(config, dry_run)
        log.set(changed=announcement.changed_field(changed))
    if dry_run:
        log.set(result="dry-run")
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return str(os.getuid())


def disable(config: Config, reason: str, dry_run: bool, log: RunLog) -> int:
    """Write the hold, then withdraw; like every withdrawal, without waiting for the lock."""
    log.set(reason=reason or "-")
    if dry_run:
        log.set(hold="would-set", result="dry-run")
    else:
        with file_errors("write the hold"):
            hold = write_hold(config.state_dir, reason, _user())
        log.set(hold="set", since=hold.since, by=hold.by)
    changed = announcement.withdraw(config, dry_run) if config.addresses else []
    log.set(changed=announcement.changed_field(changed))
    return 0


def enable(config: Config, dry_run: bool, log: RunLog) -> int:
    if dry_run:
        log.set(hold="would-clear")
    else:
        with run_lock(config.lock_path, config.lock_timeout), file_errors("remove the hold"):
            log.set(hold="cleared" if clear_hold(config.state_dir) else "was-not-set")
    hold_field = log.fields["hold"]
    code = reconcile(config, dry_run, log, hold_lifted=dry_run)
    log.set(hold=hold_field)
    return code
