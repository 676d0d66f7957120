"""`check`, for the timer: probe pgpool, count, and withdraw or announce again.

A plain connect() proves nothing about a hung pgpool: the kernel completes the
handshake into the listen backlog even when every pgpool process is stopped. So
the probe speaks the protocol: it sends an SSLRequest and needs pgpool's one-byte
answer ('S' or 'N') within check_timeout; a pgpool child must be running to send
it. With check_query, `psql -c 'SELECT 1'` must also succeed (libpq's PG*
environment chooses user and database; e.g. Environment= in the timer's service).

Counts are kept in <state_dir>/check.json, written atomically. The transition is
check_state.next_state (pure); this module only does the I/O around it.
"""

import json
import os
import socket
import struct
import subprocess
import time
from typing import NamedTuple

from pgpool_anycast_hook import announcement
from pgpool_anycast_hook.check_state import Action, CheckState, Health, action_for, next_state
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.errors import file_errors
from pgpool_anycast_hook.hold import read_hold
from pgpool_anycast_hook.observation import observe, refresh
from pgpool_anycast_hook.pgpool_conf import PgpoolSettings, read_pgpool_conf
from pgpool_anycast_hook.pgpool_process import Endpoint, endpoints
from pgpool_anycast_hook.run_lock import run_lock, withdrawal_mark
from pgpool_anycast_hook.run_log import RunLog
from pgpool_anycast_hook.safe_files import read_regular, replace_file

STATE_FILE = "check.json"
MAX_STATE_BYTES = 4096
SSL_REQUEST = struct.pack("!II", 8, 80877103)


class ProbeResult(NamedTuple):
    ok: bool
    detail: str


def ask_ssl(endpoint: Endpoint, timeout: float) -> ProbeResult:
    """Connect, send SSLRequest, and wait for pgpool's one-byte answer; all within `timeout`."""
    give_up = time.monotonic() + timeout
    try:
        with socket.socket(endpoint.family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(endpoint.address)
            sock.settimeout(max(0.01, give_up - time.monotonic()))
            sock.sendall(SSL_REQUEST)
            answer = sock.recv(1)
    except TimeoutError:
        return ProbeResult(False, f"no answer from {endpoint} within {timeout:g} s")
    except OSError as error:
        return ProbeResult(False, f"{endpoint}: {error.strerror or error}")
    if answer in (b"S", b"N"):
        return ProbeResult(True, f"{endpoint} answered")
    return ProbeResult(False, f"{endpoint}: unexpected answer {answer!r}")


def query(settings: PgpoolSettings, timeout: float) -> ProbeResult:
    command = ["psql", "-X", "-w", "-q", "-A", "-t", "-h", settings.socket_dir,
               "-p", str(settings.port), "-c", "SELECT 1"]  # fmt: skip
    environment = dict(os.environ, PGCONNECT_TIMEOUT=str(max(1, int(timeout))))
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=environment, check=False
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"SELECT 1 did not finish within {timeout:g} s")
    except OSError as error:
        return ProbeResult(False, f"cannot run psql: {error.strerror}")
    if done.returncode != 0 or done.stdout.strip() != "1":
        return ProbeResult(False, f"SELECT 1 failed: {done.stderr.strip()[:200]}")
    return ProbeResult(True, "SELECT 1 answered")


def probe(settings: PgpoolSettings, timeout: float, with_query: bool) -> ProbeResult:
    """The unix socket first, then TCP (whichever answers)."""
    result = ProbeResult(False, "no endpoint")
    for endpoint in endpoints(settings):
        result = ask_ssl(endpoint, timeout)
        if result.ok:
            break
    if result.ok and with_query:
        return query(settings, timeout)
    return result


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


def run_check(config: Config, dry_run: bool, log: RunLog) -> int:
    """Exit 0 when pgpool answered (or the hold is set), DRIFT (1) when it did not."""
    if not config.addresses:
        log.set(decision="nothing", reason="no addresses configured", changed="none")
        return 0
    mark = withdrawal_mark(config.state_dir)
    settings = read_pgpool_conf(config.pgpool_conf)
    # The probes, never under the run lock (run_lock.py):
    result = probe(settings, config.check_timeout, config.check_query)
    seen = observe(config, settings) if result.ok else None
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
