"""A real PostgreSQL and a real Debian pgpool2, started by the test inside its own netns.

Everything lives in a temporary directory owned by postgres: data directory, unix
sockets, pid file, pgpool_status. Waits are bounded; processes are ended by PID.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.netns.conftest import HookSetup, hook, netns  # noqa: F401  (fixtures)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGPOOL = "/usr/sbin/pgpool"
AS_POSTGRES = ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups")
PG_PORT = 5433
PGPOOL_PORT = 9999


def require_components() -> None:
    missing = [p for p in (PG_BIN / "initdb", Path(PGPOOL)) if not p.exists()]
    if missing:
        pytest.fail(f"missing {missing}: run scripts/setup-dev.sh (installs postgresql, pgpool2)")


def wait_for(predicate: object, seconds: float, what: str) -> None:
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


class Cluster:
    """PostgreSQL on 127.0.0.1:5433 and pgpool on 127.0.0.1:9999, in one namespace."""

    def __init__(self, namespace: str, root: Path) -> None:
        self.netns = namespace
        self.root = root
        self.data = root / "data"
        self.pgpool_conf = root / "pgpool.conf"
        self.pid_file = root / "pgpool.pid"
        self.pgpool: subprocess.Popen[bytes] | None = None

    def as_postgres(self, *command: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        full = ["ip", "netns", "exec", self.netns, *AS_POSTGRES, *command]
        return subprocess.run(full, capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload, no-any-return]

    def start_postgres(self) -> None:
        done = self.as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                "--auth=trust", "--no-sync")  # fmt: skip
        assert done.returncode == 0, done.stderr
        options = f"-p {PG_PORT} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "postgres.log")
        done = self.as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
                                "-l", log, "-w", "-t", "30", "start")  # fmt: skip
        assert done.returncode == 0, done.stderr + done.stdout

    def stop_postgres(self) -> None:
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            try:
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                psutil.Process(pid).wait(timeout=20)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass

    def write_pgpool_conf(self) -> None:
        (self.root / "pcp.conf").write_text("")
        self.pgpool_conf.write_text(
            "backend_clustering_mode = 'raw'\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {PGPOOL_PORT}\n"
            f"socket_dir = '{self.root}'\n"
            f"pcp_socket_dir = '{self.root}'\n"
            "pcp_listen_addresses = ''\n"
            f"pid_file_name = '{self.pid_file}'\n"
            f"logdir = '{self.root}'\n"
            f"wd_ipc_socket_dir = '{self.root}'\n"
            "num_init_children = 4\n"
            "health_check_period = 0\n"
            "sr_check_period = 0\n"
            "backend_hostname0 = '127.0.0.1'\n"
            f"backend_port0 = {PG_PORT}\n"
            "backend_flag0 = 'ALLOW_TO_FAILOVER'\n"
        )

    def start_pgpool(self) -> None:
        log = open(self.root / "pgpool.log", "ab")  # noqa: SIM115  (kept by Popen)
        self.pgpool = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *AS_POSTGRES, PGPOOL, "-n",
             "-f", str(self.pgpool_conf), "-F", str(self.root / "pcp.conf")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_for(self.answers, 30, "pgpool to answer")

    def answers(self) -> bool:
        """pgpool answers an SSLRequest on its unix socket."""
        path = str(self.root / f".s.PGSQL.{PGPOOL_PORT}")
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(path)
                sock.sendall(b"\0\0\0\x08\x04\xd2\x16\x2f")
                return sock.recv(1) in (b"N", b"S")
        except OSError:
            return False

    def processes(self) -> list[psutil.Process]:
        """The pgpool main process (the one we started) and all its children."""
        assert self.pgpool is not None
        main = psutil.Process(self.pgpool.pid)
        return [main, *main.children(recursive=True)]

    def signal_all(self, signum: int) -> None:
        for process in self.processes():
            process.send_signal(signum)

    def stop_pgpool(self) -> None:
        if self.pgpool is None:
            return
        if self.pgpool.poll() is None:
            self.pgpool.send_signal(signal.SIGCONT)
            for process in self.processes():
                process.send_signal(signal.SIGCONT)
            self.pgpool.send_signal(signal.SIGINT)  # fast shutdown, as Debian's unit does
            try:
                self.pgpool.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.pgpool.kill()
                self.pgpool.wait(timeout=10)
        self.pgpool = None


@pytest.fixture
def cluster(netns: str) -> Iterator[Cluster]:  # noqa: F811
    require_components()
    root = Path(tempfile.mkdtemp(prefix="pah-pgpool-", dir="/tmp"))
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres", "postgres")
    setup = Cluster(netns, root)
    try:
        setup.start_postgres()
        setup.write_pgpool_conf()
        setup.start_pgpool()
        yield setup
    finally:
        setup.stop_pgpool()
        setup.stop_postgres()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pgpool_hook(cluster: Cluster, hook: HookSetup) -> HookSetup:  # noqa: F811
    """The hook configured against the cluster's pgpool.conf (pgpool_status via logdir)."""
    hook.write(
        addresses=["198.18.2.0/32"],
        pgpool_conf=str(cluster.pgpool_conf),
        status_file="",
        check_timeout=0.5,
        check_rise=2,
        check_fall=2,
    )
    return hook
