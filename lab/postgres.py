"""PostgreSQL 15: primary pg1 and streaming replicas pg2, pg3, each in its own namespace,
run as `postgres` with its own data and socket directories under the lab directory."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lab import netns, state
from lab.hosts import BACKENDS, LAB_NET, POSTGRES_PORT, PRIMARY, Host

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_DIR = state.LAB_DIR / "pg"

# Shared by all three: pg_basebackup copies postgresql.conf, so what differs per node
# lives in lab-node.conf, rewritten after each copy.
COMMON_SETTINGS = """
include_if_exists = 'lab-node.conf'
port = {port}
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 60
wal_level = replica
max_wal_senders = 5
wal_keep_size = 64MB
hot_standby = on
wal_retrieve_retry_interval = 1s
log_line_prefix = '%m [%p] '
"""

HBA = f"""
local all all trust
host all all {LAB_NET} trust
host replication all {LAB_NET} trust
"""


def data_dir(host: Host) -> Path:
    return PG_DIR / host.name


def socket_dir(host: Host) -> Path:
    return PG_DIR / f"{host.name}.sock"


def as_postgres(host: Host, argv: list[str], timeout: float = 120.0) -> str:
    return netns.ns_run(
        host.netns, ["runuser", "-u", "postgres", "--", *argv], timeout=timeout
    ).stdout


def write_node_conf(host: Host) -> None:
    conf = data_dir(host) / "lab-node.conf"
    conf.write_text(
        f"listen_addresses = '{host.base_ip}'\n"
        f"unix_socket_directories = '{socket_dir(host)}'\n"
        f"cluster_name = '{host.name}'\n"
    )
    shutil.chown(conf, "postgres", "postgres")


def setup_all() -> None:
    """initdb the primary, start it, seed pgbench tables, clone and start the replicas."""
    if PG_DIR.exists():
        shutil.rmtree(PG_DIR)
    PG_DIR.mkdir(parents=True)
    shutil.chown(PG_DIR, "postgres", "postgres")
    for host in BACKENDS:
        socket_dir(host).mkdir()
        shutil.chown(socket_dir(host), "postgres", "postgres")
    primary = data_dir(PRIMARY)
    as_postgres(
        PRIMARY,
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(primary),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C.UTF-8",
        ],
    )
    with (primary / "postgresql.conf").open("a") as conf:
        conf.write(COMMON_SETTINGS.format(port=POSTGRES_PORT))
    (primary / "pg_hba.conf").write_text(HBA)
    write_node_conf(PRIMARY)
    start(PRIMARY)
    psql(PRIMARY, "select 1")
    as_postgres(
        PRIMARY,
        [
            str(PG_BIN / "pgbench"),
            "-i",
            "-q",
            "-s",
            "1",
            "-h",
            str(socket_dir(PRIMARY)),
            "-U",
            "postgres",
            "postgres",
        ],
    )
    for replica in BACKENDS[1:]:
        as_postgres(
            replica,
            [
                str(PG_BIN / "pg_basebackup"),
                "-h",
                PRIMARY.base_ip,
                "-U",
                "postgres",
                "-D",
                str(data_dir(replica)),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )
        write_node_conf(replica)
        start(replica)
    wait_streaming(len(BACKENDS) - 1, 30.0)


def start(host: Host) -> None:
    log = PG_DIR / f"{host.name}.log"
    as_postgres(
        host,
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data_dir(host)),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "start",
        ],
    )
    pid = int((data_dir(host) / "postmaster.pid").read_text().split()[0])
    state.record_process(f"postgres-{host.name}", pid)


def stop(host: Host) -> None:
    """Fast shutdown (clients are disconnected), the way an operator stops a node."""
    as_postgres(
        host,
        [str(PG_BIN / "pg_ctl"), "-D", str(data_dir(host)), "-m", "fast", "-w", "-t", "60", "stop"],
    )
    state.forget_process(f"postgres-{host.name}")


def is_running(host: Host) -> bool:
    proc = netns.ns_run(
        host.netns, [str(PG_BIN / "pg_isready"), "-q", "-h", str(socket_dir(host))], check=False
    )
    return proc.returncode == 0


def psql(host: Host, sql: str) -> str:
    return as_postgres(
        host,
        [
            str(PG_BIN / "psql"),
            "-X",
            "-A",
            "-t",
            "-h",
            str(socket_dir(host)),
            "-U",
            "postgres",
            "-c",
            sql,
        ],
        30.0,
    ).strip()


def wait_streaming(replicas: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        count = int(
            psql(PRIMARY, "select count(*) from pg_stat_replication where state = 'streaming'")
        )
        if count >= replicas:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} of {replicas} replicas streaming after {timeout:.0f}s")
        time.sleep(0.1)
