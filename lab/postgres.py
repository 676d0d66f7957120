"""PostgreSQL 15: primary pg1 and streaming replicas pg2, pg3, each in its own namespace,
run as `postgres` with its own data and socket directories under the lab directory.

Promotion tests also change roles the way an operator does (stop the primary, promote
a standby, re-point the others, rebuild the old primary as a standby); `is_nominal` and
`rebuild_all` give the lab back its starting roles after them. A fresh cluster takes
about two seconds (fsync off, scale 1), so rebuilding is the reliable way back.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from lab import netns, state
from lab.hosts import BACKENDS, LAB_NET, POSTGRES_PORT, PRIMARY, Host

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_DIR = state.LAB_DIR / "pg"
GUARD_ROLE = "pgpool_anycast"

# Shared by all three: pg_basebackup copies postgresql.conf, so what differs per node
# lives in lab-node.conf, rewritten after each copy.
COMMON_SETTINGS = """
include_if_exists = 'lab-node.conf'
port = {port}
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 120
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
    ensure_guard_role()
    for replica in BACKENDS[1:]:
        basebackup(replica, PRIMARY)
        write_node_conf(replica)
        start(replica)
    wait_streaming(len(BACKENDS) - 1, 30.0)


def ensure_guard_role(primary: Host = PRIMARY) -> None:
    """The role the guard asks pgpool's SHOW POOL_NODES as (its pgpool_user default);
    trust authentication, no privileges. Created on the primary, replicated."""
    if not psql(primary, f"select 1 from pg_roles where rolname = '{GUARD_ROLE}'"):
        psql(primary, f"create role {GUARD_ROLE} login")


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


def stop(host: Host, mode: str = "fast") -> None:
    """Fast shutdown (clients are disconnected), the way an operator stops a node;
    `mode="immediate"` is a crash (no shutdown checkpoint)."""
    as_postgres(
        host,
        [str(PG_BIN / "pg_ctl"), "-D", str(data_dir(host)), "-m", mode, "-w", "-t", "60", "stop"],
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


def wait_streaming(replicas: int, timeout: float, primary: Host = PRIMARY) -> None:
    deadline = time.monotonic() + timeout
    while True:
        count = len(streaming_from(primary))
        if count >= replicas:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{count} of {replicas} replicas streaming from {primary.name} after {timeout:.0f}s"
            )
        time.sleep(0.1)


def streaming_from(primary: Host) -> set[str]:
    """Names of the standbys streaming from `primary` (their cluster_name is the WAL
    receiver's application_name)."""
    sql = "select application_name from pg_stat_replication where state = 'streaming'"
    return set(psql(primary, sql).split())


# -- roles: promotion, re-pointing, rebuilding --------------------------------------


def in_recovery(host: Host) -> bool:
    return psql(host, "select pg_is_in_recovery()") == "t"


def promote(host: Host) -> None:
    """Promote a standby (pg_ctl promote waits until it accepts writes)."""
    as_postgres(host, [str(PG_BIN / "pg_ctl"), "-D", str(data_dir(host)), "-w", "-t", "60",
                       "promote"])  # fmt: skip


def conninfo(primary: Host) -> str:
    return f"host={primary.base_ip} port={POSTGRES_PORT} user=postgres"


def follow(standby: Host, primary: Host) -> None:
    """Re-point a running standby at `primary`. PostgreSQL 13+ restarts the WAL receiver
    on reload when primary_conninfo changes; recovery_target_timeline = 'latest' (the
    default) then follows the promoted node's new timeline."""
    psql(standby, f"alter system set primary_conninfo = '{conninfo(primary)}'")
    psql(standby, "select pg_reload_conf()")


def rebuild_standby(host: Host, primary: Host) -> None:
    """Replace `host`'s data with a fresh copy of `primary` and start it as its standby
    (pg_basebackup -R: reliable whatever `host` was, and about a second here)."""
    if is_running(host):
        stop(host, "immediate")
    if data_dir(host).exists():
        shutil.rmtree(data_dir(host))
    basebackup(host, primary)
    write_node_conf(host)
    start(host)


def basebackup(replica: Host, primary: Host) -> None:
    as_postgres(
        replica,
        [str(PG_BIN / "pg_basebackup"), "-h", primary.base_ip, "-U", "postgres",
         "-D", str(data_dir(replica)), "-R", "-X", "stream", "-c", "fast", "--no-sync"],
    )  # fmt: skip


def primary_host_of(host: Host) -> str | None:
    """The host= of primary_conninfo in postgresql.auto.conf (pg_basebackup -R and
    ALTER SYSTEM both write it there), or None."""
    auto = data_dir(host) / "postgresql.auto.conf"
    if not auto.exists():
        return None
    found = re.findall(r"^primary_conninfo = '.*\bhost=([^ ']+)", auto.read_text(), re.M)
    return found[-1] if found else None


def is_nominal() -> bool:
    """pg1 is the primary, pg2 and pg3 are its standbys (running or not: `start` fixes
    that); False after any promotion, re-pointing or rebuild as a standby."""
    if not (data_dir(PRIMARY) / "PG_VERSION").exists():
        return False
    if (data_dir(PRIMARY) / "standby.signal").exists():
        return False
    for replica in BACKENDS[1:]:
        if not (data_dir(replica) / "standby.signal").exists():
            return False
        if primary_host_of(replica) != PRIMARY.base_ip:
            return False
    return all(not is_running(pg) or in_recovery(pg) == (pg != PRIMARY) for pg in BACKENDS)


def rebuild_all() -> None:
    """Stop every node (as a crash: nothing here is worth a checkpoint) and build the
    starting cluster again: pg1 primary with the pgbench tables, pg2 and pg3 its standbys."""
    for pg in BACKENDS:
        if (data_dir(pg) / "postmaster.pid").exists():  # running, starting or a stale file
            netns.ns_run(
                pg.netns,
                ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D",
                 str(data_dir(pg)), "-m", "immediate", "-w", "-t", "60", "stop"],
                check=False, timeout=90.0,
            )  # fmt: skip
            state.forget_process(f"postgres-{pg.name}")
    setup_all()
