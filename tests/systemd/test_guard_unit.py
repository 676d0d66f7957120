"""The guarded wiring under a real systemd: pgpool-anycast-hook-guard.service and the
guarded drop-in for pgpool2.service, on Debian 12 and 13.

Each test boots a fresh container (conftest.py), installs this checkout's .deb,
configures the anycast address with `mode = "guarded"`, links the guarded drop-in
the documented way and starts pgpool2.service, which pulls in the guard. What the
tests hold the units to:

- order and binding: the guard is ready before pgpool2 starts, stops only after
  pgpool2 stopped, stops with it, and restarting it alone leaves pgpool running;
- privilege: the guard runs as its own user with exactly CAP_NET_ADMIN; pgpool and
  all its processes have no capability at all; `systemd-analyze security` says OK;
- behaviour: the address comes once pgpool listens, goes when pgpool is killed
  (the guard withdraws), and does not blink while the guard itself is killed and
  restarted by systemd, or reloaded;
- purge leaves no file, no user and no address.

pgpool's own hang on stop (research/real-systemd.md) is handled by PgpoolUnit.stop.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.container import Container
from tests.systemd.test_pgpool_drop_in import (
    ANYCAST,
    ANYCAST_IP,
    CAP_NET_ADMIN,
    DROP_IN_DIR,
    PGPOOL_PORT,
    PgpoolUnit,
)

pytestmark = pytest.mark.systemd

GUARD = "pgpool-anycast-hook-guard.service"
GUARD_USER = "pgpool-anycast-guard"
GUARDED_SOURCE = "/usr/share/pgpool-anycast-hook/pgpool2.service.d/pgpool-anycast-hook-guarded.conf"
RUNTIME_DIR = "/run/pgpool-anycast-hook"
MAX_EXPOSURE = 4.9
CAP_FIELDS = ("CapEff", "CapPrm", "CapAmb")

# Runs inside the container: polls lo for the anycast address every few milliseconds
# for `seconds`, and reports how often it was seen absent (and when, first and last).
PRESENCE_WATCHER = r"""
import json, socket, sys, time
from pyroute2 import IPRoute
address, seconds = sys.argv[1], float(sys.argv[2])
ipr = IPRoute()
lo = ipr.link_lookup(ifname="lo")[0]
def present():
    return any(a.get_attr("IFA_LOCAL") == address
               for a in ipr.get_addr(family=socket.AF_INET, index=lo))
result = {"polls": 0, "absent": 0, "first_absent": None, "last_absent": None}
print("ready", flush=True)
started = time.monotonic()
while time.monotonic() - started < seconds:
    result["polls"] += 1
    if not present():
        result["absent"] += 1
        at = round(time.monotonic() - started, 3)
        result["first_absent"] = result["first_absent"] or at
        result["last_absent"] = at
    time.sleep(0.005)
print(json.dumps(result), flush=True)
"""


class GuardedUnit(PgpoolUnit):
    """pgpool2.service with the guarded drop-in, and the guard unit it pulls in."""

    drop_in = GUARDED_SOURCE
    hook_settings = 'mode = "guarded"\n'

    def prepare(self, two_backends: bool = False) -> None:
        """As PgpoolUnit.prepare, with `mode = "guarded"` and the guarded drop-in."""
        super().prepare(two_backends)
        self.box.run(["pgpool-anycast-hook", "check-config"])
        self.box.write_file("/root/watch_presence.py", PRESENCE_WATCHER)

    # -- the guard unit ----------------------------------------------------------

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.box.run(["systemctl", "show", "-p", ",".join(props), unit]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def guard(self) -> dict[str, str]:
        return self.show(GUARD, "ActiveState", "SubState", "Result", "MainPID", "NRestarts")

    def guard_pid(self) -> int:
        pid = int(self.guard()["MainPID"])
        assert pid > 0, self.explain("the guard has no main process")
        return pid

    def guard_log(self) -> str:
        return self.box.journal(GUARD)

    def explain(self, what: str) -> str:
        base = super().explain(what)
        try:
            state = self.guard()
            lines = self.guard_log().splitlines()[-40:]
        except Exception as error:  # best effort, as in PgpoolUnit.explain
            return f"{base}\n(no guard evidence: {error})"
        return f"{base}\nguard: {state}\n--- {GUARD} journal (last 40) ---\n" + "\n".join(lines)

    def proc_status(self, pid: int) -> dict[str, str]:
        out = self.box.run(["cat", f"/proc/{pid}/status"]).stdout
        return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}

    def children(self, pid: int) -> list[int]:
        out = self.box.run(["ps", "-e", "-o", "pid=,ppid="]).stdout
        pairs = [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]
        return [child for child, parent in pairs if parent == pid]

    def job_messages(self, unit: str, verb: str) -> list[int]:
        """Monotonic times (us) of PID 1's "<verb> <unit>" journal lines, oldest first.

        From the journal rather than `systemctl show`: a stopped unit that nothing
        references is unloaded, and its timestamps with it.
        """
        found = [
            int(entry["__MONOTONIC_TIMESTAMP"])
            for entry in self.box.journal_entries("_PID=1", f"UNIT={unit}")
            if str(entry.get("MESSAGE", "")).startswith(f"{verb} {unit}")
        ]
        assert found, self.explain(f"no journal line '{verb} {unit}' from systemd")
        return sorted(found)


@pytest.fixture
def unit(box: Container, suite_root: tuple[str, Path]) -> Iterator[GuardedUnit]:
    """The guarded pgpool2.service; stopped again (bounded) before the container is."""
    pgpool = GuardedUnit(box, suite_root[0])
    yield pgpool
    if pgpool.state()["ActiveState"] not in ("inactive", "failed"):
        pgpool.stop()


def wait_present(unit: GuardedUnit, bound: float, why: str) -> None:
    unit.wait_until(unit.anycast_present, bound, f"{ANYCAST} on lo ({why})")


def wait_absent(unit: GuardedUnit, bound: float, why: str) -> None:
    unit.wait_until(lambda: not unit.anycast_present(), bound, f"{ANYCAST} gone from lo ({why})")


class Watch:
    """PRESENCE_WATCHER running inside the container, started and read back bounded."""

    def __init__(self, unit: GuardedUnit, seconds: float) -> None:
        self.unit = unit
        self.seconds = seconds
        self.proc = subprocess.Popen(
            unit.box.command(["python3", "/root/watch_presence.py", ANYCAST_IP, str(seconds)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its group holds nsenter and the watcher inside
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready and self.proc.stdout.readline().strip() == "ready", "watcher did not start"

    def result(self) -> dict[str, object]:
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.communicate(timeout=10)
        assert out.strip(), f"watcher printed nothing: {err}"
        seen: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return seen


def test_1_order_privilege_security_reload_and_stop(unit: GuardedUnit) -> None:
    unit.prepare()
    assert unit.guard()["ActiveState"] == "inactive", unit.explain("guard runs before pgpool2")
    assert not unit.anycast_present(), unit.explain("address present before pgpool started")
    watcher = subprocess.Popen(
        unit.box.command(["python3", "/root/watch_anycast.py", ANYCAST_IP, str(PGPOOL_PORT), "90"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert watcher.stdout is not None
        ready, _, _ = select.select([watcher.stdout], [], [], 30)
        assert ready and watcher.stdout.readline().strip() == "ready", "watcher did not start"
        unit.start()  # pgpool2 only: its drop-in pulls the guard in
        out, _ = watcher.communicate(timeout=60)
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

    # Start order: the guard was ready (READY=1) before pgpool2 began to start.
    guard = unit.guard()
    assert guard["ActiveState"] == "active" and guard["SubState"] == "running", unit.explain(
        "the guard is not running after systemctl start pgpool2"
    )
    guard_ready = unit.job_messages(GUARD, "Started")[-1]
    pgpool_starting = unit.job_messages("pgpool2.service", "Starting")[-1]
    assert guard_ready <= pgpool_starting, unit.explain(
        f"guard ready at {guard_ready} us, after pgpool2 began starting at {pgpool_starting} us"
    )

    # The guard: its own user, the postgres group, exactly CAP_NET_ADMIN.
    guard_pid = unit.guard_pid()
    status = unit.proc_status(guard_pid)
    guard_uid = int(unit.box.run(["id", "-u", GUARD_USER]).stdout)
    postgres_gid = int(unit.box.run(["id", "-g", "postgres"]).stdout)
    assert [int(u) for u in status["Uid"].split()] == [guard_uid] * 4, unit.explain(
        f"guard runs as {status['Uid']}, not {GUARD_USER} ({guard_uid})"
    )
    assert postgres_gid in [int(g) for g in status["Groups"].split()], unit.explain(
        f"guard lacks the postgres group: Groups {status['Groups']}"
    )
    for name in ("CapEff", "CapPrm"):
        assert int(status[name], 16) == CAP_NET_ADMIN, unit.explain(
            f"guard {name}={status[name]}, expected exactly CAP_NET_ADMIN (0x1000)"
        )
    # systemd hands it over as an ambient capability; the guard clears the ambient set
    # at start, so that nothing it runs (on_change) inherits it.
    assert int(status["CapAmb"], 16) == 0, unit.explain(f"guard CapAmb={status['CapAmb']}")
    assert int(status["CapBnd"], 16) == CAP_NET_ADMIN, unit.explain(f"guard CapBnd {status}")
    assert status["NoNewPrivs"] == "1", unit.explain("guard without NoNewPrivileges")
    print(f"[{unit.suite}] guard pid {guard_pid}: uid {guard_uid}, " +
          ", ".join(f"{n}={status[n]}" for n in (*CAP_FIELDS, "CapBnd")))  # fmt: skip

    # pgpool and every process of it: no capability at all.
    pgpool_pid = unit.main_pid()
    processes = [pgpool_pid, *unit.children(pgpool_pid)]
    assert len(processes) >= 3, unit.explain(f"pgpool has too few processes: {processes}")
    for pid in processes:
        caps = unit.proc_status(pid)
        for name in (*CAP_FIELDS, "CapBnd"):
            assert int(caps[name], 16) == 0, unit.explain(
                f"pgpool process {pid} ({caps['Name']}) has {name}={caps[name]}, expected 0"
            )
    print(f"[{unit.suite}] pgpool processes {processes}: CapEff=CapPrm=CapAmb=CapBnd=0")

    # systemd-analyze security: "OK" or better.
    analysis = unit.box.run(["systemd-analyze", "security", GUARD], check=False).stdout
    last = analysis.strip().splitlines()[-1] if analysis.strip() else ""
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)", last)
    assert found, unit.explain(f"no exposure line in systemd-analyze output: {last!r}")
    exposure = float(found.group(1))
    print(f"[{unit.suite}] systemd-analyze security {GUARD}: {exposure} {found.group(2)}")
    assert exposure <= MAX_EXPOSURE, unit.explain(
        f"exposure {exposure} above {MAX_EXPOSURE}:\n{analysis}"
    )

    # The guard's files: its socket and guard.json, in its runtime directory.
    listing = unit.box.run(["stat", "-c", "%n %U %a %F", RUNTIME_DIR,
                            f"{RUNTIME_DIR}/guard.sock"]).stdout  # fmt: skip
    assert f"{RUNTIME_DIR} {GUARD_USER} 755 directory" in listing, unit.explain(listing)
    assert "guard.sock" in listing and "socket" in listing, unit.explain(listing)
    unit.wait_until(
        lambda: (
            unit.box.run(["test", "-s", f"{RUNTIME_DIR}/guard.json"], check=False).returncode == 0
        ),
        10,
        "guard.json written",
    )

    # Reload: SIGHUP, same process, configuration re-read, address kept.
    reloaded_at = time.time()
    unit.box.run(["systemctl", "reload", GUARD], timeout=30)
    unit.wait_until(
        lambda: "event=reload result=ok" in unit.guard_log(), 10, "the guard logs its reload"
    )
    assert unit.guard_pid() == guard_pid, unit.explain("reload replaced the guard's process")
    assert unit.guard()["ActiveState"] == "active", unit.explain("guard not active after reload")
    assert unit.anycast_present(), unit.explain("address gone after reload")
    time.sleep(max(0.0, reloaded_at + 2 - time.time()))  # a few watchdog periods
    assert unit.guard_pid() == guard_pid and unit.guard()["NRestarts"] == "0", unit.explain(
        "guard restarted after reload"
    )

    # Stop order: pgpool2 stops completely (ExecStopPost included), then the guard.
    unit.stop()
    unit.wait_until(
        lambda: unit.guard()["ActiveState"] == "inactive", 20, "guard stopped with pgpool2"
    )
    pgpool_stopped = unit.job_messages("pgpool2.service", "Stopped")[-1]
    guard_stopping = unit.job_messages(GUARD, "Stopping")[-1]
    assert pgpool_stopped <= guard_stopping, unit.explain(
        f"guard began stopping at {guard_stopping} us, before pgpool2 stopped at "
        f"{pgpool_stopped} us"
    )
    assert unit.guard()["Result"] == "success", unit.explain("guard did not stop cleanly")
    assert not unit.anycast_present(), unit.explain("address left after systemctl stop pgpool2")
    # The runtime directory is kept (RuntimeDirectoryPreserve=yes), guard.json with it.
    assert unit.box.run(["test", "-s", f"{RUNTIME_DIR}/guard.json"], check=False).returncode == 0


def test_2_kill_9_of_pgpool_the_guard_withdraws(unit: GuardedUnit) -> None:
    unit.prepare()
    unit.start()
    wait_present(unit, 30, "after start")
    guard_pid = unit.guard_pid()
    killed_at = time.monotonic()
    unit.box.run(["kill", "-9", str(unit.main_pid())])
    wait_absent(unit, 10, "the guard after kill -9 of pgpool")
    gone_after = time.monotonic() - killed_at
    print(f"[{unit.suite}] address gone {gone_after:.2f} s after kill -9 of pgpool")
    unit.wait_until(
        lambda: unit.state()["ActiveState"] in ("inactive", "failed"), 20, "pgpool2 down"
    )
    log = unit.guard_log()
    assert "event=pgpool-exited" in log, unit.explain("the guard did not see pgpool exit")
    withdrawn = [
        line for line in log.splitlines() if "transition=" in line and f"-{ANYCAST}" in line
    ]
    assert withdrawn, unit.explain("no transition line of the guard withdrawing the address")
    # PartOf=, not BindsTo=: the guard outlives the crash, so that pgpool2's
    # ExecStopPost `del` still reaches it, and follows the next pgpool.
    assert unit.guard()["ActiveState"] == "active", unit.explain("guard gone after the crash")
    assert unit.guard_pid() == guard_pid, unit.explain("guard replaced after pgpool's crash")
    stop_post = [
        line
        for line in unit.box.journal(
            matches=("SYSLOG_IDENTIFIER=pgpool-anycast-hook", "_SYSTEMD_UNIT=pgpool2.service")
        ).splitlines()
        if "action=del node=0" in line
    ]
    assert stop_post and all("mode=guarded" in line and "result=ok" in line
                             for line in stop_post), unit.explain(
        f"ExecStopPost's del did not reach the guard: {stop_post}"
    )  # fmt: skip
    assert unit.state()["Result"] == "signal", unit.explain("pgpool2 failed otherwise")
    # And back: the running guard follows the new pgpool; the address returns.
    unit.start()
    wait_present(unit, 30, "after starting pgpool2 again")
    assert unit.guard_pid() == guard_pid, unit.explain("guard replaced on pgpool2's start")
    assert not any(
        "result=" in line and "result=ok" not in line
        for line in unit.box.journal(
            matches=("SYSLOG_IDENTIFIER=pgpool-anycast-hook", "_SYSTEMD_UNIT=pgpool2.service")
        ).splitlines()
    ), unit.explain("a hook line of pgpool2.service failed")


def test_3_guard_killed_or_restarted_alone_address_stays(unit: GuardedUnit) -> None:
    unit.prepare()
    unit.start()
    wait_present(unit, 30, "after start")
    pgpool_pid = unit.main_pid()
    first = unit.guard_pid()

    # kill -9 of the guard: systemd restarts it (Restart=on-failure), pgpool stays.
    watch = Watch(unit, 12)
    unit.box.run(["kill", "-9", str(first)])
    samples = []  # `ip -j addr` from outside, a few times during the restart
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(samples) < 40:
        samples.append(unit.anycast_present())
        state = unit.guard()
        restarted = state["ActiveState"] == "active" and state["MainPID"] not in ("0", str(first))
        if restarted and len(samples) >= 5:
            break
        time.sleep(0.1)
    unit.wait_until(
        lambda: unit.guard()["ActiveState"] == "active" and unit.guard_pid() != first,
        15,
        "systemd restarts the killed guard",
    )
    second = unit.guard_pid()
    assert int(unit.guard()["NRestarts"]) >= 1, unit.explain("NRestarts did not grow")
    seen = watch.result()
    print(f"[{unit.suite}] guard kill -9: {first} -> {second}; watcher {seen}; ip samples "
          f"{samples.count(True)}/{len(samples)} present")  # fmt: skip
    assert all(samples), unit.explain(f"ip -j addr saw the address absent: {samples}")
    assert seen["polls"] and seen["absent"] == 0, unit.explain(
        f"the address blinked while the guard restarted: {seen}"
    )
    assert unit.main_pid() == pgpool_pid, unit.explain("pgpool restarted with the guard")
    assert unit.state()["ActiveState"] == "active", unit.explain("pgpool2 not active")
    unit.wait_until(
        lambda: "event=pgpool-found" in unit.box.journal(matches=(f"_PID={second}",)),
        10,
        "the new guard follows pgpool",
    )

    # systemctl restart of the guard alone: pgpool keeps running, the address stays.
    watch = Watch(unit, 8)
    unit.box.run(["systemctl", "restart", GUARD], timeout=30)
    seen = watch.result()
    third = unit.guard_pid()
    print(f"[{unit.suite}] systemctl restart guard: {second} -> {third}; watcher {seen}")
    assert third != second, unit.explain("systemctl restart kept the guard's process")
    assert seen["polls"] and seen["absent"] == 0, unit.explain(
        f"the address blinked on systemctl restart of the guard: {seen}"
    )
    assert unit.main_pid() == pgpool_pid, unit.explain("restarting the guard restarted pgpool")
    assert unit.state()["ActiveState"] == "active", unit.explain("pgpool2 not active")


def test_4_purge_leaves_nothing(unit: GuardedUnit) -> None:
    unit.prepare()
    unit.start()
    wait_present(unit, 30, "after start")
    assert unit.box.run(["getent", "passwd", GUARD_USER], check=False).returncode == 0
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
    assert f"/lib/systemd/system/{GUARD}" in files or f"/usr/lib/systemd/system/{GUARD}" in files
    assert GUARDED_SOURCE in files, unit.explain(f"{GUARDED_SOURCE} not in dpkg -L")
    purge = unit.box.run(
        ["apt-get", "purge", "-y", "pgpool-anycast-hook"], check=False, timeout=120
    )
    assert purge.returncode == 0, unit.explain(f"apt-get purge failed: {purge.stderr}")
    status = unit.box.run(
        ["dpkg-query", "-W", "-f=${Status}", "pgpool-anycast-hook"], check=False
    ).stdout
    assert "installed" not in status.split(), unit.explain(f"still installed: {status!r}")
    exists = 'for p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
    state_dirs = [
        "/etc/pgpool-anycast-hook",
        "/var/lib/pgpool-anycast-hook",
        "/var/cache/pgpool-anycast-hook",
        RUNTIME_DIR,
        f"{DROP_IN_DIR}/{Path(GUARDED_SOURCE).name}",
        f"{DROP_IN_DIR}/pgpool-anycast-hook.conf",
    ]
    left = unit.box.run(["sh", "-c", exists, "sh", *files, *own_dirs, *state_dirs]).stdout
    assert not left.strip(), unit.explain(f"purge left files of ours:\n{left}")
    for database in ("passwd", "group", "shadow", "gshadow"):
        found = unit.box.run(["getent", database, GUARD_USER], check=False)
        assert found.returncode != 0, unit.explain(f"purge left {GUARD_USER} in {database}")
    guard = unit.guard()
    assert guard["ActiveState"] == "inactive", unit.explain(f"guard still {guard} after purge")
    left_procs = unit.box.run(["ps", "-e", "-o", "user:32=,pid=,args="]).stdout
    assert not [line for line in left_procs.splitlines() if "pgpool-anycast" in line], unit.explain(
        f"processes of the package after purge:\n{left_procs}"
    )
    assert not unit.anycast_present(), unit.explain("purge left the anycast address on lo")
    # pgpool2 still works without us.
    unit.box.run(["systemctl", "daemon-reload"])
    unit.stop()
    unit.start()
    assert unit.state()["ActiveState"] == "active", unit.explain("pgpool2 broken after purge")
    assert not unit.anycast_present(), unit.explain("address back after purge and restart")
    pgpool_pid = unit.main_pid()
    for name in CAP_FIELDS:  # the drop-in is gone: Debian's own unit, no grant of ours
        assert int(unit.proc_status(pgpool_pid)[name], 16) == 0


NOTIFY = """#!/bin/sh
# on_change of test_5: what the command got, and with which capabilities.
{ echo "$PAH_OLD_STATE $PAH_NEW_STATE $PAH_REASON_CODE $PAH_ANNOUNCED"
  grep -E '^Cap(Eff|Prm|Amb):' /proc/self/status | tr '\\n' ' '; echo; } \
  >> /run/pgpool-anycast-hook/on-change.log
"""


class AutoUnit(GuardedUnit):
    """The guarded wiring following pgpool's own view, with metrics and on_change."""

    hook_settings = (
        'mode = "guarded"\nprimary_node_id = "auto"\npgpool_user = "postgres"\n'
        'pgpool_passfile = ""\non_change = ["/usr/local/bin/pah-notify"]\n'
    )


def test_5_pgpool_view_metrics_and_on_change_in_the_sandbox(
    box: Container, suite_root: tuple[str, Path]
) -> None:
    """Under the unit's own sandbox (MemoryDenyWriteExecute=, the system call filter):
    psycopg's query, prometheus_client's file and the on_change command all work, and
    the command runs without CAP_NET_ADMIN."""
    unit = AutoUnit(box, suite_root[0])
    box.write_file("/usr/local/bin/pah-notify", NOTIFY, mode=0o755)
    try:
        unit.prepare()
        unit.start()
        wait_present(unit, 30, "primary_node_id = auto, after start")

        def guard_json() -> dict[str, object]:
            text = box.run(["cat", f"{RUNTIME_DIR}/guard.json"]).stdout
            data: dict[str, object] = json.loads(text)
            return data

        unit.wait_until(lambda: guard_json()["view"]["primary"] == 0, 10,  # type: ignore[index]
                        "pgpool's view in guard.json")  # fmt: skip
        # node_exporter's textfile directory has the guard's metrics, through the link
        link = "/var/lib/prometheus/node-exporter/pgpool-anycast-hook.prom"

        def metrics() -> str:
            return box.run(["cat", link]).stdout

        unit.wait_until(lambda: f'pgpool_anycast_announced{{address="{ANYCAST}"}} 1.0'
                        in metrics(), 10, "the metrics through the link")  # fmt: skip
        assert "pgpool_anycast_primary_node_id 0.0" in metrics(), metrics()
        assert 'pgpool_anycast_pool_nodes_state{state="KNOWN"} 1.0' in metrics(), metrics()
        # on_change ran for WITHDRAWN->ANNOUNCED, as the guard's user, with no capability
        log_path = f"{RUNTIME_DIR}/on-change.log"
        unit.wait_until(lambda: "ANNOUNCED" in box.run(["cat", log_path], check=False).stdout,
                        10, "the on_change command's line")  # fmt: skip
        lines = box.run(["cat", log_path]).stdout.splitlines()
        assert lines[0] == "WITHDRAWN ANNOUNCED serves 1", lines
        caps = dict(re.findall(r"(Cap\w+):\s+(\w+)", lines[1]))
        assert caps == {"CapEff": "0" * 16, "CapPrm": "0" * 16, "CapAmb": "0" * 16}, lines
        status = unit.proc_status(unit.guard_pid())
        assert int(status["CapEff"], 16) == CAP_NET_ADMIN, status  # the guard keeps it
        log = unit.guard_log()
        assert "event=metrics" not in log and "result=spawn-failed" not in log, log
    finally:
        if unit.state()["ActiveState"] not in ("inactive", "failed"):
            unit.stop()
