"""The guard (`pgpool-anycast-hook guard`), live: real netlink in a namespace, real processes.

Each test runs the guard in the background inside its own network namespace
(`ip netns exec NS HOOK --config CFG guard`) with short timings (interval 0.2 s,
lease 3 s, hold-down 1.5 s, probe timeout 0.5 s, rise 1, fall 2), and a stand-in for
pgpool: a process of postgres named `pgpool` (prctl PR_SET_NAME), with its pid file,
answering every SSLRequest with `N` on `<socket_dir>/.s.PGSQL.<port>`. The kernel is
read with `ip -j -n NS addr show dev lo`, independently of the code under test; the
guard's key=value lines are collected from a syslog socket the test binds.

Every process a test starts is stopped by its PID in a finally block, every wait is
bounded in count and in time, and nothing here is mocked.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.netns.conftest import HOOK, require_root
from tests.netns.stand_ins import ANSWERING_PGPOOL

pytestmark = pytest.mark.netns

ANYCAST = "198.18.2.0/32"
OTHER = "198.18.2.7/32"
PORT = 9999
INTERVAL, LEASE, HOLD_DOWN, TIMEOUT, RISE, FALL = 0.2, 3.0, 1.5, 0.5, 1, 2
FOREVER = 4294967295  # valid_life_time of an address without a lease
AS_POSTGRES = ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups")
WITH_NET_ADMIN = ("--inh-caps", "+net_admin", "--ambient-caps", "+net_admin")
AS_NOBODY = ("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups")
CACHE_ENV = "PGPOOL_ANYCAST_HOOK_CACHE_DIR"
POLL = 0.02  # seconds between two looks at the kernel
START_BOUND = 10.0  # a guard (python + pyroute2) or a fake pgpool is up within this
PYTHON = "/usr/bin/python3"  # the fake pgpool's interpreter, runnable by postgres

# -- the kernel ------------------------------------------------------------------------


def lo_addresses(netns: str) -> dict[str, dict[str, object]]:
    """address/prefix -> its addr_info entry (with valid_life_time), from `ip -j`."""
    out = subprocess.run(
        ["ip", "-j", "-n", netns, "addr", "show", "dev", "lo"],
        check=True, capture_output=True, text=True, timeout=10,
    ).stdout  # fmt: skip
    return {
        f"{a['local']}/{a['prefixlen']}": a
        for link in json.loads(out)
        for a in link.get("addr_info", [])
    }


def present(netns: str, address: str = ANYCAST) -> bool:
    return address in lo_addresses(netns)


def valid_lft(netns: str, address: str = ANYCAST) -> int | None:
    entry = lo_addresses(netns).get(address)
    return None if entry is None else int(entry["valid_life_time"])  # type: ignore[call-overload]


def wait_until(check: Callable[[], bool], bound: float, step: float = POLL) -> float | None:
    """Seconds until `check()` held (measured after the check that held), or None."""
    started = time.monotonic()
    for _ in range(int(bound / step) + 50):
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > bound:
            return None
        time.sleep(step)
    return None


def holds_throughout(check: Callable[[], bool], seconds: float, step: float = POLL) -> bool:
    """Does `check()` hold at every look for `seconds`?"""
    started = time.monotonic()
    for _ in range(int(seconds / step) + 50):
        if not check():
            return False
        if time.monotonic() - started >= seconds:
            return True
        time.sleep(step)
    return True


class Sampler:
    """Looks at the kernel every POLL seconds in a thread: (monotonic time, present)."""

    def __init__(self, netns: str, address: str = ANYCAST) -> None:
        self.netns, self.address = netns, address
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(100_000):  # bounded: at most ~40 min at POLL
            if self._stop.is_set():
                return
            seen = present(self.netns, self.address)
            self.samples.append((time.monotonic(), seen))  # after the look: a safe upper bound
            time.sleep(POLL)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def changes(self) -> list[tuple[float, bool]]:
        """(time of the first look that saw it, new value) for every change."""
        found: list[tuple[float, bool]] = []
        last: bool | None = None
        for at, seen in self.samples:
            if seen != last:
                found.append((at, seen))
                last = seen
        return found


# -- the guard's lines -----------------------------------------------------------------

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def fields_of(line: str) -> dict[str, str]:
    return {k: v[1:-1] if v.startswith('"') else v for k, v in _FIELD.findall(line)}


class Syslog:
    """A syslog socket (AF_UNIX datagrams) read by a thread: (monotonic time, line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.settimeout(0.1)
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for _ in range(10_000_000):
            if self._stop.is_set():
                return
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            text = data.decode(errors="replace")
            self.lines.append((time.monotonic(), text.split("]: ", 1)[-1]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def events(self, since: float = 0.0, **match: str) -> list[tuple[float, dict[str, str]]]:
        """The guard's lines after `since` whose fields include all of `match`."""
        found = []
        for at, line in list(self.lines):
            parsed = fields_of(line)
            if (
                at >= since
                and parsed.get("action") == "guard"
                and all(parsed.get(k) == v for k, v in match.items())
            ):
                found.append((at, parsed))
        return found

    def wait_for(self, bound: float, since: float = 0.0, **match: str) -> dict[str, str] | None:
        found: list[dict[str, str]] = []

        def seen() -> bool:
            found[:] = [f for _, f in self.events(since, **match)]
            return bool(found)

        return found[0] if wait_until(seen, bound) is not None else None

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines[-60:])


# -- processes --------------------------------------------------------------------------


def read_line(process: subprocess.Popen[str], bound: float) -> str:
    """One line of the process's stdout, waiting at most `bound` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], bound)
    return process.stdout.readline().strip() if ready else ""


def stop_process(process: subprocess.Popen[str] | None, gently: bool = True) -> int | None:
    """End a process we started, by its PID: SIGCONT, SIGTERM, then SIGKILL; bounded."""
    if process is None:
        return None
    if process.poll() is None:
        for signum in (signal.SIGCONT, signal.SIGTERM) if gently else (signal.SIGKILL,):
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                break
        try:
            return process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
    return process.wait(timeout=10)


class Bed:
    """The namespace, the files and the processes of one test.

    root/          root 0755: config.toml, pgpool.conf, pgpool_status, log.sock
    root/run/      postgres 0755: the fake pgpool's pid file and unix socket
    root/guard/    the guard's socket and guard.json (postgres's for a postgres guard)
    root/state/    state_dir (0777); root/cache/: the configuration cache (root's)
    """

    def __init__(self, netns: str, root: Path) -> None:
        self.netns, self.root = netns, root
        pg = pwd.getpwnam("postgres")
        self.run_dir = root / "run"
        self.guard_dir = root / "guard"
        self.state_dir = root / "state"
        self.cache_dir = root / "cache"
        for directory in (self.run_dir, self.guard_dir, self.state_dir, self.cache_dir):
            directory.mkdir(mode=0o755)
        os.chown(self.run_dir, pg.pw_uid, pg.pw_gid)
        os.chmod(self.state_dir, 0o777)
        self.config = root / "config.toml"
        self.pgpool_conf = root / "pgpool.conf"
        self.status_file = root / "pgpool_status"
        self.pid_file = self.run_dir / "pgpool.pid"
        self.socket = self.guard_dir / "guard.sock"
        self.unix_socket = self.run_dir / f".s.PGSQL.{PORT}"
        self.status_file.write_text("up\nup\n")
        self.pgpool_conf.write_text(
            f"port = {PORT}\n"
            "listen_addresses = 'localhost'\n"
            f"socket_dir = '{self.run_dir}'\n"
            f"unix_socket_directories = '{self.run_dir}'\n"
            f"pid_file_name = '{self.pid_file}'\n"
            "backend_port0 = 5432\nbackend_port1 = 5432\n"
        )
        self.syslog = Syslog(root / "log.sock")
        self.guards: list[subprocess.Popen[str]] = []
        self.pgpools: list[subprocess.Popen[str]] = []
        self.guard_logs: list[Path] = []
        self.write_config()

    def write_config(self, **settings: object) -> None:
        base: dict[str, object] = {
            "mode": "guarded",
            "addresses": [ANYCAST],
            "guard_socket": str(self.socket),
            "guard_clients": ["postgres"],
            "interval": INTERVAL,
            "lease": LEASE,
            "hold_down": HOLD_DOWN,
            "check_timeout": TIMEOUT,
            "check_rise": RISE,
            "check_fall": FALL,
            "status_file": str(self.status_file),
            "state_dir": str(self.state_dir),
            "pgpool_conf": str(self.pgpool_conf),
            "syslog_address": str(self.syslog.path),
            "deadline": 5.0,
            "metrics_file": "",  # tests that want metrics give their own file
        }
        base.update(settings)
        text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in base.items())
        temporary = self.config.with_suffix(".tmp")
        temporary.write_text(text)
        os.chmod(temporary, 0o644)
        os.rename(temporary, self.config)  # a new inode: no reader sees half a file

    def argv(
        self, *args: str, prefix: tuple[str, ...] = (), python: tuple[str, ...] = ()
    ) -> list[str]:
        program = [*python, "-m", "pgpool_anycast_hook"] if python else [HOOK]
        return ["ip", "netns", "exec", self.netns, "env", f"{CACHE_ENV}={self.cache_dir}",
                *prefix, *program, "--config", str(self.config), *args]  # fmt: skip

    # -- the guard ---------------------------------------------------------------------

    def start_guard(self, as_postgres: bool = False) -> subprocess.Popen[str]:
        """Start a guard and wait (bounded) until it logged event=start."""
        prefix: tuple[str, ...] = (*AS_POSTGRES, *WITH_NET_ADMIN) if as_postgres else ()
        if as_postgres:  # its socket and guard.json go into a directory of its own user
            pg = pwd.getpwnam("postgres")
            os.chown(self.guard_dir, pg.pw_uid, pg.pw_gid)
        log_path = self.root / f"guard-{len(self.guard_logs)}.stderr"
        self.guard_logs.append(log_path)
        since = time.monotonic()
        with open(log_path, "w") as stderr:
            guard = subprocess.Popen(
                self.argv("guard", prefix=prefix),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                text=True, start_new_session=True,
            )  # fmt: skip
        self.guards.append(guard)
        started = self.syslog.wait_for(START_BOUND, since, event="start")
        assert started is not None, f"the guard did not start:\n{self.diagnostics()}"
        assert guard.poll() is None, f"the guard exited {guard.returncode}:\n{self.diagnostics()}"
        return guard

    def guard_stderr(self) -> str:
        return "\n".join(
            f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}"
            for p in self.guard_logs
            if p.exists()
        )

    def diagnostics(self) -> str:
        kernel = lo_addresses(self.netns)
        return f"{self.guard_stderr()}\n--- syslog:\n{self.syslog.text()}\n--- lo: {kernel}"

    # -- the fake pgpool ---------------------------------------------------------------

    def start_pgpool(self) -> subprocess.Popen[str]:
        """A fake pgpool of postgres, listening and answering, its pid file written."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *AS_POSTGRES, PYTHON, "-c", ANSWERING_PGPOOL,
             str(self.pid_file), str(self.unix_socket)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.pgpools.append(process)
        line = read_line(process, START_BOUND)
        assert line == "ready", f"the fake pgpool did not come up: {line!r}"
        return process

    def kill_pgpool(self, process: subprocess.Popen[str], signum: int = signal.SIGKILL) -> None:
        os.kill(process.pid, signum)
        process.wait(timeout=10)  # reaped at once, as systemd reaps pgpool

    def run(self, *args: str, prefix: tuple[str, ...] = (), bound: float = 15.0,
            python: tuple[str, ...] = ()) -> Run:  # fmt: skip
        started = time.monotonic()
        process = subprocess.Popen(
            self.argv(*args, prefix=prefix, python=python),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = process.communicate(timeout=bound)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate(timeout=10)
            code = None
        return Run(code, out, err, time.monotonic() - started)

    def close(self) -> None:
        for guard in self.guards:
            stop_process(guard)
        for pgpool in self.pgpools:
            stop_process(pgpool, gently=False)
        self.syslog.close()


class Run(NamedTuple):
    returncode: int | None  # None: killed after its bound
    stdout: str
    stderr: str
    elapsed: float

    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if not line.startswith("import time:")]


@pytest.fixture
def bed(netns: str) -> Iterator[Bed]:
    require_root()
    root = Path(tempfile.mkdtemp(prefix="pah-guard-", dir="/tmp"))
    os.chmod(root, 0o755)
    made = None
    try:
        made = Bed(netns, root)
        yield made
    finally:
        if made is not None:
            made.close()
        shutil.rmtree(root, ignore_errors=True)


def announced(bed: Bed, bound: float = 3.0) -> float:
    """Wait (bounded) until the address is on lo; the seconds it took."""
    took = wait_until(lambda: present(bed.netns), bound)
    assert took is not None, f"not announced within {bound} s:\n{bed.diagnostics()}"
    return took


def start_announced(
    bed: Bed, as_postgres: bool = False
) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    pgpool = bed.start_pgpool()
    guard = bed.start_guard(as_postgres)
    announced(bed, bound=INTERVAL + TIMEOUT + 3.0)
    return guard, pgpool


# -- 1. pidfd: pgpool's death withdraws at once -------------------------------------------


@pytest.mark.parametrize("user", ["root", "postgres"])
def test_announces_when_pgpool_answers_and_withdraws_at_once_when_it_dies(
    bed: Bed, user: str
) -> None:
    guard = bed.start_guard(as_postgres=user == "postgres")
    if user == "postgres":  # only an ambient CAP_NET_ADMIN, no root
        status = Path(f"/proc/{guard.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(pwd.getpwnam("postgres").pw_uid)] * 4
    # No pgpool yet: nothing is announced.
    assert holds_throughout(lambda: not present(bed.netns), 4 * INTERVAL), bed.diagnostics()
    pgpool = bed.start_pgpool()
    took = announced(bed, bound=INTERVAL + TIMEOUT + 3.0)
    assert bed.syslog.wait_for(2.0, event="pgpool-found", pgpool_pid=str(pgpool.pid)), (
        bed.diagnostics()
    )
    lft = valid_lft(bed.netns)
    assert lft is not None and lft != FOREVER and lft <= LEASE, lft
    assert took < INTERVAL + TIMEOUT + 3.0
    killed_at = time.monotonic()
    os.kill(pgpool.pid, signal.SIGKILL)
    gone = wait_until(lambda: not present(bed.netns), 1.0, step=0.005)
    pgpool.wait(timeout=10)
    assert gone is not None, f"still announced 1 s after kill -9:\n{bed.diagnostics()}"
    exited = bed.syslog.wait_for(2.0, killed_at, event="pgpool-exited")
    assert exited is not None and exited["pgpool_pid"] == str(pgpool.pid), bed.diagnostics()
    withdrawn = bed.syslog.wait_for(2.0, killed_at, transition="ANNOUNCED->WITHDRAWN")
    assert withdrawn is not None and f"-{ANYCAST}" in withdrawn["changed"], bed.diagnostics()
    # It stays withdrawn while pgpool is gone, and the guard keeps running.
    assert holds_throughout(lambda: not present(bed.netns), 1.0), bed.diagnostics()
    assert guard.poll() is None, bed.diagnostics()


def test_a_guard_that_cannot_bind_its_socket_says_where(bed: Bed) -> None:
    """postgres may not write root's socket directory: one clear line, a permission code."""
    run = bed.run("guard", prefix=(*AS_POSTGRES, *WITH_NET_ADMIN), bound=START_BOUND)
    assert run.returncode is not None and run.returncode != 0, run
    assert "Traceback" not in run.stderr and len(run.lines()) == 1, run.stderr
    assert str(bed.socket) in run.stderr, f"the error does not name the socket: {run.stderr}"
    assert run.returncode == 77, run


def test_pgpool_status_marking_the_primary_down_withdraws(bed: Bed) -> None:
    guard, _pgpool = start_announced(bed)
    bed.status_file.write_text("down\nup\n")
    gone = wait_until(lambda: not present(bed.netns), 2 * INTERVAL + 1.0)
    assert gone is not None, bed.diagnostics()
    assert holds_throughout(lambda: not present(bed.netns), 1.0), bed.diagnostics()
    up_at = time.monotonic()
    bed.status_file.write_text("up\nup\n")
    back = wait_until(lambda: present(bed.netns), HOLD_DOWN + INTERVAL + 2.0)
    assert back is not None, bed.diagnostics()
    assert time.monotonic() - up_at >= HOLD_DOWN
    assert guard.poll() is None


def test_a_guard_without_cap_net_admin_does_not_claim_the_address(bed: Bed) -> None:
    """The kernel refuses the guard's announcement: guard.json must not say ANNOUNCED."""
    pg = pwd.getpwnam("postgres")
    os.chown(bed.guard_dir, pg.pw_uid, pg.pw_gid)
    bed.start_pgpool()
    since = time.monotonic()
    log_path = bed.root / "guard-nocap.stderr"
    bed.guard_logs.append(log_path)
    with open(log_path, "w") as stderr:
        guard = subprocess.Popen(
            bed.argv("guard", prefix=AS_POSTGRES),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    bed.guards.append(guard)
    time.sleep(2.0)
    assert not present(bed.netns)
    state_file = bed.guard_dir / "guard.json"
    phase = json.loads(state_file.read_text())["phase"] if state_file.exists() else None
    lines = bed.syslog.events(since)
    assert guard.poll() == 77 or phase != "ANNOUNCED", (
        f"guard.json says {phase} with nothing on lo; {len(lines)} lines in 2 s:\n"
        f"{bed.diagnostics()}"
    )


def test_a_zombie_pgpool_is_not_followed(bed: Bed) -> None:
    """A pgpool killed but not yet reaped is dead: the guard must not follow it again."""
    guard, pgpool = start_announced(bed)
    killed_at = time.monotonic()
    os.kill(pgpool.pid, signal.SIGKILL)
    try:
        assert wait_until(lambda: not present(bed.netns), 1.0, step=0.005) is not None
        time.sleep(8 * INTERVAL)  # the zombie lingers: nobody reaps it yet
        assert Path(f"/proc/{pgpool.pid}/stat").read_text().split(") ")[1][0] == "Z"
    finally:
        pgpool.wait(timeout=10)
    found = bed.syslog.events(killed_at, event="pgpool-found")
    exited = bed.syslog.events(killed_at, event="pgpool-exited")
    assert (len(found), len(exited)) == (0, 1), (
        f"the guard followed the zombie {pgpool.pid} again {len(found)} times:\n{bed.diagnostics()}"
    )
    assert guard.poll() is None


def test_a_pgpool_of_another_network_namespace_is_not_followed(bed: Bed) -> None:
    """A pgpool of the same user elsewhere (a container's, another test's) serves other
    addresses: with no pid file to go by, the guard must not take it for its own."""
    other = f"{bed.netns}-x"
    subprocess.run(["ip", "netns", "add", other], check=True, timeout=10)
    elsewhere = bed.root / "elsewhere"
    elsewhere.mkdir()
    shutil.chown(elsewhere, "postgres", "postgres")
    stranger = None
    try:
        stranger = subprocess.Popen(
            ["ip", "netns", "exec", other, *AS_POSTGRES, PYTHON, "-c", ANSWERING_PGPOOL,
             str(elsewhere / "pgpool.pid"), str(elsewhere / f".s.PGSQL.{PORT}")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert read_line(stranger, START_BOUND) == "ready"
        since = time.monotonic()
        guard = bed.start_guard()
        time.sleep(6 * INTERVAL)
        assert not bed.syslog.events(since, event="pgpool-found"), bed.diagnostics()
        pgpool = bed.start_pgpool()  # its own pgpool, in its namespace: followed
        found = bed.syslog.wait_for(START_BOUND, since, event="pgpool-found")
        assert found is not None and found["pgpool_pid"] == str(pgpool.pid), bed.diagnostics()
        assert guard.poll() is None
    finally:
        stop_process(stranger, gently=False)
        subprocess.run(["ip", "netns", "del", other], check=False, timeout=10)


# -- 2. the probe: a stopped pgpool ------------------------------------------------------


def test_a_stopped_pgpool_is_withdrawn_and_comes_back_after_the_hold_down(bed: Bed) -> None:
    guard, pgpool = start_announced(bed)
    # fall probes, each started on a tick and failing at its timeout
    bound = FALL * (INTERVAL + TIMEOUT) + 1.0
    stopped_at = time.monotonic()
    os.kill(pgpool.pid, signal.SIGSTOP)
    try:
        gone = wait_until(lambda: not present(bed.netns), bound)
        assert gone is not None, f"still announced after {bound} s:\n{bed.diagnostics()}"
        assert gone >= (FALL - 1) * TIMEOUT, gone  # fall=2: one failure is not enough
        falling = bed.syslog.events(stopped_at, event="probe", probe="failed")
        assert falling, bed.diagnostics()
        # Still stopped: stays withdrawn.
        assert holds_throughout(lambda: not present(bed.netns), 1.0), bed.diagnostics()
    finally:
        continued_at = time.monotonic()
        os.kill(pgpool.pid, signal.SIGCONT)
    back = wait_until(lambda: present(bed.netns), HOLD_DOWN + RISE * (INTERVAL + TIMEOUT) + 2.0)
    assert back is not None, f"not back after SIGCONT:\n{bed.diagnostics()}"
    assert back >= HOLD_DOWN, f"announced {back:.2f} s after SIGCONT, before the hold-down"
    assert bed.syslog.events(continued_at, transition="WITHDRAWN->HOLDING_DOWN"), bed.diagnostics()
    # The address comes first and its line a moment later: wait for the line (bounded).
    line = bed.syslog.wait_for(2.0, continued_at, transition="HOLDING_DOWN->ANNOUNCED")
    assert line is not None, bed.diagnostics()
    assert guard.poll() is None


# -- 3. leases: the guard's own failure fails closed --------------------------------------


def test_a_killed_guard_leaves_the_address_only_until_its_lease_ends(bed: Bed) -> None:
    guard, _pgpool = start_announced(bed)
    lft = valid_lft(bed.netns)
    assert lft is not None and lft != FOREVER and lft <= LEASE, f"valid_lft {lft}: no lease"
    # Renewed on every tick: after more than a second it is still the full lease.
    time.sleep(1.5)
    assert valid_lft(bed.netns) == int(LEASE), lo_addresses(bed.netns)
    killed_at = time.monotonic()
    os.kill(guard.pid, signal.SIGKILL)
    guard.wait(timeout=10)
    assert holds_throughout(lambda: present(bed.netns), 1.0), "gone before the lease ended"
    gone = wait_until(lambda: not present(bed.netns), LEASE + 2.0 - (time.monotonic() - killed_at))
    assert gone is not None, f"there {LEASE + 2} s after the guard died: {lo_addresses(bed.netns)}"


def test_a_stopped_guard_loses_the_address_and_puts_it_back_when_continued(bed: Bed) -> None:
    guard, _pgpool = start_announced(bed)
    stopped_at = time.monotonic()
    os.kill(guard.pid, signal.SIGSTOP)
    try:
        gone = wait_until(lambda: not present(bed.netns), LEASE + 2.0)
        assert gone is not None, f"there {LEASE + 2} s after SIGSTOP: {lo_addresses(bed.netns)}"
        assert time.monotonic() - stopped_at >= LEASE - 1.0
    finally:
        continued_at = time.monotonic()
        os.kill(guard.pid, signal.SIGCONT)
    back = wait_until(lambda: present(bed.netns), INTERVAL + 2 * TIMEOUT + 2.0)
    assert back is not None, f"the continued guard did not put it back:\n{bed.diagnostics()}"
    lft = valid_lft(bed.netns)
    assert lft is not None and lft != FOREVER, lft
    assert holds_throughout(lambda: present(bed.netns), 2 * LEASE / 3), bed.diagnostics()
    assert guard.poll() is None
    assert time.monotonic() - continued_at < 20


# -- 4. a guard restart adopts without a blink ---------------------------------------------


def test_a_guard_restart_keeps_the_address_and_the_new_guard_renews_it(bed: Bed) -> None:
    old, _pgpool = start_announced(bed)
    with Sampler(bed.netns) as sampler:
        stop_at = time.monotonic()
        os.kill(old.pid, signal.SIGTERM)
        assert old.wait(timeout=5) == 0, bed.diagnostics()
        stopped = bed.syslog.wait_for(2.0, stop_at, event="stop")
        assert stopped is not None and stopped["phase"] == "ANNOUNCED", bed.diagnostics()
        # The lease is running down now: wait until that shows.
        assert wait_until(lambda: (valid_lft(bed.netns) or 0) < int(LEASE), 1.5) is not None, (
            lo_addresses(bed.netns)
        )
        new_at = time.monotonic()
        new = bed.start_guard()
        renewed = wait_until(lambda: valid_lft(bed.netns) == int(LEASE), 2.0)
        assert renewed is not None, f"the new guard did not renew:\n{bed.diagnostics()}"
        time.sleep(LEASE + 0.5)  # past the old lease: only the new guard's renewals keep it
    assert [seen for _, seen in sampler.samples].count(False) == 0, (
        f"the address blinked during the restart: {sampler.changes()}\n{bed.diagnostics()}"
    )
    assert len(sampler.samples) > 50
    adopted = bed.syslog.events(new_at, transition="ADOPTING->ANNOUNCED")
    assert adopted, bed.diagnostics()
    assert not bed.syslog.events(new_at, transition="ADOPTING->WITHDRAWN"), bed.diagnostics()
    assert new.poll() is None


def test_a_guard_restart_does_not_cut_a_running_hold_down_short(bed: Bed) -> None:
    """guard_state.initial: a restart must not skip a hold-down that was running."""
    old, pgpool = start_announced(bed)
    bed.kill_pgpool(pgpool)
    assert wait_until(lambda: not present(bed.netns), 1.0) is not None, bed.diagnostics()
    recovered_at = time.monotonic()
    bed.start_pgpool()
    holding = bed.syslog.wait_for(2.0, recovered_at, transition="WITHDRAWN->HOLDING_DOWN")
    assert holding is not None, bed.diagnostics()
    os.kill(old.pid, signal.SIGTERM)
    assert old.wait(timeout=5) == 0
    bed.start_guard()
    back = wait_until(lambda: present(bed.netns), HOLD_DOWN + INTERVAL + TIMEOUT + 3.0)
    assert back is not None, bed.diagnostics()
    early = time.monotonic() - recovered_at
    assert early >= HOLD_DOWN, (
        f"announced {early:.2f} s after pgpool came back, inside the {HOLD_DOWN} s hold-down, "
        f"because the guard restarted:\n{bed.diagnostics()}"
    )


def test_a_guard_stopped_after_pgpool_leaves_nothing_behind(bed: Bed) -> None:
    guard, pgpool = start_announced(bed)
    bed.kill_pgpool(pgpool)
    assert wait_until(lambda: not present(bed.netns), 1.0) is not None
    os.kill(guard.pid, signal.SIGTERM)
    assert guard.wait(timeout=5) == 0
    assert not present(bed.netns)
    new = bed.start_guard()  # no pgpool: it announces nothing
    assert holds_throughout(lambda: not present(bed.netns), 1.0), bed.diagnostics()
    assert new.poll() is None


# -- 5. a pgpool restart loop does not flap the announcement -------------------------------


def test_a_pgpool_restart_loop_announces_at_most_once_per_hold_down(bed: Bed) -> None:
    guard, pgpool = start_announced(bed)
    # The first announcement's line follows its address by a moment; under load it was
    # received after the first kill below and counted as an announcement of the loop.
    first = bed.syslog.wait_for(2.0, transition="WITHDRAWN->ANNOUNCED")
    assert first is not None, bed.diagnostics()
    deaths: list[float] = []
    loop_started = time.monotonic()
    with Sampler(bed.netns) as sampler:
        for round_ in range(40):  # every fake pgpool is stopped by bed.close() at the latest
            if time.monotonic() - loop_started > 4.0:
                break
            deaths.append(time.monotonic())
            bed.kill_pgpool(pgpool, signal.SIGKILL if round_ % 2 else signal.SIGTERM)
            pgpool = bed.start_pgpool()
            time.sleep(max(0.0, 0.4 - (time.monotonic() - deaths[-1])))
        loop_ended = time.monotonic()
        back = wait_until(lambda: present(bed.netns), HOLD_DOWN + INTERVAL + TIMEOUT + 2.0)
        assert back is not None, f"not back after the loop:\n{bed.diagnostics()}"
        time.sleep(0.2)
    changes = sampler.changes()
    assert len(deaths) >= 6
    # The first death withdraws at once ...
    first_absent = next((at for at, seen in changes if not seen and at > deaths[0]), None)
    assert first_absent is not None and first_absent - deaths[0] < 1.0, (changes, deaths)
    # ... and no life of 0.4 s is long enough to announce again during the loop.
    # changes[0] is the sampler's first look (present since before the loop), whenever
    # its thread got to it: only later entries are announcements.
    announcements = [at for at, seen in changes[1:] if seen and at > deaths[0]]
    assert announcements and announcements[0] >= loop_ended, (
        f"announced during the loop at {[round(a - loop_started, 2) for a in announcements]}"
        f" (deaths at {[round(d - loop_started, 2) for d in deaths]}):\n{bed.diagnostics()}"
    )
    assert announcements[0] - deaths[-1] >= HOLD_DOWN, (announcements, deaths)

    # The guard's own lines say the same: one announcement after the first withdrawal.
    def ups() -> list[tuple[float, dict[str, str]]]:
        return bed.syslog.events(deaths[0], transition="HOLDING_DOWN->ANNOUNCED") + (
            bed.syslog.events(deaths[0], transition="WITHDRAWN->ANNOUNCED")
        )

    wait_until(lambda: bool(ups()), 2.0)  # the line follows the address by a moment
    assert len(ups()) == 1, f"{len(ups())} announcements:\n{bed.syslog.text()}"
    for earlier, later in itertools.pairwise(announcements):
        assert later - earlier >= HOLD_DOWN
    assert guard.poll() is None


# -- 6. the client path: add/del/drain are requests to the guard ---------------------------


def test_del_and_add_go_through_the_guard(bed: Bed) -> None:
    guard, _pgpool = start_announced(bed)
    dry = bed.run("--dry-run", "del", "0")
    assert dry.returncode == 0 and "result=dry-run" in dry.stderr, dry
    assert present(bed.netns)
    # postgres, with no capability at all, can withdraw through the guard
    done = bed.run("del", "0", prefix=AS_POSTGRES)
    assert done.returncode == 0, done
    assert not present(bed.netns), "del returned before the address was gone"
    line = fields_of(done.lines()[-1])
    assert line["mode"] == "guarded" and line["decision"] == "withdraw", done.stderr
    assert line["changed"] == f"-{ANYCAST}", done.stderr
    assert holds_throughout(lambda: not present(bed.netns), 1.0), bed.diagnostics()
    add_at = time.monotonic()
    added = bed.run("add", "0")
    assert added.returncode == 0, added
    assert not present(bed.netns), "announced at once, without the hold-down"
    assert "hold_down_left=" in added.stderr and "decision=announce" in added.stderr, added.stderr
    back = wait_until(lambda: present(bed.netns), HOLD_DOWN + INTERVAL + 2.0)
    assert back is not None, f"add did not announce after the hold-down:\n{bed.diagnostics()}"
    assert time.monotonic() - add_at >= HOLD_DOWN
    assert guard.poll() is None


def test_drain_withdraws_through_the_guard(bed: Bed) -> None:
    _guard, _pgpool = start_announced(bed)
    drained = bed.run("drain", "0")
    assert drained.returncode == 0, drained
    assert not present(bed.netns)
    assert "mode=guarded" in drained.stderr, drained.stderr
    assert holds_throughout(lambda: not present(bed.netns), 2 * HOLD_DOWN), bed.diagnostics()


@pytest.mark.parametrize("verb", ["del", "drain"])
def test_a_user_not_in_guard_clients_is_refused(bed: Bed, verb: str) -> None:
    _guard, _pgpool = start_announced(bed)
    refused = bed.run(verb, "0", prefix=AS_NOBODY)
    assert refused.returncode == 77, refused
    assert present(bed.netns), "nobody withdrew the address"
    assert "may not ask the guard" in refused.stderr and "Traceback" not in refused.stderr
    line = fields_of(refused.lines()[-1])
    assert line.get("exit") == "77", refused.stderr
    assert line.get("result") != "ok", f"a refusal logged as result=ok: {refused.stderr}"


def test_no_guard_is_exit_76_with_one_line(bed: Bed) -> None:
    # never started: no socket at all
    for args in (("del", "0"), ("add", "0"), ("drain", "0")):
        run = bed.run(*args, bound=10.0)
        assert run.returncode == 76, (args, run)
        assert run.elapsed < 5.0 + 3.0, run
        assert "Traceback" not in run.stderr
        assert len(run.lines()) == 1 and "result=guard-unreachable" in run.stderr, run.stderr
    # killed: a stale socket file that nobody listens on
    guard, _pgpool = start_announced(bed)
    os.kill(guard.pid, signal.SIGKILL)
    guard.wait(timeout=10)
    assert bed.socket.exists()
    stale = bed.run("del", "0", bound=10.0)
    assert stale.returncode == 76 and "result=guard-unreachable" in stale.stderr, stale
    assert len(stale.lines()) == 1 and "Traceback" not in stale.stderr
    assert stale.elapsed < 5.0


def test_a_stopped_guard_is_exit_76_within_the_deadline(bed: Bed) -> None:
    guard, _pgpool = start_announced(bed)
    os.kill(guard.pid, signal.SIGSTOP)
    try:
        run = bed.run("del", "0", bound=15.0)
    finally:
        os.kill(guard.pid, signal.SIGCONT)
    assert run.returncode == 76, run
    assert "result=guard-unreachable" in run.stderr and "did not answer" in run.stderr, run.stderr
    assert len(run.lines()) == 1 and "Traceback" not in run.stderr
    assert run.elapsed < 5.0 + 1.0, run  # within `deadline`


def imported_by(run: Run) -> list[str]:
    """The modules a run under `python -X importtime` imported, in order."""
    return [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()
            if line.startswith("import time:")]  # fmt: skip


# Never on the client's path: netlink, click, psutil; nor, with the compiled
# configuration, config.py, hook.py and the standard modules that cost the most.
NOT_FOR_THE_CLIENT = ("pyroute2", "click", "psutil", "pgpool_anycast_hook.netlink_socket",
                      "pgpool_anycast_hook.announcement")  # fmt: skip
NOT_WITH_THE_CACHE = ("pgpool_anycast_hook.config", "pgpool_anycast_hook.hook", "tomllib",
                      "ipaddress", "typing", "socket", "json", "threading", "enum", "re",
                      "signal")  # fmt: skip


def test_the_client_imports_neither_netlink_nor_click(bed: Bed) -> None:
    _guard, _pgpool = start_announced(bed)  # the guard, root, wrote the compiled configuration
    run = bed.run("del", "0", python=(sys.executable, "-X", "importtime"))
    assert run.returncode == 0, run
    assert not present(bed.netns)
    imported = imported_by(run)
    assert len(imported) > 20 and "pgpool_anycast_hook.guard_client" in imported, imported[-20:]
    heavy = [
        m for m in imported if m.split(".")[0] in NOT_FOR_THE_CLIENT or m in NOT_FOR_THE_CLIENT
    ]
    assert heavy == [], heavy
    skipped = [
        m for m in imported if m.split(".")[0] in NOT_WITH_THE_CACHE or m in NOT_WITH_THE_CACHE
    ]
    assert skipped == [], skipped
    assert fields_of(run.lines()[-1])["mode"] == "guarded", run.stderr


def test_without_the_compiled_configuration_the_client_still_asks_the_guard(bed: Bed) -> None:
    """No usable cache (here: none at all): hook.py reads the files and sends the request."""
    _guard, _pgpool = start_announced(bed)
    no_cache = ("env", f"{CACHE_ENV}={bed.root / 'no-cache-here'}")
    run = bed.run("del", "0", prefix=no_cache, python=(sys.executable, "-X", "importtime"))
    assert run.returncode == 0, run
    assert not present(bed.netns)
    imported = imported_by(run)
    assert "pgpool_anycast_hook.config" in imported and "tomllib" in imported, imported[-30:]
    heavy = [
        m for m in imported if m.split(".")[0] in NOT_FOR_THE_CLIENT or m in NOT_FOR_THE_CLIENT
    ]
    assert heavy == [], heavy
    line = fields_of(run.lines()[-1])
    assert line["mode"] == "guarded" and line["changed"] == f"-{ANYCAST}", run.stderr


# -- 7. SIGHUP -------------------------------------------------------------------------------


def test_sighup_reloads_the_addresses(bed: Bed) -> None:
    guard, _pgpool = start_announced(bed)
    bed.write_config(addresses=[OTHER])
    hup_at = time.monotonic()
    os.kill(guard.pid, signal.SIGHUP)
    assert wait_until(lambda: not present(bed.netns, ANYCAST), 1.0) is not None, bed.diagnostics()
    assert wait_until(lambda: present(bed.netns, OTHER), HOLD_DOWN + 2.0) is not None, (
        bed.diagnostics()
    )
    reloaded = bed.syslog.wait_for(2.0, hup_at, event="reload")
    assert reloaded is not None and reloaded["result"] == "ok", bed.diagnostics()
    lft = valid_lft(bed.netns, OTHER)
    assert lft is not None and lft != FOREVER, f"{OTHER} carries no lease"
    assert holds_throughout(lambda: present(bed.netns, OTHER), LEASE + 0.5), bed.diagnostics()
    assert not present(bed.netns, ANYCAST)
    # A broken file on SIGHUP: the guard keeps running on what it had.
    bed.config.write_text("addresses = [\n")
    bad_at = time.monotonic()
    os.kill(guard.pid, signal.SIGHUP)
    bad = bed.syslog.wait_for(2.0, bad_at, event="reload")
    assert bad is not None and bad["result"] == "config-error", bed.diagnostics()
    assert holds_throughout(lambda: present(bed.netns, OTHER), 1.0), bed.diagnostics()
    assert guard.poll() is None
    # Every change of the kernel's state is on a line: the reload's too.
    logged = " ".join(line for at, line in bed.syslog.lines if hup_at <= at < bad_at)
    assert f"-{ANYCAST}" in logged and f"+{OTHER}" in logged, (
        f"the reload changed lo without saying so:\n{bed.syslog.text()}"
    )


def test_metrics_it_cannot_write_are_logged_once_and_change_nothing(bed: Bed) -> None:
    bed.write_config(metrics_file=str(bed.root / "missing" / "metrics.prom"))
    start_announced(bed)
    time.sleep(10 * INTERVAL)  # ten more writes, each failing
    failures = bed.syslog.events(0.0, event="metrics")
    assert len(failures) == 1, bed.syslog.text()
    assert failures[0][1]["error"] == "No such file or directory"
    assert present(bed.netns)


def test_metrics_follow_the_guard(bed: Bed) -> None:
    path = bed.root / "metrics.prom"
    bed.write_config(metrics_file=str(path))
    _guard, pgpool = start_announced(bed)
    line = 'pgpool_anycast_announced{address="198.18.2.0/32"} 1.0'
    assert wait_until(lambda: path.exists() and line in path.read_text(), 3.0) is not None
    assert (path.stat().st_mode & 0o777) == 0o644
    bed.kill_pgpool(pgpool)
    assert wait_until(lambda: 'pgpool_anycast_desired{reason="pgpool-down"} 0.0'
                      in path.read_text(), 3.0) is not None, path.read_text()  # fmt: skip
    assert 'pgpool_anycast_transitions_total{reason="pgpool-down"} 1.0' in path.read_text()
