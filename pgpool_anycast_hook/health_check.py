"""`check`: a one-shot probe of pgpool for monitoring, and, standalone, its rise/fall.

The probe is pgpool_probe.probe_once: pgpool must answer an SSLRequest within
check_timeout (a plain connect() proves nothing about a hung pgpool). With
check_query, `SELECT 1` through pgpool's socket must also succeed (libpq, as psql
would connect: its PG* environment chooses user and database).

In the guarded mode the guard owns the addresses and probes pgpool itself, so
`check` only probes and reports: it never touches an address or check.json and
needs no capability, and it always writes its line (monitoring reads it).

In the standalone mode, for an administrator's own timer or cron job, it also
acts: counts are kept in <state_dir>/check.json, written atomically, and the
addresses are withdrawn after check_fall failures and follow the desired state
again after check_rise answers. The transition is check_state.next_state (pure);
this module only does the I/O around it.
"""

import json
import os
import time

from pgpool_anycast_hook import announcement
from pgpool_anycast_hook.check_state import Action, CheckState, Health, action_for, next_state
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.errors import file_errors
from pgpool_anycast_hook.hold import read_hold
from pgpool_anycast_hook.observation import observe, refresh
from pgpool_anycast_hook.pgpool_conf import read_pgpool_conf
from pgpool_anycast_hook.pgpool_probe import probe_once
from pgpool_anycast_hook.run_lock import run_lock, withdrawal_mark
from pgpool_anycast_hook.run_log import SEVERITY_INFO, SEVERITY_WARNING, RunLog
from pgpool_anycast_hook.safe_files import read_regular, replace_file

STATE_FILE = "check.json"
MAX_STATE_BYTES = 4096


def state_path(config: Config) -> str:
    return os.path.join(config.state_dir, STATE_FILE)


def load_state(path: str) -> CheckState:
    """The saved state; INIT when absent, unreadable or garbled (counting starts again)."""
    try:
        data = json.loads(read_regular(path, MAX_STATE_BYTES))
        count = data["count"]
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
            return CheckState()
        return CheckState(Health(data["state"]), count)
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return CheckState()


def save_state(path: str, state: CheckState) -> None:
    data = {"state": state.health.value, "count": state.streak,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    with file_errors("write the check state"):
        replace_file(path, (json.dumps(data) + "\n").encode(), 0o644)


def acts_on_addresses(config: Config) -> bool:
    """Whether `check` may change addresses: only standalone; the guard owns them otherwise."""
    return config.mode != "guarded"


def run_probe_only(config: Config, log: RunLog) -> int:
    """The guarded mode's `check`: probe, write the line, exit 0 if pgpool answered, else 1.
    With serve = "postgresql" the probe is the guard's question to PostgreSQL, once."""
    if config.serve == "postgresql":
        from pgpool_anycast_hook.guard_role import ask_once

        role, detail, latency = ask_once(config, config.check_timeout)
        code = 0 if role is not None else 1
        log.set(mode=config.mode, serve=config.serve, probe="failed" if role is None else "ok",
                role=role or "unknown", detail=detail, latency_ms=round(latency * 1000, 1),
                changed="none")  # fmt: skip
        severity = SEVERITY_INFO if role is not None else SEVERITY_WARNING
        log.emit(severity, result="ok" if role is not None else "unhealthy", exit=code)
        return code
    settings = read_pgpool_conf(config.pgpool_conf)
    result = probe_once(settings, config.check_timeout, config.check_query)
    code = 0 if result.ok else 1
    log.set(mode=config.mode, probe="ok" if result.ok else "failed", detail=result.detail,
            latency_ms=round(result.latency * 1000, 1), changed="none")  # fmt: skip
    severity = SEVERITY_INFO if result.ok else SEVERITY_WARNING
    log.emit(severity, result="ok" if result.ok else "unhealthy", exit=code)
    return code


def run_check(config: Config, dry_run: bool, log: RunLog) -> int:
    """Exit 0 when pgpool answered (or, standalone, the hold is set), DRIFT (1) when not."""
    if not acts_on_addresses(config):
        return run_probe_only(config, log)
    if not config.addresses:
        log.set(decision="nothing", reason="no addresses configured", changed="none")
        return 0
    mark = withdrawal_mark(config.state_dir)
    settings = read_pgpool_conf(config.pgpool_conf)
    # The probes, never under the run lock (run_lock.py):
    result = probe_once(settings, config.check_timeout, config.check_query)
    seen = observe(config, settings, probed=result) if result.ok else None
    path = state_path(config)
    with run_lock(config.lock_path, config.lock_timeout):
        previous = load_state(path)
        hold = read_hold(config.state_dir) is not None
        state = next_state(previous, result.ok, hold, config.check_rise, config.check_fall)
        action = action_for(state)
        log.set(probe="ok" if result.ok else "failed", detail=result.detail,
                state=f"{state.health.value}:{state.streak}")  # fmt: skip
        if state.health is not previous.health:
            log.set(transition=f"{previous.health.value}->{state.health.value}")
        changed: list[str] = []
        if action is Action.WITHDRAW:
            changed = announcement.withdraw(config, dry_run)
        elif action is Action.FOLLOW_DESIRED and seen is not None:
            desire = refresh(config, seen).desire(config)
            log.set(decision="announce" if desire.present else "withdraw", reason=desire.reason)
            changed = announcement.follow(config, desire.present, dry_run, mark, log)
        log.set(changed=announcement.changed_field(changed))
        if dry_run:
            log.set(result="dry-run")
        else:
            save_state(path, state)
            if not result.ok:
                log.set(result="unhealthy")
    return 0 if result.ok or state.health is Health.DISABLED else 1
