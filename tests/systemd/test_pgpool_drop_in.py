"""The packaged drop-in for pgpool2.service, under a real systemd (issue 3, checks 1-7).

Each test boots a fresh Debian 12 or 13 container (conftest.py), installs this
checkout's .deb, configures the anycast address 198.18.2.0/32, activates the drop-in
the documented way (a symbolic link into /etc/systemd/system/pgpool2.service.d/), and
drives Debian's own pgpool2.service and PostgreSQL.

pgpool itself sometimes hangs on stop (research/real-systemd.md). A bounded stop tells
that case (pgpool's main process stuck, no hook process in the unit) from a hook that
hangs (a hook process in the unit, or the unit stuck in stop-post): the first is
reported as a PgpoolStopHang warning and the unit is killed so the test can still
check what the drop-in does; the second fails the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.container import Container

pytestmark = pytest.mark.systemd

ANYCAST = "198.18.2.0/32"
ANYCAST_IP = ANYCAST.split("/")[0]
PGPOOL_PORT = 9999
PCP_PORT = 9898
PCP_PASSWORD = "pah-test-pcp"
HOOK = "/usr/bin/pgpool-anycast-hook"
HOOK_IDENT = "pgpool-anycast-hook"
DROP_IN_SOURCE = "/usr/share/pgpool-anycast-hook/pgpool2.service.d/pgpool-anycast-hook.conf"
DROP_IN_DIR = "/etc/systemd/system/pgpool2.service.d"
STATUS_DIR = "/var/log/postgresql"  # pgpool's logdir, where pgpool_status lives
STATUS_FILE = f"{STATUS_DIR}/pgpool_status"
CAP_NET_ADMIN = 1 << 12
STOP_BOUND = 20.0  # seconds; pgpool stops in about one, systemd would wait 90

# Runs inside the container: polls lo for the anycast address and pgpool's port, and
# says whether the port accepted a connection before the address first showed up.
WATCHER = r"""
import json, socket, sys, time
from pyroute2 import IPRoute
address, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ipr = IPRoute()
lo = ipr.link_lookup(ifname="lo")[0]
def present():
    return any(a.get_attr("IFA_LOCAL") == address
               for a in ipr.get_addr(family=socket.AF_INET, index=lo))
result = {"present_at_start": present(), "accepting_since": None, "address_since": None,
          "accepting_when_address_seen": None, "polls": 0}
print("ready", flush=True)
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    result["polls"] += 1
    if result["accepting_since"] is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            result["accepting_since"] = time.time()
        except OSError:
            pass
    if present():
        result["address_since"] = time.time()
        result["accepting_when_address_seen"] = result["accepting_since"] is not None
        break
    time.sleep(0.002)
print(json.dumps(result), flush=True)
"""


class PgpoolStopHang(UserWarning):
    """pgpool's main process did not exit on stop (a known pgpool bug, not the hook's)."""


def pgpool_conf(two_backends: bool) -> str:
    """A complete pgpool.conf: the Debian 12 and 13 defaults differ, so set all we rely on.

    `socket_dir` (4.3) and `unix_socket_directories` (4.5+) are both set; pgpool ignores
    the name it does not know with an INFO line.
    """
    lines = [
        "backend_clustering_mode = 'streaming_replication'",
        "listen_addresses = '*'",
        f"port = {PGPOOL_PORT}",
        "socket_dir = '/var/run/postgresql'",
        "unix_socket_directories = '/var/run/postgresql'",
        "pcp_listen_addresses = 'localhost'",
        f"pcp_port = {PCP_PORT}",
        "pcp_socket_dir = '/var/run/postgresql'",
        "pid_file_name = '/var/run/postgresql/pgpool.pid'",
        f"logdir = '{STATUS_DIR}'",
        "num_init_children = 4",
        "max_pool = 1",
        "reserved_connections = 0",
        "backend_hostname0 = '127.0.0.1'",
        "backend_port0 = 5432",
        "backend_weight0 = 1",
        "backend_flag0 = 'ALLOW_TO_FAILOVER'",
        "sr_check_period = 0",
        "sr_check_user = 'postgres'",
        "sr_check_password = ''",
        "health_check_period = 1",
        "health_check_timeout = 2",
        "health_check_user = 'postgres'",
        "health_check_password = ''",
        "health_check_max_retries = 0",
        "connect_timeout = 2000",
        "search_primary_node_timeout = 2",
        "failover_on_backend_error = on",
        f"failover_command = '{HOOK} del %d %P'",
        f"failback_command = '{HOOK} add %d'",
        "memory_cache_enabled = off",
        "memqcache_total_size = 1MB",
        "enable_pool_hba = off",
        "use_watchdog = off",
        "log_destination = 'stderr'",
    ]
    if two_backends:
        # The same PostgreSQL again, through its unix socket: a second real node, so
        # that pgpool_status can mark the primary down without being "bogus".
        lines += [
            "backend_hostname1 = '/var/run/postgresql'",
            "backend_port1 = 5432",
            "backend_weight1 = 1",
            "backend_flag1 = 'ALLOW_TO_FAILOVER'",
        ]
    return "\n".join(lines) + "\n"


class PgpoolUnit:
    """Debian's pgpool2.service with the hook's drop-in, inside one container."""

    def __init__(self, box: Container, suite: str) -> None:
        self.box = box
        self.suite = suite
        self.postgres_uid = -1  # known after prepare()

    drop_in = DROP_IN_SOURCE  # the wiring: the file linked into pgpool2.service.d
    hook_settings = ""  # more lines for the hook's test configuration

    # -- setup -------------------------------------------------------------------

    def prepare(self, two_backends: bool = False) -> None:
        """Configure PostgreSQL, pgpool, PCP and the hook; activate the drop-in."""
        run = self.box.run
        run(["systemctl", "stop", "pgpool2"])
        version = run(["ls", "/etc/postgresql"]).stdout.split()[0]
        self.box.write_file(
            f"/etc/postgresql/{version}/main/pg_hba.conf",
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n",
        )
        run(["systemctl", "start", "postgresql"], timeout=60)
        self.wait_for_postgresql()
        self.box.write_file(
            "/etc/pgpool-anycast-hook/conf.d/50-test.toml",
            f'addresses = ["{ANYCAST}"]\n' + self.hook_settings,
        )
        self.write_pgpool_conf(two_backends)
        digest = hashlib.md5(PCP_PASSWORD.encode()).hexdigest()
        run(["sh", "-c", f"echo 'postgres:{digest}' >> /etc/pgpool2/pcp.conf"])
        self.box.write_file("/root/.pcppass", f"*:*:postgres:{PCP_PASSWORD}\n", mode=0o600)
        run(["mkdir", "-p", DROP_IN_DIR])
        run(["ln", "-s", self.drop_in, f"{DROP_IN_DIR}/"])
        run(["systemctl", "daemon-reload"])
        self.box.write_file("/root/watch_anycast.py", WATCHER)
        self.postgres_uid = int(run(["id", "-u", "postgres"]).stdout)

    def write_pgpool_conf(self, two_backends: bool) -> None:
        self.box.write_file("/etc/pgpool2/pgpool.conf", pgpool_conf(two_backends), mode=0o640)
        self.box.run(["chown", "root:postgres", "/etc/pgpool2/pgpool.conf"])

    # -- pgpool2.service ---------------------------------------------------------

    def start(self) -> None:
        """`systemctl start`; it returns after ExecStartPost (the hook's add) finished."""
        self.box.run(["systemctl", "reset-failed", "pgpool2"], check=False)
        result = self.box.run(["systemctl", "start", "pgpool2"], check=False, timeout=100)
        assert result.returncode == 0, self.explain(f"systemctl start failed: {result.stderr}")

    def state(self) -> dict[str, str]:
        out = self.box.run(
            ["systemctl", "show", "-p", "ActiveState,SubState,Result,MainPID", "pgpool2"]
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self) -> int:
        pid = int(self.state()["MainPID"])
        assert pid > 0, self.explain("pgpool2 has no main process")
        return pid

    def stop(self) -> None:
        """`systemctl stop`, bounded; tells a pgpool hang from a hook hang (module doc)."""
        self.box.run(["systemctl", "stop", "--no-block", "pgpool2"])
        if self.wait_until_stopped(STOP_BOUND):
            return
        state = self.state()
        hooks = self.unit_processes(HOOK_IDENT[:15])
        if state["SubState"] == "stop-post" or hooks:
            pytest.fail(
                self.explain(
                    f"the hook hangs: unit {state['SubState']} after {STOP_BOUND:.0f}s; "
                    f"hook processes {hooks}"
                ),
                pytrace=False,
            )
        stuck = self.unit_processes("")
        message = (
            f"[{self.suite}] pgpool did not stop within {STOP_BOUND:.0f}s "
            f"(unit {state['SubState']}, processes {stuck}; main process: "
            f"{self.process_state(int(state['MainPID']))}); no hook process is "
            f"running, so this is pgpool's own stop hang; killing the unit"
        )
        warnings.warn(message, PgpoolStopHang, stacklevel=2)
        self.box.run(["systemctl", "kill", "--signal=SIGKILL", "pgpool2"], check=False)
        assert self.wait_until_stopped(STOP_BOUND), self.explain("pgpool2 survived SIGKILL")

    def wait_until_stopped(self, bound: float) -> bool:
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            if self.state()["ActiveState"] in ("inactive", "failed"):
                return True
            time.sleep(0.1)
        return False

    def process_state(self, pid: int) -> str:
        """Where a process waits, and its signal masks: evidence for a stop hang."""
        script = (
            'cat /proc/$1/wchan; echo; grep -E "^(State|SigPnd|ShdPnd|SigBlk|SigIgn)" '
            '/proc/$1/status | tr -s "\\t\\n" "  "'
        )
        return self.box.run(["sh", "-c", script, "sh", str(pid)], check=False).stdout.strip()

    def unit_processes(self, name_prefix: str) -> list[str]:
        """PID and command line of the unit's processes whose name starts with a prefix."""
        cgroup = "/sys/fs/cgroup/system.slice/pgpool2.service/cgroup.procs"
        script = (
            'for p in $(cat "$1" 2>/dev/null); do c=$(cat /proc/$p/comm 2>/dev/null); '
            'case "$c" in "$2"*) echo "$p $(tr "\\0" " " < /proc/$p/cmdline)";; esac; done'
        )
        out = self.box.run(["sh", "-c", script, "sh", cgroup, name_prefix], check=False).stdout
        return out.splitlines()

    # -- PostgreSQL and PCP ------------------------------------------------------

    def wait_for_postgresql(self) -> None:
        self.wait_until(
            lambda: (
                self.box.run(
                    ["pg_isready", "-q", "-h", "127.0.0.1", "-t", "1"], check=False
                ).returncode
                == 0
            ),
            30,
            "PostgreSQL accepts connections",
        )

    def pcp_attach_primary(self) -> None:
        """pcp_attach_node -n 0, retried while pgpool still finishes the failover."""
        command = [
            "env",
            "PCPPASSFILE=/root/.pcppass",
            "pcp_attach_node",
            "-h",
            "localhost",
            "-p",
            str(PCP_PORT),
            "-U",
            "postgres",
            "-w",
            "-n",
            "0",
        ]
        last: list[subprocess.CompletedProcess[str]] = []

        def attached() -> bool:
            last[:] = [self.box.run(command, check=False, timeout=15)]
            return last[0].returncode == 0

        self.wait_until(
            attached,
            30,
            "pcp_attach_node -n 0 succeeds",
            lambda: f"last: {last[0].stdout} {last[0].stderr}" if last else "",
        )

    def psql_through_pgpool(self, host: str) -> str:
        return self.box.run(
            [
                "psql",
                "-h",
                host,
                "-p",
                str(PGPOOL_PORT),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                "SELECT 1",
            ],
            check=False,
            timeout=15,
        ).stdout.strip()

    # -- what we observe ---------------------------------------------------------

    def anycast_present(self) -> bool:
        return ANYCAST in self.box.addresses("lo")

    def hook_entries(self, since: float = 0.0) -> list[dict[str, str]]:
        """The hook's syslog lines in the journal, optionally only those after `since`.

        Only _TRANSPORT=syslog: the copy the hook writes to stderr reaches the journal
        too (as stdout of the unit) and must not stand in for the syslog line.
        """
        entries = self.box.journal_entries(f"SYSLOG_IDENTIFIER={HOOK_IDENT}", "_TRANSPORT=syslog")
        return [e for e in entries if int(e["__REALTIME_TIMESTAMP"]) / 1e6 >= since]

    def pgpool_log(self) -> str:
        return self.box.journal("pgpool2")

    def wait_until(
        self,
        condition: Callable[[], bool],
        bound: float,
        what: str,
        detail: Callable[[], str] = str,
    ) -> None:
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        pytest.fail(self.explain(f"not within {bound:.0f}s: {what}. {detail()}"), pytrace=False)

    def explain(self, what: str) -> str:
        """A failure message with the evidence: unit state, addresses and journal excerpts."""
        try:
            state = self.state()
            addresses = self.box.addresses("lo")
            hook_lines = self.box.journal(
                matches=(f"SYSLOG_IDENTIFIER={HOOK_IDENT}", "_TRANSPORT=syslog")
            )
            unit_lines = self.pgpool_log().splitlines()[-40:]
        except Exception as error:  # the evidence is best effort; keep the real failure
            return f"[{self.suite}] {what} (no evidence: {error})"
        return (
            f"[{self.suite}] {what}\nunit: {state}\nlo: {addresses}\n"
            f"--- hook's journal lines ---\n{hook_lines}\n"
            f"--- pgpool2.service journal (last 40) ---\n" + "\n".join(unit_lines)
        )

    def assert_hook_runs_privileged(self, actions: set[str]) -> list[dict[str, str]]:
        """Check 6 on every hook run so far: postgres, CAP_NET_ADMIN only, line in journal."""
        entries = self.hook_entries()
        seen = {fields(e).get("action", "?") for e in entries}
        assert actions <= seen, self.explain(f"hook actions {actions - seen} never logged")
        for entry in entries:
            line = entry.get("MESSAGE", "")
            assert int(entry["_UID"]) == self.postgres_uid, self.explain(
                f"hook ran as uid {entry['_UID']}, not postgres: {line}"
            )
            # journald reads capabilities from /proc when the line arrives; a run that
            # already exited leaves the field out, but _UID comes with the datagram.
            if "_CAP_EFFECTIVE" in entry:
                assert int(entry["_CAP_EFFECTIVE"], 16) == CAP_NET_ADMIN, self.explain(
                    f"hook's effective capabilities {entry['_CAP_EFFECTIVE']}, "
                    f"expected only CAP_NET_ADMIN (1000): {line}"
                )
            assert fields(entry).get("result") == "ok", self.explain(f"hook run failed: {line}")
        return entries


def changed_an_address(entry: dict[str, str]) -> bool:
    """The hook line reports an address it added or deleted (changed=+a or changed=-a)."""
    return fields(entry).get("changed", "none")[:1] in ("+", "-")


def fields(entry: dict[str, str]) -> dict[str, str]:
    """key=value pairs of a hook line (values without spaces are enough here)."""
    message = entry.get("MESSAGE", "")
    return dict(word.split("=", 1) for word in message.split() if "=" in word)


@pytest.fixture
def unit(box: Container, suite_root: tuple[str, Path]) -> Iterator[PgpoolUnit]:
    """pgpool2.service ready to start; stopped again (bounded) before the container is."""
    pgpool = PgpoolUnit(box, suite_root[0])
    yield pgpool
    if pgpool.state()["ActiveState"] not in ("inactive", "failed"):
        pgpool.stop()


def wait_absent(unit: PgpoolUnit, bound: float, why: str) -> None:
    unit.wait_until(lambda: not unit.anycast_present(), bound, f"{ANYCAST} gone from lo ({why})")


def wait_present(unit: PgpoolUnit, bound: float, why: str) -> None:
    unit.wait_until(unit.anycast_present, bound, f"{ANYCAST} on lo ({why})")


def test_1_start_adds_address_only_once_pgpool_accepts(unit: PgpoolUnit) -> None:
    unit.prepare()
    assert not unit.anycast_present(), unit.explain("address present before pgpool started")
    watcher = subprocess.Popen(
        unit.box.command(["python3", "/root/watch_anycast.py", ANYCAST_IP, str(PGPOOL_PORT), "90"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its group holds nsenter and the watcher inside
    )
    try:
        assert watcher.stdout is not None
        ready, _, _ = select.select([watcher.stdout], [], [], 30)
        assert ready and watcher.stdout.readline().strip() == "ready", "watcher did not start"
        unit.start()
        out, _ = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGKILL)
            watcher.communicate(timeout=10)
    seen = json.loads(out.strip().splitlines()[-1])
    assert not seen["present_at_start"], unit.explain(f"address present before start: {seen}")
    assert seen["address_since"] is not None, unit.explain(f"address never appeared: {seen}")
    assert seen["accepting_when_address_seen"], unit.explain(
        f"address appeared before pgpool accepted connections on {PGPOOL_PORT}: {seen}"
    )
    assert unit.anycast_present()
    # The address serves: a client reaches PostgreSQL through pgpool on the anycast address.
    unit.wait_until(
        lambda: unit.psql_through_pgpool(ANYCAST_IP) == "1",
        20,
        "SELECT 1 through pgpool on the anycast address",
    )
    unit.assert_hook_runs_privileged({"clean", "add"})


def test_2_kill_9_removes_address(unit: PgpoolUnit) -> None:
    unit.prepare()
    unit.start()
    wait_present(unit, 5, "after start")
    killed_at = time.time()
    unit.box.run(["kill", "-9", str(unit.main_pid())])
    wait_absent(unit, 15, "ExecStopPost after kill -9")
    unit.wait_until(
        lambda: unit.state()["ActiveState"] in ("inactive", "failed"), 15, "unit down after kill -9"
    )
    dels = [fields(e) for e in unit.hook_entries(since=killed_at)]
    assert any(f.get("action") == "del" and "old_primary" not in f for f in dels), unit.explain(
        "no `del 0` from ExecStopPost after kill -9"
    )
    unit.assert_hook_runs_privileged({"clean", "add", "del"})


def test_3_restart_brings_address_back_and_stop_removes_it(unit: PgpoolUnit) -> None:
    unit.prepare()
    unit.start()
    wait_present(unit, 5, "after first start")
    unit.box.run(["kill", "-9", str(unit.main_pid())])
    wait_absent(unit, 15, "after kill -9")
    unit.wait_until(
        lambda: unit.state()["ActiveState"] in ("inactive", "failed"), 15, "unit down after kill -9"
    )
    unit.start()  # reset-failed first, as after any crash
    wait_present(unit, 5, "after restart")
    unit.stop()
    assert unit.state()["ActiveState"] in ("inactive", "failed")
    wait_absent(unit, 5, "after systemctl stop")
    unit.assert_hook_runs_privileged({"clean", "add", "del"})


def test_4_status_file_with_primary_down_is_set_aside(unit: PgpoolUnit) -> None:
    unit.prepare(two_backends=True)
    original = "down\nup\n"  # node 0, the primary, down; node 1 up: pgpool would obey it
    unit.box.write_file(STATUS_FILE, original)
    unit.box.run(["chown", "postgres:postgres", STATUS_FILE])
    unit.start()
    assert unit.state()["ActiveState"] == "active", unit.explain("pgpool2 not active")
    wait_present(unit, 5, "after start with the primary marked down")
    listing = unit.box.run(["sh", "-c", f"ls -1 {STATUS_DIR}"]).stdout.split()
    aside = [name for name in listing if name.startswith("pgpool_status.")]
    assert len(aside) == 1, unit.explain(f"expected one set-aside pgpool_status, got {listing}")
    assert any(ch.isdigit() for ch in aside[0]), unit.explain(f"no timestamp in {aside[0]}")
    kept = unit.box.run(["cat", f"{STATUS_DIR}/{aside[0]}"]).stdout
    assert kept == original, unit.explain(f"set-aside file content {kept!r} != {original!r}")
    # pgpool really uses the primary: node 0 is not down in its own view.
    unit.wait_until(
        lambda: unit.psql_through_pgpool("127.0.0.1") == "1", 20, "SELECT 1 through pgpool"
    )
    nodes = unit.box.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(PGPOOL_PORT),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atc",
            "SHOW pool_nodes",
        ]
    ).stdout
    node0 = nodes.splitlines()[0].split("|")
    assert node0[0] == "0" and node0[3] in ("up", "waiting"), unit.explain(f"pool_nodes: {nodes}")
    unit.assert_hook_runs_privileged({"clean", "add"})


def test_5_real_failover_and_failback(unit: PgpoolUnit) -> None:
    unit.prepare()
    unit.start()
    wait_present(unit, 5, "after start")
    unit.box.run(["systemctl", "stop", "postgresql"], timeout=60)
    wait_absent(unit, 20, "failover_command after PostgreSQL stopped")
    assert unit.state()["ActiveState"] == "active", unit.explain(
        "pgpool2 stopped: the address went with ExecStopPost, not with failover_command"
    )
    failovers = [
        fields(e)
        for e in unit.hook_entries()
        if fields(e).get("action") == "del" and fields(e).get("old_primary") == "0"
    ]
    assert failovers, unit.explain("no `del 0 0` line from failover_command")

    unit.box.run(["systemctl", "start", "postgresql"], timeout=60)
    unit.wait_for_postgresql()
    attached_at = time.time()
    unit.pcp_attach_primary()
    wait_present(unit, 15, "failback_command after pcp_attach_node")
    failbacks = [fields(e) for e in unit.hook_entries(since=attached_at)]
    assert any(f.get("action") == "add" for f in failbacks), unit.explain(
        "no `add` line from failback_command"
    )
    # pgpool 4.4+ (Debian 13) expands %d with a leading space; this shows the hook got it.
    log = unit.pgpool_log()
    spaced = f"execute command: {HOOK} add  0" in log
    assert spaced == (unit.suite != "bookworm"), unit.explain(
        f"unexpected %d expansion in pgpool's 'execute command' line (double space: {spaced})"
    )
    unit.assert_hook_runs_privileged({"clean", "add", "del"})


def test_6_every_hook_run_is_postgres_with_cap_net_admin(unit: PgpoolUnit) -> None:
    """All four ways the hook runs: ExecStartPre, ExecStartPost, failover, ExecStopPost."""
    unit.prepare()
    unit.start()
    wait_present(unit, 5, "after start")
    unit.box.run(["systemctl", "stop", "postgresql"], timeout=60)
    wait_absent(unit, 20, "failover_command")
    unit.stop()
    entries = unit.assert_hook_runs_privileged({"clean", "add", "del"})
    by_origin = {
        "ExecStartPre clean": [e for e in entries if fields(e).get("action") == "clean"],
        "ExecStartPost add": [e for e in entries if fields(e).get("action") == "add"],
        "failover_command del": [e for e in entries if fields(e).get("old_primary") == "0"],
        "ExecStopPost del": [
            e
            for e in entries
            if fields(e).get("action") == "del" and "old_primary" not in fields(e)
        ],
    }
    missing = [origin for origin, found in by_origin.items() if not found]
    assert not missing, unit.explain(f"no hook line from {missing}")
    # Each origin proves CAP_NET_ADMIN once: by the journal's _CAP_EFFECTIVE (read from
    # /proc when journald gets the line, so missing when the run already exited: CI under
    # load), or by an address it changed as postgres, which the kernel refuses without it.
    unproven = [
        o
        for o, found in by_origin.items()
        if not any("_CAP_EFFECTIVE" in e or changed_an_address(e) for e in found)
    ]
    assert not unproven, unit.explain(f"no proof of CAP_NET_ADMIN from {unproven}")
    assert all(e.get("_SYSTEMD_UNIT") == "pgpool2.service" for e in entries), unit.explain(
        "a hook line not from pgpool2.service"
    )


def test_7_purge_leaves_no_files_and_no_address(unit: PgpoolUnit) -> None:
    unit.prepare()
    unit.start()
    wait_present(unit, 5, "after start")
    # Classify before purging: a directory (even through a symlink such as /lib on
    # merged-/usr systems) may be shared with other packages; anything else is ours.
    classify = 'for p; do if [ -d "$p" ]; then echo "d $p"; else echo "f $p"; fi; done'
    listed = unit.box.run(["dpkg", "-L", "pgpool-anycast-hook"]).stdout.split()
    kinds = unit.box.run(["sh", "-c", classify, "sh", *listed]).stdout.splitlines()
    files = [line[2:] for line in kinds if line.startswith("f ")]
    own_dirs = [
        line[2:]
        for line in kinds
        if line.startswith("d ")
        and any(n in line for n in ("pgpool-anycast-hook", "pgpool_anycast"))
    ]
    assert files, unit.explain(f"dpkg -L listed no files: {listed}")
    purge = unit.box.run(
        ["apt-get", "purge", "-y", "pgpool-anycast-hook"], check=False, timeout=120
    )
    assert purge.returncode == 0, unit.explain(f"apt-get purge failed: {purge.stderr}")
    status = unit.box.run(
        ["dpkg-query", "-W", "-f=${Status}", "pgpool-anycast-hook"], check=False
    ).stdout
    assert "installed" not in status.split(), unit.explain(f"still installed: {status!r}")
    exists = 'for p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
    state_dirs = ["/etc/pgpool-anycast-hook", "/var/lib/pgpool-anycast-hook"]
    left = unit.box.run(["sh", "-c", exists, "sh", *files, *own_dirs, *state_dirs]).stdout
    assert not left.strip(), unit.explain(f"purge left files of ours:\n{left}")
    link = f"{DROP_IN_DIR}/{Path(DROP_IN_SOURCE).name}"
    assert unit.box.run(["test", "-L", link], check=False).returncode != 0, unit.explain(
        f"purge left the activation link {link}"
    )
    assert not unit.anycast_present(), unit.explain("purge left the anycast address on lo")
    # pgpool2 still works without us: a restart neither fails on a missing hook nor
    # brings an address back.
    unit.box.run(["systemctl", "daemon-reload"])
    unit.stop()
    unit.start()
    assert unit.state()["ActiveState"] == "active", unit.explain("pgpool2 broken after purge")
    assert not unit.anycast_present(), unit.explain("address back after purge and restart")
