"""Record what the local pgpool2 really answers to `SHOW POOL_NODES`, situation by situation.

Why: the guard decides from these rows which backend is the primary, and every pgpool
version prints its own set of columns and values. Unit tests of pool_nodes.py replay the
recordings in tests/data/pool_nodes/, so they check the parser against pgpool itself,
not against what we believe pgpool prints.

Run it as user postgres, with the Debian python3 (it needs python3-psycopg), in a network
namespace of its own (only `lo`), e.g. on the host:

    unshare --net sh -c 'ip link set lo up && exec setpriv --reuid postgres \
        --regid postgres --init-groups /usr/bin/python3 scripts/record_pool_nodes.py OUT'

or inside a container of the test bed (testbed/container.py), where it runs the same way.
It builds, in a temporary directory, a PostgreSQL primary, a streaming standby
(pg_basebackup -R) and a pgpool in streaming_replication mode over both; then it breaks
them step by step and writes one JSON file per situation into OUT. Every process it
starts is ended by its PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

BASE_PORT = 56130  # PostgreSQL on +0 and +1, pgpool on +10, pcp on +11
PCP_USER = "recorder"
PCP_PASSWORD = "recorder"  # only for this throw-away pgpool, in its own netns
SEARCH_PRIMARY_TIMEOUT = 10
Rows = list[list[str | None]]


def log(message: str) -> None:
    print(f"[record {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], timeout: float = 120.0) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done.stdout


def pg_bin() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: p.parent.parent.name
    )
    if not found:
        raise RuntimeError("no PostgreSQL under /usr/lib/postgresql")
    return found[-1].parent


def pgpool_version(pgpool: str) -> str:
    done = subprocess.run(
        [pgpool, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r"pgpool-II version (\S+)", done.stdout + done.stderr)
    if not match:
        raise RuntimeError(f"cannot read the version of {pgpool}: {done.stdout}{done.stderr}")
    return match.group(1)


def debian_version() -> str:
    text = Path("/etc/debian_version").read_text().strip()
    return text.split(".")[0]


class Bed:
    """Two PostgreSQL servers and one pgpool, all in `work`, all started by us."""

    def __init__(self, work: Path, pgpool: str, version: str) -> None:
        self.work = work
        self.pgpool = pgpool
        self.version = version
        self.bin = pg_bin()
        self.data = [work / "pg0", work / "pg1"]
        self.pg_ports = [BASE_PORT, BASE_PORT + 1]
        self.port = BASE_PORT + 10
        self.pcp_port = BASE_PORT + 11
        self.log_path = work / "pgpool.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- PostgreSQL ------------------------------------------------------------

    def start_pg(self, node: int) -> None:
        options = (
            f"-c port={self.pg_ports[node]} -c listen_addresses=127.0.0.1 -k {self.work} "
            f"-c fsync=off -c cluster_name=pg{node} -c wal_level=replica -c hot_standby=on"
        )
        run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data[node]),
                "-o",
                options,
                "-l",
                str(self.work / f"pg{node}.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop_pg(self, node: int, mode: str = "fast") -> None:
        if (self.data[node] / "postmaster.pid").exists():
            run(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data[node]),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ]
            )

    def make_cluster(self) -> None:
        run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data[0]),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ]
        )
        self.start_pg(0)
        run(
            [
                str(self.bin / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_ports[0]),
                "-U",
                "postgres",
                "-D",
                str(self.data[1]),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ]
        )
        self.start_pg(1)

    def promote(self, node: int) -> None:
        run([str(self.bin / "pg_ctl"), "-D", str(self.data[node]), "-w", "-t", "60", "promote"])

    # -- pgpool ------------------------------------------------------------------

    def write_pgpool_conf(self) -> None:
        socket_key = "socket_dir" if self.version.startswith("4.3") else "unix_socket_directories"
        lines = [
            "backend_clustering_mode = 'streaming_replication'",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"{socket_key} = '{self.work}'",
            "pcp_listen_addresses = '127.0.0.1'",
            f"pcp_port = {self.pcp_port}",
            f"pcp_socket_dir = '{self.work}'",
            f"wd_ipc_socket_dir = '{self.work}'",
            f"pid_file_name = '{self.work}/pgpool.pid'",
            f"logdir = '{self.work}'",
            "log_destination = 'stderr'",
            "logging_collector = off",
            "pool_passwd = ''",
            "enable_pool_hba = off",
            "use_watchdog = off",
            "memory_cache_enabled = off",
            "num_init_children = 4",
            "max_pool = 2",
            "load_balance_mode = on",
            "sr_check_period = 1",
            "sr_check_user = 'postgres'",
            "sr_check_password = ''",
            "health_check_period = 1",
            "health_check_timeout = 5",
            "health_check_user = 'postgres'",
            "health_check_password = ''",
            "health_check_max_retries = 0",
            "connect_timeout = 3000",
            f"search_primary_node_timeout = {SEARCH_PRIMARY_TIMEOUT}",
            "failover_on_backend_error = on",
            "failover_command = ''",
        ]
        for node in (0, 1):
            lines += [
                f"backend_hostname{node} = '127.0.0.1'",
                f"backend_port{node} = {self.pg_ports[node]}",
                f"backend_weight{node} = 1",
                f"backend_data_directory{node} = '{self.data[node]}'",
                f"backend_flag{node} = 'ALLOW_TO_FAILOVER'",
                f"backend_application_name{node} = 'pg{node}'",
            ]
        (self.work / "pgpool.conf").write_text("\n".join(lines) + "\n")
        digest = run(["pg_md5", PCP_PASSWORD]).strip()
        (self.work / "pcp.conf").write_text(f"{PCP_USER}:{digest}\n")
        (self.work / "pool_hba.conf").write_text("")
        pass_file = self.work / "pcppass"
        pass_file.write_text(f"*:*:{PCP_USER}:{PCP_PASSWORD}\n")
        pass_file.chmod(0o600)

    def start_pgpool(self) -> None:
        self.write_pgpool_conf()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.pgpool,
                    "-n",
                    "-D",
                    "-f",
                    str(self.work / "pgpool.conf"),
                    "-F",
                    str(self.work / "pcp.conf"),
                    "-a",
                    str(self.work / "pool_hba.conf"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop_pgpool(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        # pgpool runs in a session of its own (start_new_session): its process group id is
        # its PID. Whatever of it is left (a hung main, or children orphaned when the main
        # died) is ended through that group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def attach(self, node: int) -> None:
        env = dict(os.environ, PCPPASSFILE=str(self.work / "pcppass"))
        done = subprocess.run(
            [
                "pcp_attach_node",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pcp_port),
                "-U",
                PCP_USER,
                "-w",
                "-n",
                str(node),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pcp_attach_node: {done.stdout}{done.stderr}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- asking pgpool -----------------------------------------------------------

    def show_pool_nodes(self, timeout: int = 5, host: str = "") -> tuple[list[str], Rows]:
        """One query through pgpool's unix socket (the way the guard asks), or `host`."""
        with psycopg.connect(
            host=host or str(self.work),
            port=self.port,
            user="postgres",
            dbname="postgres",
            connect_timeout=timeout,
            autocommit=True,
        ) as conn:
            cur = conn.execute("SHOW POOL_NODES")
            columns = [d.name for d in cur.description or ()]
            rows = [list(row) for row in cur.fetchall()]
        return columns, rows

    def wait_rows(
        self,
        what: str,
        ok: Callable[[dict[str, dict[str, str | None]]], bool],
        seconds: float = 90.0,
        pause: float = 0.5,
    ) -> tuple[list[str], Rows]:
        """Poll SHOW POOL_NODES (`pause` s apart, at most `seconds`) until ok(rows by node id)."""
        deadline = time.monotonic() + seconds
        last: object = None
        while time.monotonic() < deadline:
            try:
                columns, rows = self.show_pool_nodes()
                by_id = {str(r[columns.index("node_id")]): r for r in rows}
                named = {k: dict(zip(columns, v, strict=True)) for k, v in by_id.items()}
                last = named
                if ok(named):
                    return columns, rows
            except psycopg.Error as error:
                last = error
        time.sleep(pause)
        raise RuntimeError(f"timed out after {seconds:g} s waiting for {what}; last: {last}")

    def wait_log(self, text: str, after: int, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.log_text()[after:]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {seconds:g} s waiting for log line {text!r}")

    def connect_error(self, timeout: int = 3, host: str = "") -> dict[str, Any]:
        """Try one SHOW POOL_NODES; return what went wrong (or that nothing did)."""
        started = time.monotonic()
        try:
            columns, rows = self.show_pool_nodes(timeout=timeout, host=host)
        except psycopg.Error as error:
            diag = getattr(error, "diag", None)
            return {
                "error_class": f"psycopg.{type(error).__name__}",
                "message": str(error),
                "sqlstate": getattr(error, "sqlstate", None),
                "detail": getattr(diag, "message_detail", None),
                "hint": getattr(diag, "message_hint", None),
                "seconds": round(time.monotonic() - started, 1),
            }
        return {"answered": True, "columns": columns, "rows": rows}


def state(node: dict[str, Any]) -> tuple[Any, Any]:
    return node.get("status"), node.get("role")


class Recorder:
    def __init__(self, out: Path, version: str) -> None:
        self.out = out
        self.version = version
        self.debian = debian_version()

    def table(self, name: str, situation: str, columns: list[str], rows: Rows) -> None:
        data = {
            "pgpool": self.version,
            "debian": self.debian,
            "situation": situation,
            "columns": columns,
            "rows": rows,
        }
        self.write(name, data)

    def error(self, name: str, situation: str, outcome: dict[str, Any]) -> None:
        data = {"pgpool": self.version, "debian": self.debian, "situation": situation, **outcome}
        self.write(name, data)

    def write(self, name: str, data: dict[str, Any]) -> None:
        path = self.out / f"pgpool-{self.version}-{name}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        log(f"wrote {path.name}")


def first_run(bed: Bed, rec: Recorder) -> None:
    """All up; standby down; standby back; primary down without promotion; all down."""
    cols, rows = bed.wait_rows(
        "both backends up, node 1 streaming",
        lambda n: (
            state(n["0"]) == ("up", "primary")
            and state(n["1"]) == ("up", "standby")
            and n["1"].get("replication_state") == "streaming"
        ),
    )
    rec.table("all-up", "primary node 0 and streaming standby node 1 both up", cols, rows)

    bed.stop_pg(1)
    cols, rows = bed.wait_rows("node 1 down", lambda n: n["1"]["status"] == "down")
    rec.table(
        "standby-down",
        "standby node 1 stopped (pg_ctl stop -m fast); health check detached it",
        cols,
        rows,
    )

    bed.start_pg(1)
    bed.attach(1)
    outcome = bed.connect_error()
    situation = (
        "standby node 1 restarted and attached again (pcp_attach_node); the first query "
        "after pcp_attach_node returned, while pgpool may still be failing back"
    )
    if "answered" in outcome:
        rec.table("standby-attach-pending", situation, outcome["columns"], outcome["rows"])
    else:
        rec.error("standby-attach-pending-error", situation, outcome)
    cols, rows = bed.wait_rows(
        "node 1 no longer down", lambda n: n["1"]["status"] != "down", pause=0.05
    )
    rec.table(
        "standby-reattached",
        "standby node 1 attached again; the first answer that no longer shows it down",
        cols,
        rows,
    )
    bed.wait_rows(
        "node 1 up again",
        lambda n: (
            state(n["1"]) == ("up", "standby") and n["1"].get("replication_state") == "streaming"
        ),
    )

    mark = len(bed.log_text())
    bed.stop_pg(0)
    bed.wait_log("waiting for finding a primary node", mark)
    outcome = bed.connect_error(timeout=3)
    rec.error(
        "during-primary-search",
        f"primary node 0 stopped; a new connection while "
        f"pgpool searches for a primary (search_primary_node_timeout = "
        f"{SEARCH_PRIMARY_TIMEOUT}), libpq connect_timeout = 3",
        outcome,
    )
    try:
        cols, rows = bed.wait_rows(
            "pgpool answering again, node 0 down", lambda n: n["0"]["status"] == "down"
        )
    except RuntimeError:
        if socket_gone(bed, rec, "primary-down-socket-gone", "primary node 0 stopped"):
            return
        raise
    rec.table(
        "primary-down-no-promotion",
        f"primary node 0 stopped, standby not promoted; "
        f"pgpool gave up searching for a primary after {SEARCH_PRIMARY_TIMEOUT} s",
        cols,
        rows,
    )

    bed.stop_pg(1)
    first = bed.connect_error()
    rec.error(
        "all-down-first-attempt",
        "both backends stopped; the first new connection to pgpool after the second one stopped",
        first,
    )
    deadline = time.monotonic() + 60
    outcome = first
    while not settled(outcome) and time.monotonic() < deadline:
        time.sleep(0.5)
        outcome = bed.connect_error()
    if socket_gone(bed, rec, "all-down-socket-gone", "both backends stopped"):
        return
    if not settled(outcome):
        raise RuntimeError(f"pgpool did not settle on all-backends-down: {outcome}")
    rec.error("all-down", "both backends stopped and detached; a new connection to pgpool", outcome)


def socket_gone(bed: Bed, rec: Recorder, name: str, situation: str) -> bool:
    """Record it if pgpool's unix socket file has vanished; False if it is still there.

    Seen with 4.6.1: a process forked during a failover got SIGQUIT before it had reset
    the main process's exit handler, and ran the main's exit callbacks (which unlink the
    socket file and remove the semaphores). The main process lives on.
    """
    if (bed.work / f".s.PGSQL.{bed.port}").exists():
        return False
    alive = bed.proc is not None and bed.proc.poll() is None
    outcome = bed.connect_error()
    outcome["over_tcp"] = bed.connect_error(host="127.0.0.1")
    situation += (
        f"; pgpool's unix socket file vanished during the failover (main process still "
        f"running: {alive}); over_tcp: the same query to 127.0.0.1"
    )
    rec.error(name, situation, outcome)
    return True


def settled(outcome: dict[str, Any]) -> bool:
    text = str(outcome)
    return "all backend nodes are down" in text or "No such file or directory" in text


def second_run(bed: Bed, rec: Recorder) -> None:
    """All up; primary down; standby promoted while pgpool searches; new primary found."""
    bed.wait_rows(
        "both backends up",
        lambda n: state(n["0"]) == ("up", "primary") and state(n["1"]) == ("up", "standby"),
    )
    mark = len(bed.log_text())
    bed.stop_pg(0)
    bed.wait_log("waiting for finding a primary node", mark)
    bed.promote(1)
    try:
        cols, rows = bed.wait_rows("node 1 primary", lambda n: state(n["1"]) == ("up", "primary"))
    except RuntimeError:
        if socket_gone(bed, rec, "promoted-socket-gone", "primary node 0 stopped, 1 promoted"):
            return
        raise
    rec.table(
        "standby-promoted",
        "primary node 0 stopped; standby node 1 promoted (pg_ctl "
        "promote) while pgpool searched for a primary, which found it",
        cols,
        rows,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory for the JSON files")
    parser.add_argument("--pgpool", default="/usr/sbin/pgpool")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    version = pgpool_version(args.pgpool)
    rec = Recorder(args.out, version)
    log(f"pgpool {version}, PostgreSQL in {pg_bin()}, Debian {rec.debian}")
    for step in (first_run, second_run):
        with tempfile.TemporaryDirectory(prefix="pah-record-") as tmp:
            bed = Bed(Path(tmp), args.pgpool, version)
            try:
                bed.make_cluster()
                bed.start_pgpool()
                step(bed, rec)
            except BaseException:
                if bed.log_path.exists():
                    kept = args.out / f"failed-{version}-{step.__name__}-pgpool.log"
                    kept.write_text(bed.log_text())
                    log(f"failed; the pgpool log is in {kept}")
                raise
            finally:
                bed.stop_pgpool()
                for node in (0, 1):
                    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                        bed.stop_pg(node, "immediate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
