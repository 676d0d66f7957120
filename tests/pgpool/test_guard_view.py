"""The guard follows pgpool's own view (SHOW POOL_NODES) of a real streaming cluster.

A real PostgreSQL primary and streaming standby, a real Debian pgpool2 in streaming
replication mode with health checks, and the guard with primary_node_id = "auto", all
in the test's own network namespace. pgpool runs its failover_command (the hook, sent
to the guard as pgpool's user does it) when the primary dies; the operator then
promotes the standby; pgpool finds the new primary, and the guard announces again on
the strength of node 1, which no fixed id could do. Metrics are read back through a
real prometheus-node-exporter, and on_change is seen to run after each transition
without delaying it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.conftest import HOOK, netns, require_root  # noqa: F401  (fixtures)
from tests.netns.node_exporter import running_node_exporter
from tests.netns.test_guard import (
    ANYCAST,
    AS_POSTGRES,
    INTERVAL,
    Bed,
    holds_throughout,
    present,
    stop_process,
    wait_until,
)
from tests.pgpool.conftest import AS_POSTGRES as PG_AS_POSTGRES
from tests.pgpool.conftest import PG_BIN, PGPOOL, require_components

pytestmark = pytest.mark.netns

PRIMARY_PORT, STANDBY_PORT, PGPOOL_PORT = 5433, 5434, 9999
ANNOUNCED = ("pgpool_anycast_announced", frozenset({("address", ANYCAST)}))
SEARCH_PRIMARY = 10  # search_primary_node_timeout: pgpool looks this long for a new primary


class StreamingCluster:
    """pg0 (primary) and pg1 (its streaming standby) on 127.0.0.1, and pgpool on 9999."""

    def __init__(self, namespace: str, root: Path, failover_command: str) -> None:
        self.netns, self.root = namespace, root
        self.pgpool_conf = root / "pgpool.conf"
        self.pid_file = root / "pgpool.pid"
        self.failover_command = failover_command
        self.pgpool: subprocess.Popen[bytes] | None = None

    def data(self, node: int) -> Path:
        return self.root / f"pg{node}"

    def run(self, *command: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.netns, *PG_AS_POSTGRES, *command],
                              capture_output=True, text=True, timeout=90)  # fmt: skip
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done.stdout

    def start_node(self, node: int) -> None:
        port = (PRIMARY_PORT, STANDBY_PORT)[node]
        options = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data(node)), "-o", options,
                 "-l", str(self.root / f"pg{node}.log"), "-w", "-t", "60", "start")  # fmt: skip

    def stop_node(self, node: int, mode: str = "immediate") -> None:
        if (self.data(node) / "postmaster.pid").exists():
            self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data(node)), "-m", mode,
                     "-w", "-t", "30", "stop")  # fmt: skip

    def start(self) -> None:
        self.run(str(PG_BIN / "initdb"), "-D", str(self.data(0)), "-U", "postgres",
                 "--auth=trust", "--no-sync")  # fmt: skip
        with open(self.data(0) / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self.start_node(0)
        self.run(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(PRIMARY_PORT),
                 "-U", "postgres", "-D", str(self.data(1)), "-R", "-X", "stream")  # fmt: skip
        self.start_node(1)
        self.write_pgpool_conf()
        log = open(self.root / "pgpool.log", "ab")  # noqa: SIM115  (kept by Popen)
        self.pgpool = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *PG_AS_POSTGRES, PGPOOL, "-n",
             "-f", str(self.pgpool_conf), "-F", str(self.root / "pcp.conf")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def write_pgpool_conf(self) -> None:
        (self.root / "pcp.conf").write_text("")
        backends = "".join(
            f"backend_hostname{n} = '127.0.0.1'\nbackend_port{n} = {port}\n"
            f"backend_flag{n} = 'ALLOW_TO_FAILOVER'\nbackend_data_directory{n} = '{self.data(n)}'\n"
            for n, port in enumerate((PRIMARY_PORT, STANDBY_PORT))
        )
        self.pgpool_conf.write_text(
            "backend_clustering_mode = 'streaming_replication'\n"
            f"listen_addresses = '127.0.0.1'\nport = {PGPOOL_PORT}\n"
            f"socket_dir = '{self.root}'\npcp_socket_dir = '{self.root}'\n"
            f"pcp_listen_addresses = ''\npid_file_name = '{self.pid_file}'\n"
            f"logdir = '{self.root}'\nwd_ipc_socket_dir = '{self.root}'\n"
            "num_init_children = 4\nmax_pool = 1\nenable_pool_hba = off\n"
            "load_balance_mode = on\n"
            "sr_check_period = 1\nsr_check_user = 'postgres'\n"
            "health_check_period = 1\nhealth_check_timeout = 2\n"
            "health_check_user = 'postgres'\nhealth_check_max_retries = 0\n"
            "connect_timeout = 2000\nfailover_on_backend_error = on\n"
            f"search_primary_node_timeout = {SEARCH_PRIMARY}\n"
            f"failover_command = '{self.failover_command}'\n" + backends
        )

    def stop(self) -> None:
        if self.pgpool is not None:
            stop_process(self.pgpool)  # type: ignore[arg-type]
        for node in (1, 0):
            with contextlib.suppress(AssertionError):
                self.stop_node(node)


@pytest.fixture
def view_bed(netns: str) -> Iterator[tuple[Bed, StreamingCluster, Path]]:  # noqa: F811
    require_root()
    require_components()
    root = Path(tempfile.mkdtemp(prefix="pah-view-", dir="/tmp"))
    os.chmod(root, 0o755)
    pg_root = root / "cluster"
    pg_root.mkdir()
    shutil.chown(pg_root, "postgres", "postgres")
    textfiles = root / "textfiles"
    textfiles.mkdir()
    bed = Bed(netns, root)
    # pgpool runs the hook as postgres, which sends the event to the guard, as in the
    # guarded wiring; the cache directory is the bed's.
    failover = (f"env PGPOOL_ANYCAST_HOOK_CACHE_DIR={bed.cache_dir} {HOOK} "
                f"--config {bed.config} del %d %P")  # fmt: skip
    os.chmod(bed.cache_dir, 0o777)
    cluster = StreamingCluster(netns, pg_root, failover)
    try:
        cluster.start()
        yield bed, cluster, textfiles
    finally:
        bed.close()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def pool_nodes(bed: Bed) -> dict[str, object]:
    data = json.loads((bed.guard_dir / "guard.json").read_text())
    return data["view"]  # type: ignore[no-any-return]


def test_auto_follows_a_promotion_and_the_metrics_say_so(
    view_bed: tuple[Bed, StreamingCluster, Path],
) -> None:
    bed, cluster, textfiles = view_bed
    events = bed.root / "on-change.log"
    # Each transition appends "<state> <code> <addresses> start", sleeps 3 s (far longer
    # than a withdrawal takes), then appends "<state> end".
    notify = bed.root / "notify.sh"
    notify.write_text('#!/bin/sh\necho "$PAH_NEW_STATE $PAH_REASON_CODE $PAH_ADDRESSES start"'
                      ' >> "$1"\nsleep 3\necho "$PAH_NEW_STATE end" >> "$1"\n')  # fmt: skip
    notify.chmod(0o755)
    bed.write_config(
        primary_node_id="auto",
        pgpool_conf=str(cluster.pgpool_conf),
        status_file="",
        pgpool_user="postgres",
        pgpool_passfile="",
        pool_nodes_timeout=0.15,
        metrics_file=str(textfiles / "pgpool-anycast-hook.prom"),
        on_change=[str(notify), str(events)],
    )
    with running_node_exporter(str(textfiles), user="prometheus") as scrape:
        bed.start_guard()
        took = wait_until(lambda: present(bed.netns), 40.0)
        assert took is not None, f"never announced:\n{bed.diagnostics()}"
        # The address comes first; guard.json and the metrics follow it within a moment.
        assert wait_until(lambda: pool_nodes(bed)["primary"] == 0, 2.0) is not None
        assert pool_nodes(bed)["state"] == "KNOWN"
        assert wait_until(lambda: scrape().get(ANNOUNCED) == 1, 5.0) is not None, scrape.log()
        assert scrape()[("pgpool_anycast_primary_node_id", frozenset())] == 0

        cluster.stop_node(0)  # the primary dies; pgpool's health check fails it over
        gone = wait_until(lambda: not present(bed.netns), 15.0)
        assert gone is not None, f"not withdrawn after the primary died:\n{bed.diagnostics()}"
        # The command started for the announcement still sleeps: it delayed nothing.
        assert "ANNOUNCED end" not in _read(events), _read(events)
        assert wait_until(lambda: scrape().get(ANNOUNCED) == 0, 5.0) is not None
        assert not present(bed.netns), "no primary: it stays withdrawn"

        cluster.run(str(PG_BIN / "pg_ctl"), "-D", str(cluster.data(1)), "-w", "promote")
        back = wait_until(lambda: present(bed.netns), SEARCH_PRIMARY + 15.0)
        assert back is not None, f"not announced after the promotion:\n{bed.diagnostics()}"
        assert pool_nodes(bed)["primary"] == 1  # the promoted node, whatever its id
        assert wait_until(lambda: scrape().get(ANNOUNCED) == 1, 5.0) is not None
        assert scrape()[("pgpool_anycast_primary_node_id", frozenset())] == 1
        transition = bed.syslog.events(0.0, event="transition")
        assert any("primary node 1" in fields.get("reason", "") for _, fields in transition)

        # on_change ran once per transition, with the transition in its environment.
        def ran() -> list[str]:
            return [line for line in _read(events).splitlines() if line.endswith(" start")]

        assert wait_until(lambda: len(ran()) >= 4, 10.0) is not None, _read(events)
        states = [line.split()[0] for line in ran()]
        assert states[:4] == ["ANNOUNCED", "WITHDRAWN", "HOLDING_DOWN", "ANNOUNCED"], states
        assert all(line.split()[2] == ANYCAST for line in ran())
        assert ran()[3].split()[1] == "serves"


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_drain_stays_withdrawn_while_pgpool_still_answers(
    view_bed: tuple[Bed, StreamingCluster, Path],
) -> None:
    """`drain` (ExecStop= of a planned stop) withdraws; with "auto" the next answer of a
    pgpool that still runs must not announce again. `add` (or a new pgpool) ends it."""
    bed, cluster, _ = view_bed
    bed.write_config(primary_node_id="auto", pgpool_conf=str(cluster.pgpool_conf),
                     status_file="", pgpool_user="postgres", pgpool_passfile="",
                     pool_nodes_timeout=0.15, drain_seconds=0.0, drain_timeout=0.0)  # fmt: skip
    bed.start_guard()
    assert wait_until(lambda: present(bed.netns), 40.0) is not None, bed.diagnostics()
    drained = bed.run("drain", prefix=AS_POSTGRES)
    assert drained.returncode == 0, drained.stderr
    assert not present(bed.netns)
    stayed = holds_throughout(lambda: not present(bed.netns), 10 * INTERVAL)
    assert stayed, f"a drain was undone while pgpool runs:\n{bed.diagnostics()}"
    assert pool_nodes(bed)["primary"] == 0  # pgpool answered all along
    added = bed.run("add", "0", prefix=AS_POSTGRES)
    assert added.returncode == 0, added.stderr
    assert wait_until(lambda: present(bed.netns), 5.0) is not None, bed.diagnostics()
