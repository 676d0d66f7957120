"""serve = "postgresql": the PostgreSQL host's last-resort announcement, with real servers.

A real PostgreSQL 15 primary and its streaming standby, each started by the test in
a network namespace of its own (fb-<pid>-<n>-a, fb-<pid>-<n>-b), with private data
directories and unix sockets only (the standby streams over the primary's socket).
A guard with serve = "postgresql" runs in each namespace and asks its server for its
role; the address is read from the namespace's lo with `ip -j` (netlink), never from
the guard's own report. The primary's guard announces and the standby's does not; a
stopped primary is withdrawn within postgresql_misses x interval plus a margin; the
promoted standby announces; the old primary, back as a standby, stays withdrawn; a
drain holds while PostgreSQL answers and ends when it restarts; pgpool's add and del
say they do not apply.

Every process is ended by its PID, every wait is bounded, nothing is mocked.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.conftest import require_root
from tests.netns.test_guard import (
    AS_POSTGRES,
    INTERVAL,
    LEASE,
    Bed,
    holds_throughout,
    present,
    valid_lft,
    wait_until,
)
from tests.pgpool.conftest import AS_POSTGRES as PG_AS_POSTGRES
from tests.pgpool.conftest import PG_BIN, require_components

pytestmark = pytest.mark.netns

PORTS = (5433, 5434)  # pg0 (the primary first), pg1 (its standby first)
MISSES, TIMEOUT = 3, 0.15  # postgresql_misses, postgresql_timeout (INTERVAL is 0.2 s)
MARGIN = 1.5  # seconds of slack for a noisy machine, on top of what the guard promises
WITHDRAW_BOUND = INTERVAL * (MISSES + 1) + TIMEOUT + MARGIN
ANSWER_BOUND = INTERVAL + TIMEOUT + MARGIN  # a server that answers is seen within this
_names = itertools.count()


class Pair:
    """pg0 in namespace a, pg1 in namespace b: sockets in one directory, ports apart."""

    def __init__(self, namespaces: tuple[str, str], root: Path) -> None:
        self.namespaces, self.root = namespaces, root

    def data(self, node: int) -> Path:
        return self.root / f"pg{node}"

    def run(self, node: int, *command: str) -> str:
        argv = ["ip", "netns", "exec", self.namespaces[node], *PG_AS_POSTGRES, *command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done.stdout

    def pg_ctl(self, node: int, *args: str) -> str:
        return self.run(node, str(PG_BIN / "pg_ctl"), "-D", str(self.data(node)), *args)

    def start_node(self, node: int) -> None:
        options = f"-p {PORTS[node]} -k {self.root} -c listen_addresses='' -c fsync=off"
        self.pg_ctl(node, "-o", options, "-l", str(self.root / f"pg{node}.log"),
                    "-w", "-t", "60", "start")  # fmt: skip

    def stop_node(self, node: int, mode: str) -> None:
        if (self.data(node) / "postmaster.pid").exists():
            self.pg_ctl(node, "-m", mode, "-w", "-t", "30", "stop")

    def follow(self, node: int, primary: int) -> None:
        """Make `node` a standby of `primary` (standby.signal and primary_conninfo)."""
        (self.data(node) / "standby.signal").write_text("")
        conninfo = f"host={self.root} port={PORTS[primary]} user=postgres"
        with open(self.data(node) / "postgresql.auto.conf", "a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")
        shutil.chown(self.data(node) / "standby.signal", "postgres", "postgres")

    def in_recovery(self, node: int) -> str:
        return self.run(node, str(PG_BIN / "psql"), "-h", str(self.root), "-p", str(PORTS[node]),
                        "-U", "postgres", "-Atc", "SELECT pg_is_in_recovery()").strip()  # fmt: skip

    def start(self) -> None:
        self.run(0, str(PG_BIN / "initdb"), "-D", str(self.data(0)), "-U", "postgres",
                 "--auth=trust", "--no-sync")  # fmt: skip
        self.start_node(0)
        self.run(1, str(PG_BIN / "pg_basebackup"), "-h", str(self.root), "-p", str(PORTS[0]),
                 "-U", "postgres", "-D", str(self.data(1)), "-R", "-X", "stream")  # fmt: skip
        self.start_node(1)

    def stop(self) -> None:
        for node in (1, 0):
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop_node(node, "immediate")


def role(bed: Bed) -> object:
    """The guard's own word (guard.json), for the failure messages and as a second look."""
    try:
        return json.loads((bed.guard_dir / "guard.json").read_text())["role"]
    except (OSError, ValueError, KeyError):
        return None


def fallback_config(bed: Bed, pair: Pair, node: int) -> None:
    bed.write_config(
        serve="postgresql",
        postgresql_socket_dir=str(pair.root),
        postgresql_port=PORTS[node],
        postgresql_user="postgres",
        postgresql_passfile="",
        postgresql_timeout=TIMEOUT,
        postgresql_misses=MISSES,
        drain_seconds=0.0,
        drain_timeout=0.0,
        metrics_file=str(bed.root / "metrics.prom"),
    )


def metric(bed: Bed, name: str) -> float | None:
    """One unlabelled series of the guard's metrics file, read with prometheus' parser."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = (bed.root / "metrics.prom").read_text()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    return None


@pytest.fixture
def fallback() -> Iterator[tuple[Pair, Bed, Bed]]:
    require_root()
    require_components()
    tag = f"fb-{os.getpid()}-{next(_names)}"
    namespaces = (f"{tag}-a", f"{tag}-b")
    root = Path(tempfile.mkdtemp(prefix="pah-fallback-", dir="/tmp"))
    os.chmod(root, 0o755)
    pg_root = root / "cluster"
    pg_root.mkdir()
    shutil.chown(pg_root, "postgres", "postgres")
    made: list[str] = []
    beds: list[Bed] = []
    pair = Pair(namespaces, pg_root)
    try:
        for name in namespaces:
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
            made.append(name)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        for node, name in enumerate(namespaces):
            bed_root = root / f"bed{node}"
            bed_root.mkdir(mode=0o755)
            beds.append(Bed(name, bed_root))
            fallback_config(beds[-1], pair, node)
        pair.start()
        yield pair, beds[0], beds[1]
    finally:
        for bed in beds:
            bed.close()
        pair.stop()
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def test_the_address_follows_the_primary(fallback: tuple[Pair, Bed, Bed]) -> None:
    pair, a, b = fallback
    assert pair.in_recovery(0) == "f" and pair.in_recovery(1) == "t"
    a.start_guard()
    b.start_guard()
    assert wait_until(lambda: present(a.netns), ANSWER_BOUND) is not None, a.diagnostics()
    assert holds_throughout(lambda: not present(b.netns), 10 * INTERVAL), b.diagnostics()
    assert wait_until(lambda: present(a.netns), 0.5) is not None, "the primary's stayed"
    assert (role(a) or {}).get("role") == "primary", role(a)  # type: ignore[union-attr]
    assert (role(b) or {}).get("role") == "standby", role(b)  # type: ignore[union-attr]
    primary = "pgpool_anycast_postgresql_primary"
    assert wait_until(lambda: metric(a, primary) == 1.0, 2.0) is not None, metric(a, primary)
    assert wait_until(lambda: metric(b, primary) == 0.0, 2.0) is not None, metric(b, primary)

    # pgpool's hooks do not apply on a PostgreSQL host: exit 2, and they say so.
    for verb in ("add", "del", "clean"):
        refused = b.run(verb, "0", prefix=AS_POSTGRES)
        assert refused.returncode == 2, (verb, refused)
        assert "result=not-applicable" in refused.stderr, refused.stderr
    assert not present(b.netns)

    # The primary stops: withdrawn once postgresql_misses queries in a row went unanswered.
    pair.stop_node(0, "fast")
    gone = wait_until(lambda: not present(a.netns), WITHDRAW_BOUND)
    assert gone is not None, f"not withdrawn within {WITHDRAW_BOUND:g} s:\n{a.diagnostics()}"
    # The line follows the withdrawal it reports: waited for, not read at once.
    withdrawal = a.syslog.wait_for(2.0, event="transition", transition="ANNOUNCED->WITHDRAWN")
    assert withdrawal is not None, a.diagnostics()
    assert "unanswered" in withdrawal.get("reason", ""), withdrawal

    # The standby is promoted: its guard announces at its next answer.
    pair.pg_ctl(1, "-w", "-t", "30", "promote")
    promoted = wait_until(lambda: present(b.netns), ANSWER_BOUND)
    assert promoted is not None, f"the promoted standby was not announced:\n{b.diagnostics()}"

    # The old primary comes back as a standby of the new one: it answers, and stays dark
    # longer than its hold-down and many intervals.
    pair.follow(0, primary=1)
    pair.start_node(0)
    assert pair.in_recovery(0) == "t"
    answered = wait_until(lambda: (role(a) or {}).get("role") == "standby", ANSWER_BOUND)  # type: ignore[union-attr]
    assert answered is not None, role(a)
    assert holds_throughout(lambda: not present(a.netns), 2.0 + 10 * INTERVAL), a.diagnostics()
    assert present(b.netns)

    # The new primary dies at once (immediate): withdrawn within the same bound.
    pair.stop_node(1, "immediate")
    gone = wait_until(lambda: not present(b.netns), WITHDRAW_BOUND)
    assert gone is not None, f"not withdrawn within {WITHDRAW_BOUND:g} s:\n{b.diagnostics()}"
    assert not present(a.netns)


def test_a_drain_holds_until_postgresql_restarts(fallback: tuple[Pair, Bed, Bed]) -> None:
    pair, a, _ = fallback
    a.start_guard()
    assert wait_until(lambda: present(a.netns), ANSWER_BOUND) is not None, a.diagnostics()
    drained = a.run("drain", prefix=AS_POSTGRES)
    assert drained.returncode == 0, drained.stderr
    assert not present(a.netns)
    stayed = holds_throughout(lambda: not present(a.netns), 10 * INTERVAL)
    assert stayed, f"a drain was undone while PostgreSQL answers:\n{a.diagnostics()}"
    assert (role(a) or {}).get("role") == "primary"  # type: ignore[union-attr]
    log = str(pair.root / "pg0.log")
    pair.pg_ctl(0, "-m", "fast", "-l", log, "-w", "-t", "30", "restart")  # a new postmaster
    back = wait_until(lambda: present(a.netns), ANSWER_BOUND + 2.0)
    assert back is not None, f"not announced after PostgreSQL restarted:\n{a.diagnostics()}"


def test_leases_adoption_and_a_dead_guard(fallback: tuple[Pair, Bed, Bed]) -> None:
    """As every guard's: the address is leased; a guard restarted at once adopts it without
    a blink; a guard that dies for good takes it with it within the lease, although
    PostgreSQL goes on answering as the primary."""
    _, a, _ = fallback
    first = a.start_guard()
    assert wait_until(lambda: present(a.netns), ANSWER_BOUND) is not None, a.diagnostics()
    left = valid_lft(a.netns)
    assert left is not None and left <= LEASE, left  # a lease, not forever
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    a.start_guard()
    assert holds_throughout(lambda: present(a.netns), 10 * INTERVAL), a.diagnostics()
    adopted = a.syslog.wait_for(2.0, event="transition", transition="ADOPTING->ANNOUNCED")
    assert adopted is not None, a.diagnostics()
    second = a.guards[-1]
    os.kill(second.pid, signal.SIGKILL)
    second.wait(timeout=10)
    gone = wait_until(lambda: not present(a.netns), LEASE + MARGIN)
    assert gone is not None, f"the dead guard's address outlived its lease:\n{a.diagnostics()}"


def test_the_pg_hba_example_parses(tmp_path: Path) -> None:
    """docs/examples/pg_hba-fallback.conf in a real PostgreSQL 15: every line a rule, no error."""
    require_root()
    require_components()
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "pg_hba-fallback.conf"
    lines = [line for line in example.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="pah-fallback-hba-", dir="/tmp"))
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres", "postgres")
    data = root / "pg"
    psql = [str(PG_BIN / "psql"), "-h", str(root), "-p", str(PORTS[0]), "-U", "postgres", "-At"]

    def as_postgres(*command: str) -> str:
        done = subprocess.run([*PG_AS_POSTGRES, *command], capture_output=True, text=True,
                              timeout=90)  # fmt: skip
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done.stdout

    try:
        as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync")  # fmt: skip
        (data / "pg_ident.conf").write_text(
            "pgpool-anycast  pgpool-anycast-guard  pgpool_anycast\n"
        )
        (data / "pg_hba.conf").write_text("local all postgres trust\n" + example.read_text())
        # hostssl lines are an error in pg_hba_file_rules unless ssl = on: a throwaway cert.
        as_postgres("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=pah-test", "-keyout", str(data / "server.key"),
                    "-out", str(data / "server.crt"))  # fmt: skip
        options = f"-p {PORTS[0]} -k {root} -c listen_addresses='' -c fsync=off -c ssl=on"
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options,
                    "-l", str(root / "pg.log"), "-w", "-t", "60", "start")  # fmt: skip
        errors = as_postgres(*psql, "-c", "SELECT line_number, error FROM pg_hba_file_rules "
                             "WHERE error IS NOT NULL")  # fmt: skip
        assert errors == "", errors
        rules = as_postgres(*psql, "-c", "SELECT count(*) FROM pg_hba_file_rules")
        assert int(rules) == 1 + len(lines)  # the test's own line, then every example line
        rejects = as_postgres(*psql, "-c", "SELECT count(*) FROM pg_hba_file_rules "
                              "WHERE auth_method = 'reject'")  # fmt: skip
        assert int(rejects) == 3
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
