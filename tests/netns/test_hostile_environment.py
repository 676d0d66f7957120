"""A hostile environment: what postgres can plant, a stuck stderr or syslog, bad input.

The hook runs with CAP_NET_ADMIN on pgpool's failover path and as root by hand. The
directories it works in that postgres can write (state_dir, pgpool's pgpool_status
directory, pgpool's pid file and socket directory) may hold anything postgres put
there: a symbolic link to a file root should never touch, or a FIFO that blocks an
open forever. Its stderr may be a pipe nobody reads, or closed; its syslog socket may
be full. Its input may be garbage. None of that may make a run hang past its deadline,
write outside the hook's own files, leak what it should not read, or end in a
traceback; a withdrawal must never wait behind a probe of a stuck pgpool.

The bed (`Bed`, below) lays the directories out as Debian does: state_dir, the
pgpool_status directory and pgpool's run directory belong to postgres; the
configuration, pgpool.conf and the configuration cache belong to root. Every hook run
is bounded; one that does not end in time is killed (its own process group, by PID)
and reported as a hang.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.netns.conftest import HOOK, HookSetup, addresses_in
from tests.netns.stand_ins import ANSWERING_PGPOOL

pytestmark = pytest.mark.netns

ANYCAST = "198.18.2.0/32"
AS_POSTGRES = ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups")
WITH_NET_ADMIN = ("--inh-caps", "+net_admin", "--ambient-caps", "+net_admin")
CACHE_ENV = "PGPOOL_ANYCAST_HOOK_CACHE_DIR"
DOCUMENTED = {0, 1, 70, 75, 77, 78}  # what a refused file may end in (never 2 or 69 here)
MARGIN = 5.0  # seconds past a run's own deadline before it counts as a hang
PGPOOL_PORT = 9999
SECRET = "victim-secret-4711"
# Valid JSON for the hold and check.json readers alike, so that a run that follows a
# link would show the secret (the hold's reason) instead of failing to parse it.
VICTIM_TEXT = json.dumps({"reason": SECRET, "state": "UP", "count": 0, "by": SECRET}) + "\n"
VICTIM_MODE = 0o640

# Every command, as an operator would run it; drain and the hook verbs with node 0.
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("add", "0"),
    ("del", "0"),
    ("clean", "0"),
    ("reconcile",),
    ("status",),
    ("status", "--json"),
    ("disable", "--reason", "t"),
    ("enable",),
    ("drain", "0"),
    ("check",),
    ("check-config",),
)
# Commands that read pgpool.conf (del does not, and neither do disable/enable).
READS_PGPOOL_CONF: tuple[tuple[str, ...], ...] = (
    ("add", "0"),
    ("clean", "0"),
    ("reconcile",),
    ("status",),
    ("check",),
    ("check-config",),
    ("drain", "0"),
)


# -- running the hook -------------------------------------------------------------------


class Run(NamedTuple):
    args: tuple[str, ...]
    returncode: int | None  # None: it did not end within its bound and was killed
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        code = "HUNG (killed)" if self.returncode is None else f"exit {self.returncode}"
        return (
            f"{' '.join(self.args)}: {code} after {self.elapsed:.1f}s\n"
            f"  stdout: {self.stdout[-600:]!r}\n  stderr: {self.stderr[-600:]!r}"
        )


def bounded(
    argv: list[str],
    bound: float,
    stdin: int | None = subprocess.DEVNULL,
    stderr: int = subprocess.PIPE,
    label: tuple[str, ...] = (),
) -> Run:
    """Run argv in its own process group; kill that group (by its PID) after `bound` s."""
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=bound)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate(timeout=10)
        code = None
    return Run(label or tuple(argv), code, out or "", err or "", time.monotonic() - started)


def as_postgres(*argv: str) -> None:
    """Run a command as postgres (no groups, no capabilities): the planting user."""
    done = subprocess.run([*AS_POSTGRES, *argv], timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, f"as postgres {argv[:2]}: {done.stderr[-2000:]}"


def postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


class Bed:
    """Debian's layout in a temporary root, with the namespace the hook runs in.

    root/            root 0755: config.toml, conf.d/, pgpool.conf (+ an include), cache/
    root/state/      postgres 0755: state_dir (lock, hold, check.json)
    root/log/        postgres 0755: pgpool's logdir (pgpool_status)
    root/run/        postgres 0755: pgpool's pid file and unix socket directory
    root/victims/    root 0700: files and a directory that no run may ever touch
    """

    def __init__(self, setup: HookSetup, netns: str) -> None:
        self.setup = setup
        self.netns = netns
        self.root = setup.root
        uid, gid = postgres_ids()
        self.state_dir = setup.state_dir
        self.log_dir = self.root / "log"
        self.run_dir = self.root / "run"
        for directory in (self.log_dir, self.run_dir):
            directory.mkdir()
        for directory in (self.state_dir, self.log_dir, self.run_dir):
            os.chown(directory, uid, gid)
            os.chmod(directory, 0o755)
        self.cache_dir = self.root / "cache"
        self.cache_dir.mkdir(mode=0o755)
        self.conf_d = self.root / "conf.d"
        self.conf_d.mkdir(mode=0o755)
        self.conf_d_file = self.conf_d / "10-extra.toml"
        self.conf_d_file.write_text("check_rise = 2\n")
        self.pgpool_conf = self.root / "pgpool.conf"
        self.pgpool_include = self.root / "pgpool-included.conf"
        self.status_file = self.log_dir / "pgpool_status"
        self.pid_file = self.run_dir / "pgpool.pid"
        self.unix_socket = self.run_dir / f".s.PGSQL.{PGPOOL_PORT}"
        self.write_pgpool_conf()
        self.write_status("up\nup\n")
        self.victims = self.root / "victims"
        self.victims.mkdir(mode=0o700)
        self.victim_file = self.victims / "secret.json"
        self.victim_file.write_text(VICTIM_TEXT)
        os.chmod(self.victim_file, VICTIM_MODE)
        self.victim_dir = self.victims / "dir"
        self.victim_dir.mkdir(mode=0o755)
        self.settings: dict[str, object] = {}
        self.write()

    # -- files ---------------------------------------------------------------------

    def write(self, **settings: object) -> None:
        """config.toml: the bed's paths, short waits, then `settings` (which win)."""
        base: dict[str, object] = {
            "addresses": [ANYCAST],
            "status_file": "",  # found through pgpool.conf's logdir, as on Debian
            "pgpool_conf": str(self.pgpool_conf),
            "deadline": 2.0,
            "lock_timeout": 0.5,
            "drain_seconds": 0.0,
            "drain_timeout": 0.5,
            "check_timeout": 0.5,
        }
        base.update(settings)
        self.settings = base
        self.setup.write(**base)

    def write_pgpool_conf(self, extra: str = "", include: str = "pcp_port = 9898\n") -> None:
        self.pgpool_conf.write_text(
            f"port = {PGPOOL_PORT}\n"
            "listen_addresses = 'localhost'\n"
            f"socket_dir = '{self.run_dir}'\n"
            f"pid_file_name = '{self.pid_file}'\n"
            f"logdir = '{self.log_dir}'\n"
            "backend_port0 = 5432\n"
            "backend_port1 = 5432\n"
            f"include = '{self.pgpool_include}'\n" + extra
        )
        self.pgpool_include.write_text(include)

    def write_status(self, text: str) -> None:
        """pgpool_status as pgpool leaves it: a regular file of postgres."""
        self.status_file.write_text(text)
        os.chown(self.status_file, *postgres_ids())

    def cache_file(self) -> Path:
        """Where this version of the hook keeps the compiled configuration for config.toml."""
        from pgpool_anycast_hook import config_cache

        saved = os.environ.get(CACHE_ENV)
        os.environ[CACHE_ENV] = str(self.cache_dir)
        try:
            return Path(config_cache.cache_path(str(self.setup.config)))
        finally:
            if saved is None:
                del os.environ[CACHE_ENV]
            else:
                os.environ[CACHE_ENV] = saved

    @property
    def deadline(self) -> float:
        return float(self.settings.get("deadline", 5.0))  # type: ignore[arg-type]

    def bound(self, args: tuple[str, ...]) -> float:
        """How long `args` may take: its deadline (plus drain's waits) plus MARGIN."""
        extra = 0.0
        if args and args[0] == "drain":
            extra = float(self.settings.get("drain_seconds", 2.0)) + float(  # type: ignore[arg-type]
                self.settings.get("drain_timeout", 10.0)  # type: ignore[arg-type]
            )
        return self.deadline + extra + MARGIN

    # -- running ---------------------------------------------------------------------

    def argv(self, *args: str, prefix: tuple[str, ...] = ()) -> list[str]:
        return [
            "ip", "netns", "exec", self.netns, "env", f"{CACHE_ENV}={self.cache_dir}",
            *prefix, HOOK, "--config", str(self.setup.config), *args,
        ]  # fmt: skip

    def run(
        self,
        *args: str,
        prefix: tuple[str, ...] = (),
        bound: float | None = None,
        stderr: int = subprocess.PIPE,
    ) -> Run:
        """One bounded run as root (or with `prefix`, e.g. as postgres)."""
        limit = self.bound(args) if bound is None else bound
        return bounded(self.argv(*args, prefix=prefix), limit, stderr=stderr, label=args)

    def background(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def add_address(self, address: str = ANYCAST) -> None:
        subprocess.run(["ip", "-n", self.netns, "addr", "add", address, "dev", "lo"], check=True)


@pytest.fixture
def bed(netns: str, hook: HookSetup) -> Bed:
    return Bed(hook, netns)


def well_behaved(run: Run) -> str | None:
    """Why `run` is not acceptable in a hostile environment, or None if it is."""
    if run.returncode is None:
        return "did not end within its deadline + margin (hung)"
    if run.returncode not in DOCUMENTED:
        return f"exit {run.returncode} is not one of {sorted(DOCUMENTED)}"
    if "Traceback" in run.output:
        return "printed a traceback"
    return None


def stop_group(process: subprocess.Popen[str], timeout: float) -> tuple[int | None, str, str]:
    """Wait for a background run (bounded); kill its process group (by PID) if it hangs."""
    try:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate(timeout=10)
        return None, out, err


class SyslogServer:
    """A bound AF_UNIX SOCK_DGRAM socket at the config's syslog_address."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)

    def lines(self, wait: float = 2.0) -> list[str]:
        """Every datagram received, waiting up to `wait` s for the first one."""
        received: list[str] = []
        self.sock.settimeout(wait)
        for _ in range(1000):
            try:
                received.append(self.sock.recv(65536).decode(errors="replace"))
            except (TimeoutError, BlockingIOError):
                break
            self.sock.settimeout(0.2)
        return received

    def fill(self) -> int:
        """Queue datagrams nobody reads until the socket refuses more; return how many."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.connect(str(self.path))
            client.setblocking(False)
            for count in range(100_000):
                try:
                    client.send(b"x" * 1024)
                except BlockingIOError:
                    return count
        raise AssertionError("a syslog socket that never fills")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def syslog(bed: Bed) -> Iterator[SyslogServer]:
    server = SyslogServer(bed.root / "log.sock")
    bed.write(syslog_address=str(server.path))
    try:
        yield server
    finally:
        server.close()


# A stand-in for pgpool: named "pgpool", with its pid file, that listens and never
# accepts or answers. Mode "tcp-stuck": both accept queues are full, so a connect() to
# the unix socket is refused at once (EAGAIN) and one to TCP waits for its timeout.
# Mode "unix-silent": the unix socket takes connections into its backlog and never
# answers an SSLRequest; nothing listens on TCP.
STUCK_PGPOOL = textwrap.dedent(
    """
    import ctypes, os, socket, sys, time
    ctypes.CDLL(None).prctl(15, b"pgpool", 0, 0, 0)
    pid_file, unix_path, port, mode, seconds = sys.argv[1:6]
    port, seconds = int(port), float(seconds)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    held = []
    def outcome(family, address):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(address)
            except TimeoutError:
                return "waits"
            except OSError:
                return "refused"
            return "connects"
    if mode == "tcp-stuck":
        unix.listen(0)
        for _ in range(256):  # fill the unix backlog
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(unix_path)
            except BlockingIOError:
                c.close()
                break
            held.append(c)
        tcp = socket.socket()
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))
        tcp.listen(0)
        for _ in range(4):  # a full TCP accept queue drops further SYNs
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            held.append(c)
        time.sleep(0.3)
        ok = (outcome(socket.AF_UNIX, unix_path) == "refused"
              and outcome(socket.AF_INET, ("127.0.0.1", port)) == "waits")
    else:
        unix.listen(128)
        ok = outcome(socket.AF_UNIX, unix_path) == "connects"
    with open(pid_file, "w") as f:
        f.write(f"{os.getpid()}\\0")
    print("ready" if ok else "not-as-planned", flush=True)
    time.sleep(seconds)
    """
)


def start_fake_pgpool(bed: Bed, script: str, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        ["ip", "netns", "exec", bed.netns, "python3", "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()  # bounded: the script prints within 2 s
    if line != "ready":
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        pytest.fail(f"the fake pgpool did not come up as needed: {line!r}", pytrace=False)
    return process


def end_fake_pgpool(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


# -- stderr and syslog that block -------------------------------------------------------


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full, its write end blocking again (as the child gets it)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for _ in range(100_000):
        try:
            os.write(write_end, b"x" * 4096)
        except BlockingIOError:
            break
    os.set_blocking(write_end, True)  # the hook must cope with a blocking full pipe
    return read_end, write_end


@pytest.mark.parametrize("args", [("del", "0"), ("reconcile",)], ids=" ".join)
def test_a_full_stderr_pipe_does_not_hold_up_a_withdrawal(
    bed: Bed, syslog: SyslogServer, args: tuple[str, ...]
) -> None:
    """stderr is a full pipe nobody reads: the run still withdraws, exits 0 within its
    deadline, and its one line still reaches syslog."""
    bed.write(syslog_address=str(syslog.path), deadline=5.0)
    bed.add_address()
    read_end, write_end = full_pipe()
    try:
        run = bounded(bed.argv(*args), bed.bound(args), stderr=write_end, label=args)
    finally:
        os.close(write_end)
        os.close(read_end)
    assert run.returncode == 0, run.describe()
    assert ANYCAST not in addresses_in(bed.netns)
    lines = [line for line in syslog.lines() if f"action={args[0]}" in line]
    assert len(lines) == 1, (lines, run.describe())
    assert "result=ok" in lines[0] and f"changed=-{ANYCAST}" in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, address_before, address_after",
    [(("add", "0"), False, True), (("del", "0"), True, False), (("reconcile",), True, False)],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_a_closed_stderr_is_no_failure(
    bed: Bed,
    syslog: SyslogServer,
    args: tuple[str, ...],
    address_before: bool,
    address_after: bool,
) -> None:
    """Started with fd 2 closed (`2>&-`), a successful run exits 0 and sends its line."""
    if address_before:
        bed.add_address()
    argv = [
        "ip", "netns", "exec", bed.netns, "env", f"{CACHE_ENV}={bed.cache_dir}",
        "sh", "-c", 'exec "$@" 2>&-', "sh", HOOK, "--config", str(bed.setup.config), *args,
    ]  # fmt: skip
    run = bounded(argv, bed.bound(args), label=args)
    assert run.returncode == 0, run.describe()
    assert (ANYCAST in addresses_in(bed.netns)) is address_after
    lines = [line for line in syslog.lines() if f"action={args[0]}" in line]
    assert len(lines) == 1 and "result=ok" in lines[0], (lines, run.describe())


def test_a_full_syslog_socket_never_blocks_a_run(bed: Bed, syslog: SyslogServer) -> None:
    """A syslog server that never reads, its queue full: every run still ends in time
    with its usual exit code and does its work."""
    queued = syslog.fill()
    assert queued > 0
    expected = [
        (("add", "0"), 0, True),
        (("del", "0"), 0, False),
        (("add", "0"), 0, True),
        (("reconcile",), 0, False),  # pgpool is not running: withdraw
        (("disable", "--reason", "t"), 0, False),
        (("enable",), 0, False),
        (("check",), 1, False),  # no pgpool answers
        (("drain", "0"), 0, False),
    ]
    problems = []
    for args, code, present in expected:
        run = bed.run(*args)
        if run.returncode != code or (ANYCAST in addresses_in(bed.netns)) is not present:
            problems.append(f"expected exit {code}, address present={present}: {run.describe()}")
    assert not problems, "\n".join(problems)


# -- FIFOs planted where the hook opens files ---------------------------------------------


def fifo_places(bed: Bed) -> dict[str, tuple[Path, bool]]:
    """Every file the hook opens: name -> (path, whether postgres can plant there)."""
    return {
        "lock": (bed.state_dir / "lock", True),
        "hold": (bed.state_dir / "hold", True),
        "check.json": (bed.state_dir / "check.json", True),
        "pgpool_status": (bed.status_file, True),
        "pid file": (bed.pid_file, True),
        "cache file": (bed.cache_file(), False),
        "config.toml": (bed.setup.config, False),
        "conf.d file": (bed.conf_d_file, False),
        "pgpool.conf": (bed.pgpool_conf, False),
        "pgpool.conf include": (bed.pgpool_include, False),
    }


def remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def plant_fifo(path: Path, by_postgres: bool) -> None:
    remove_entry(path)
    if by_postgres:
        as_postgres("mkfifo", "-m", "0666", str(path))
    else:
        os.mkfifo(path, 0o644)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


FIFO_NAMES = (
    "lock", "hold", "check.json", "pgpool_status", "pid file", "cache file",
    "config.toml", "conf.d file", "pgpool.conf", "pgpool.conf include",
)  # fmt: skip


@pytest.mark.parametrize("place", FIFO_NAMES)
def test_a_fifo_at_any_name_the_hook_opens_never_hangs_a_run(bed: Bed, place: str) -> None:
    """A FIFO (no writer) at one of the hook's names, planted afresh before each command:
    every command ends on its own (not by its deadline) with a documented exit code and
    no traceback; the FIFO is refused, never waited on."""
    path, by_postgres = fifo_places(bed)[place]
    if place == "cache file":
        assert bed.run("check-config").returncode == 0  # the cache is in use for this config
    problems = []
    for args in COMMANDS:
        plant_fifo(path, by_postgres)
        run = bed.run(*args)
        why = well_behaved(run)
        if why is None and "result=deadline" in run.stderr:
            why = "was ended by its deadline: it waited on the FIFO"
        if why is not None:
            problems.append(f"{why}: {run.describe()}")
    assert not problems, f"FIFO at {place} ({path}):\n" + "\n".join(problems)


# -- symbolic links planted by postgres ---------------------------------------------------

PLANT_LINKS = textwrap.dedent(
    """
    import os, sys
    target, spread = sys.argv[1], int(sys.argv[2])
    plain, tmp_names = [], []
    for word in sys.argv[3:]:
        (tmp_names if word.startswith("tmp:") else plain).append(word.removeprefix("tmp:"))
    for path in plain:
        os.symlink(target, path)
    # The temporary names a writer that is not using mkstemp would pick: <name>.<pid>.tmp
    with open("/proc/sys/kernel/ns_last_pid") as f:
        last = int(f.read())
    for pid in range(last + 1, last + spread):
        for path in tmp_names:
            try:
                os.symlink(target, f"{path}.{pid}.tmp")
            except FileExistsError:
                pass
    """
)


class Victim(NamedTuple):
    """What must stay exactly as it is: the victim file's bytes and inode, the dir's list."""

    content: bytes
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    entries: tuple[str, ...]
    dir_mtime_ns: int


def victim_state(bed: Bed) -> Victim:
    info = os.lstat(bed.victim_file)
    return Victim(
        bed.victim_file.read_bytes(),
        stat.S_IMODE(info.st_mode),
        info.st_uid,
        info.st_gid,
        info.st_mtime_ns,
        info.st_ctime_ns,
        tuple(sorted(os.listdir(bed.victims))) + tuple(sorted(os.listdir(bed.victim_dir))),
        os.lstat(bed.victim_dir).st_mtime_ns,
    )


def link_names(bed: Bed) -> list[str]:
    """Every name in every postgres-writable directory the hook may open or create."""
    state, log = bed.state_dir, bed.log_dir
    return [
        str(state / "lock"),
        str(state / "hold"),
        str(state / "check.json"),
        str(bed.status_file),
        str(bed.pid_file),
        str(bed.unix_socket),
        f"tmp:{state / 'hold'}",
        f"tmp:{state / 'check.json'}",
        f"tmp:{state / 'lock'}",
        f"tmp:{bed.status_file}",
        str(log / f"pgpool_status.set-aside-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"),
    ]


def plant_links(bed: Bed, target: Path) -> None:
    """As postgres: empty the writable directories, then link every name to `target`."""
    for directory in (bed.state_dir, bed.log_dir, bed.run_dir):
        for entry in os.listdir(directory):
            remove_entry(directory / entry)
    as_postgres("/usr/bin/python3", "-c", PLANT_LINKS, str(target), "1500", *link_names(bed))
    assert os.path.islink(bed.state_dir / "hold") and os.path.islink(bed.status_file)


@pytest.mark.parametrize("target", ["victim file", "new file in victim dir"])
def test_links_planted_by_postgres_never_steer_a_root_run(bed: Bed, target: str) -> None:
    """postgres links every name the hook uses in state_dir, the pgpool_status directory
    and the run directory to a root-only file (or to a new name in a root-only directory),
    including the temporary names <name>.<pid>.tmp; then root runs every command. The
    victim keeps its bytes, mode, owner and times, no file appears beside it, nothing
    of it shows in the output, and every run ends with a documented code."""
    link_to = bed.victim_file if target == "victim file" else bed.victim_dir / "planted"
    before = victim_state(bed)
    problems = []
    for args in COMMANDS:
        plant_links(bed, link_to)
        run = bed.run(*args)
        why = well_behaved(run)
        after = victim_state(bed)
        if after != before:
            why = f"changed the victim: {before} -> {after}"
            before = after
        if SECRET in run.output:
            why = "showed the victim's content"
        if why is not None:
            problems.append(f"{why}: {run.describe()}")
    assert not problems, "\n".join(problems)


def test_links_planted_by_postgres_never_steer_a_postgres_run_either(bed: Bed) -> None:
    """The same links, followed by the failover path's own user (postgres with only
    CAP_NET_ADMIN): nothing in root's victims is read, written or created."""
    before = victim_state(bed)
    problems = []
    for args in (("add", "0"), ("del", "0"), ("clean", "0"), ("check",), ("disable",)):
        plant_links(bed, bed.victim_dir / "planted")
        run = bed.run(*args, prefix=(*AS_POSTGRES, *WITH_NET_ADMIN))
        why = well_behaved(run)
        if victim_state(bed) != before:
            why = "changed the victims"
        if why is not None:
            problems.append(f"{why}: {run.describe()}")
    assert not problems, "\n".join(problems)


# -- a withdrawal never waits behind a probe ----------------------------------------------


@pytest.mark.parametrize("mode", ["tcp-stuck", "unix-silent"])
def test_del_does_not_wait_behind_reconcile_and_check_probing_a_stuck_pgpool(
    bed: Bed, mode: str
) -> None:
    """pgpool listens but never accepts or answers; `reconcile` and `check` probe it for
    up to check_timeout (10 s). A `del 0` started meanwhile gets the run lock within
    lock_timeout (1 s), withdraws and exits 0; when the probes end, the address is still
    gone (nobody re-adds it from what it saw before the withdrawal)."""
    bed.write(check_timeout=10.0, lock_timeout=1.0, deadline=30.0, check_fall=1)
    fake = start_fake_pgpool(
        bed, STUCK_PGPOOL, str(bed.pid_file), str(bed.unix_socket), str(PGPOOL_PORT), mode, "120"
    )
    try:
        bed.add_address()
        background = [bed.background("reconcile"), bed.background("check")]
        try:
            time.sleep(1.5)  # both have started and are probing
            withdrawal = bed.run("del", "0", bound=1.0 + MARGIN)
            assert withdrawal.returncode == 0, withdrawal.describe()
            assert ANYCAST not in addresses_in(bed.netns)
        finally:
            ended = [stop_group(p, 30.0 + MARGIN) for p in background]
    finally:
        end_fake_pgpool(fake)
    for (code, out, err), name in zip(ended, ("reconcile", "check"), strict=True):
        assert code in DOCUMENTED and "Traceback" not in out + err, (name, code, out, err)
    assert ANYCAST not in addresses_in(bed.netns), "a probe re-added the withdrawn address"


# -- bad input ----------------------------------------------------------------------------


def test_a_5000_digit_node_id_is_a_usage_error(bed: Bed) -> None:
    """`add 000...0` (5000 digits) and the same for del: exit 2, no traceback."""
    for verb in ("add", "del", "clean"):
        run = bed.run(verb, "0" * 5000)
        assert run.returncode == 2 and "Traceback" not in run.output, run.describe()
    assert ANYCAST not in addresses_in(bed.netns)


# Whole-file breakage (bytes appended to the file) and NULs in strings (key, value).
BROKEN_BYTES = {
    "non-UTF-8": b'interface = "l\xff\xfeo"\n',
    "deeply nested": b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
}
NUL_VALUES = {
    "NUL in interface": ("interface", "lo\u0000"),
    "NUL in state_dir": ("state_dir", "/tmp/x\u0000y"),
    "NUL in syslog_address": ("syslog_address", "/dev/log\u0000"),
    "NUL in pgpool_conf": ("pgpool_conf", "/etc/pgpool2/pgpool.conf\u0000"),
}


@pytest.mark.parametrize("where", ["config.toml", "conf.d"])
@pytest.mark.parametrize("case", [*BROKEN_BYTES, *NUL_VALUES])
def test_a_broken_configuration_file_is_exit_78_naming_it(bed: Bed, case: str, where: str) -> None:
    """Bytes no TOML reader should survive (not UTF-8, nested 100000 deep) or a NUL in a
    string value: exit 78 naming the file, never a traceback, for check-config, status
    and the hook verbs; lo is left alone."""
    if case in NUL_VALUES:
        key, value = NUL_VALUES[case]
        text = f"{key} = {json.dumps(value)}\n".encode()  # JSON's \u0000 is TOML's too
    if where == "config.toml":
        path = bed.setup.config
        if case in NUL_VALUES:
            bed.write(**{key: value})
        else:
            path.write_bytes(path.read_bytes() + BROKEN_BYTES[case])
    else:
        path = bed.conf_d / "50-broken.toml"
        path.write_bytes(text if case in NUL_VALUES else BROKEN_BYTES[case])
    problems = []
    for args in (("check-config",), ("add", "0"), ("del", "0"), ("status",)):
        run = bed.run(*args)
        if run.returncode != 78 or str(path) not in run.stderr or "Traceback" in run.output:
            problems.append(run.describe())
    assert not problems, "\n".join(problems)
    assert ANYCAST not in addresses_in(bed.netns)


@pytest.mark.parametrize("args", READS_PGPOOL_CONF, ids=" ".join)
def test_a_port_out_of_range_in_pgpool_conf_is_exit_78(bed: Bed, args: tuple[str, ...]) -> None:
    """`port = 70000` in pgpool.conf: every command that reads it exits 78 naming it."""
    bed.write_pgpool_conf(extra="port = 70000\n")
    run = bed.run(*args)
    assert run.returncode == 78, run.describe()
    assert str(bed.pgpool_conf) in run.output and "Traceback" not in run.output, run.describe()
    assert ANYCAST not in addresses_in(bed.netns)


def test_a_huge_backend_index_gives_no_traceback(bed: Bed) -> None:
    """`backend_port99999 = 5432`: every command ends with a documented code, no traceback."""
    bed.write_pgpool_conf(extra="backend_port99999 = 5432\n")
    problems = [f"{why}: {run.describe()}" for run in map(lambda a: bed.run(*a), COMMANDS)
                if (why := well_behaved(run)) is not None]  # fmt: skip
    assert not problems, "\n".join(problems)


def test_an_infinite_count_in_check_json_gives_no_traceback(bed: Bed) -> None:
    """check.json `{"state": "UP", "count": 1e999}` (postgres can write it): no traceback."""
    problems = []
    for args in (("check",), ("status",), ("status", "--json"), ("reconcile",)):
        (bed.state_dir / "check.json").write_text('{"state": "UP", "count": 1e999}\n')
        run = bed.run(*args)
        why = well_behaved(run)
        if why is not None:
            problems.append(f"{why}: {run.describe()}")
    assert not problems, "\n".join(problems)


DANGEROUS_ADDRESSES = {
    "127.0.0.1/8": (["127.0.0.1/8"], "127.0.0.1"),
    "::1": (["::1"], "::1"),
    "0.0.0.0/0": (["0.0.0.0/0"], "0.0.0.0"),
    "224.0.0.1": (["224.0.0.1"], "224.0.0.1"),
    "fe80::1%lo": (["fe80::1%lo"], "fe80::1"),
    "198.18.2.0/3": (["198.18.2.0/3"], "198.18.2.0/3"),
    "one address, two prefixes": (["198.18.2.0/32", "198.18.2.0/31"], "198.18.2.0/31"),
    "/24 without allow_wide_prefixes": (["198.18.2.0/24"], "198.18.2.0/24"),
}


@pytest.mark.parametrize("case", list(DANGEROUS_ADDRESSES))
def test_a_dangerous_address_is_refused_by_check_config_and_add(bed: Bed, case: str) -> None:
    """Loopback, unspecified, multicast, link-local, very wide prefixes, one address twice:
    exit 78 with the entry named, from check-config and from add; lo is left alone."""
    addresses, named = DANGEROUS_ADDRESSES[case]
    bed.write(addresses=addresses)
    before = addresses_in(bed.netns)
    for args in (("check-config",), ("add", "0")):
        run = bed.run(*args)
        assert run.returncode == 78, run.describe()
        assert named in run.stderr and "Traceback" not in run.output, run.describe()
    assert addresses_in(bed.netns) == before


def test_a_wide_prefix_is_allowed_with_allow_wide_prefixes(bed: Bed) -> None:
    """`allow_wide_prefixes = true` lets a /24 through: check-config and add succeed."""
    bed.write(addresses=["198.18.2.0/24"], allow_wide_prefixes=True)
    checked = bed.run("check-config")
    assert checked.returncode == 0, checked.describe()
    added = bed.run("add", "0")
    assert added.returncode == 0, added.describe()
    assert "198.18.2.0/24" in addresses_in(bed.netns)


# -- clean never overwrites ----------------------------------------------------------------


def test_clean_never_overwrites_an_existing_set_aside_file(bed: Bed) -> None:
    """Every set-aside name clean could pick in the next seconds already exists (regular
    files with their own content, and links planted by postgres): clean replaces none of
    them, keeps the content of pgpool_status, and ends with a documented code."""
    bed.write_status("down\nup\n")
    now = int(time.time())
    existing: dict[Path, bytes] = {}
    for second in range(now - 2, now + 10):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        base = bed.log_dir / f"pgpool_status.set-aside-{stamp}"
        for counter in range(1000):
            path = base if counter == 0 else Path(f"{base}.{counter}")
            data = f"older set-aside {stamp} {counter}\n".encode()
            path.write_bytes(data)
            existing[path] = data
    links = []
    for second in range(now - 2, now + 10):  # postgres may also plant names past those
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        for counter in (1000, 1001):
            link = bed.log_dir / f"pgpool_status.set-aside-{stamp}.{counter}"
            as_postgres("ln", "-s", str(bed.victim_file), str(link))
            links.append(link)
    victim = victim_state(bed)
    run = bed.run("clean", "0")
    assert well_behaved(run) is None, run.describe()
    replaced = [p for p, data in existing.items() if p.read_bytes() != data]
    assert not replaced, f"clean overwrote {replaced[:5]}: {run.describe()}"
    assert all(link.is_symlink() for link in links), run.describe()
    assert victim_state(bed) == victim, run.describe()
    known = set(existing) | set(links)
    holders = [
        p for p in bed.log_dir.iterdir()
        if p not in known and not p.is_symlink() and p.read_bytes() == b"down\nup\n"
    ]  # fmt: skip
    assert len(holders) == 1, f"pgpool_status's content kept once, found {holders}"


def test_clean_keeps_an_earlier_set_aside_file_in_the_same_second(bed: Bed) -> None:
    """Two cleans: the second set-aside file gets a new name; the first one keeps its bytes."""
    bed.write_status("down\nup\n")
    first = bed.run("clean", "0")
    assert first.returncode == 0, first.describe()
    kept = list(bed.log_dir.glob("pgpool_status.set-aside-*"))
    assert len(kept) == 1 and kept[0].read_text() == "down\nup\n"
    bed.write_status("DOWN\nup\nup\n")
    second = bed.run("clean", "0")
    assert second.returncode == 0, second.describe()
    contents = sorted(p.read_text() for p in bed.log_dir.glob("pgpool_status.set-aside-*"))
    assert contents == ["DOWN\nup\nup\n", "down\nup\n"]


# -- pgpool 4.5+: unix_socket_directories --------------------------------------------------


def test_the_first_unix_socket_directory_is_where_pgpool_is_looked_for(bed: Bed) -> None:
    """pgpool 4.5+ `unix_socket_directories = 'A, B'` (no socket_dir): add --wait-ready,
    status and check find pgpool at A/.s.PGSQL.<port>, with nothing on TCP."""
    first, second = bed.root / "sock-a", bed.root / "sock-b"
    for directory in (first, second):
        directory.mkdir(mode=0o755)
    port = 5433
    bed.pgpool_conf.write_text(
        f"port = {port}\n"
        "listen_addresses = 'localhost'\n"
        f"unix_socket_directories = '{first}, {second}'\n"
        f"pid_file_name = '{bed.pid_file}'\n"
        f"logdir = '{bed.log_dir}'\n"
        "backend_port0 = 5432\n"
    )
    bed.write(deadline=10.0, check_rise=1)
    socket_path = first / f".s.PGSQL.{port}"
    fake = start_fake_pgpool(bed, ANSWERING_PGPOOL, str(bed.pid_file), str(socket_path), "60")
    try:
        added = bed.run("add", "--wait-ready", "3", "0", bound=10.0 + 3.0 + MARGIN)
        assert added.returncode == 0, added.describe()
        assert ANYCAST in addresses_in(bed.netns)
        assert str(socket_path) in added.stderr, added.describe()
        shown = bed.run("status", "--json")
        assert shown.returncode == 0, shown.describe()
        assert json.loads(shown.stdout)["pgpool"]["listening"] == str(socket_path)
        table = bed.run("status")
        assert str(socket_path) in table.stdout, table.describe()
        checked = bed.run("check")
        assert checked.returncode == 0, checked.describe()
        assert "probe=ok" in checked.stderr and str(socket_path) in checked.stderr
    finally:
        end_fake_pgpool(fake)
