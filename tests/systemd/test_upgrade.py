"""Upgrading from the released packages under a real systemd, with pgpool running.

The issue: "an upgrade from the current package keeps working, including a running
pgpool during the upgrade". For each earlier release (0.1.0 and 0.2.0, built from
git history with that tree's own packaging/build-deb.sh and cached by commit), on
Debian 12 and 13:

1. a fresh container gets the old .deb, the standalone drop-in linked as the old
   drop-in's comments say, an address, the old health-check timer enabled with
   `systemctl enable --now`, and a running pgpool2 that announced the address;
2. `dpkg -i` of this checkout's .deb while pgpool runs: pgpool keeps its MainPID,
   the address never leaves lo, no unit failed, the retired timer is gone (not
   loaded, not enabled, no link, no deb-systemd-helper state), the guard was not
   started, and `del 0`, `add 0` (as the drop-in runs them: postgres with
   CAP_NET_ADMIN) and `status` work;
3. the switch to the guarded wiring, exactly as the guarded drop-in's comments
   describe, then `systemctl restart pgpool2`: the guard runs and announces, and
   pgpool's processes hold no capability.

And from this version on, in the guarded wiring: reinstalling this .deb over itself
(what an upgrade to a later version does to a running guard) restarts the guard on
the new code while pgpool keeps running, and the address never leaves lo.

The git repository is this checkout's own (REPO/.git), or $PAH_GIT_DIR. A shallow
clone without those commits fails the test with a message: it is never skipped.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.container import Container
from tests.systemd.test_guard_unit import CAP_FIELDS, GUARD, GUARDED_SOURCE, GuardedUnit
from tests.systemd.test_operate_under_systemd import restart, unit_pids
from tests.systemd.test_pgpool_drop_in import (
    ANYCAST,
    ANYCAST_IP,
    DROP_IN_DIR,
    DROP_IN_SOURCE,
    PgpoolUnit,
)

pytestmark = pytest.mark.systemd

# The releases an upgrade starts from, as commits of this repository:
# - 0.1.0: c91e254, the last commit whose packaging/debian/changelog top entry is
#   0.1.0 (its child f1fbf5d made it 0.2.0);
# - 0.2.0: fcc555b, the last commit before 2a9ccd8 added
#   packaging/systemd/pgpool-anycast-hook-guard.service.
# Found with `git log -- packaging/debian/changelog` and
# `git log --diff-filter=A -- packaging/systemd/pgpool-anycast-hook-guard.service`.
OLD_RELEASES = {
    "0.1.0": "c91e254d3a1548d84cb5b1ad5aa0c9b9b57aa070",
    "0.2.0": "fcc555b93a7d8e963bb932ab96702d6bb00f21b5",
}
GIT_DIR_ENV = "PAH_GIT_DIR"
DEB_CACHE = Path("/var/cache/pgpool-anycast-hook/old-debs")
BUILD_TIMEOUT = 900.0
OLD_DEB_INSIDE = "/root/pgpool-anycast-hook_old_all.deb"
NEW_DEB_INSIDE = "/root/pgpool-anycast-hook_new_all.deb"
CHECK_TIMER = "pgpool-anycast-hook-check.timer"
CHECK_SERVICE = "pgpool-anycast-hook-check.service"
CHECK_UNITS = (CHECK_TIMER, CHECK_SERVICE)
HOOK = "/usr/bin/pgpool-anycast-hook"
AS_DROP_IN = [
    *("setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups"),
    *("--inh-caps", "+net_admin", "--ambient-caps", "+net_admin"),
]
STOP_WATCH = "/run/pah-stop-watch"
GUARD_BOUND = 30.0  # the guard announces after its probe and hold_down (5 s) agree

# Runs inside the container: polls lo for the address every few milliseconds until
# STOP_WATCH exists (or `limit` seconds), and says how often it was absent.
WATCHER = r"""
import json, os, socket, sys, time
from pyroute2 import IPRoute
address, stop, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
ipr = IPRoute()
lo = ipr.link_lookup(ifname="lo")[0]
def present():
    return any(a.get_attr("IFA_LOCAL") == address
               for a in ipr.get_addr(family=socket.AF_INET, index=lo))
result = {"polls": 0, "absent": 0}
print("ready", flush=True)
deadline = time.monotonic() + limit
while time.monotonic() < deadline and not os.path.exists(stop):
    result["polls"] += 1
    result["absent"] += 0 if present() else 1
    time.sleep(0.005)
print(json.dumps(result), flush=True)
"""

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count(1)


# -- the old packages, from git history ---------------------------------------------------


def git_dir() -> Path:
    """The repository: $PAH_GIT_DIR, or this checkout's .git."""
    given = os.environ.get(GIT_DIR_ENV)
    return Path(given) if given else REPO / ".git"


def git(directory: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", f"--git-dir={directory}", *args], capture_output=True, check=False, timeout=120
    )


def require_commit(directory: Path, version: str, commit: str) -> None:
    """Fail (never skip) unless `commit` is in the repository and is `version`'s tree."""
    how = (
        f"the upgrade test builds {version} from commit {commit} of {directory}; "
        f"fetch the full history (git fetch --unshallow) or point {GIT_DIR_ENV} at a "
        "complete clone's git directory"
    )
    if not directory.exists():
        pytest.fail(f"no git repository at {directory}: {how}", pytrace=False)
    if git(directory, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        shallow = git(directory, "rev-parse", "--is-shallow-repository").stdout.strip()
        note = " (a shallow clone)" if shallow == b"true" else ""
        pytest.fail(f"commit {commit} is missing from {directory}{note}: {how}", pytrace=False)
    top = git(directory, "show", f"{commit}:packaging/debian/changelog").stdout.split(b"\n")[0]
    assert f"({version})".encode() in top, f"{commit} is not {version}: {top!r}"


def build_old_deb(directory: Path, commit: str, into: Path) -> Path:
    """`git archive` of `commit`, built by that tree's own packaging/build-deb.sh."""
    with tempfile.TemporaryDirectory(prefix="pah-old-deb-") as work:
        tree = Path(work) / "tree"
        tree.mkdir()
        # tar.umask 0022: git archive's default (0002) leaves group-writable files, and
        # the old package's build-time check-config refuses a group-writable config.toml.
        archive = subprocess.Popen(
            ["git", f"--git-dir={directory}", "-c", "tar.umask=0022", "archive", commit],
            stdout=subprocess.PIPE,
        )
        unpacked = subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=False)
        assert archive.wait(timeout=120) == 0 and unpacked.returncode == 0, f"git archive {commit}"
        build = subprocess.run(
            ["bash", "packaging/build-deb.sh"],
            cwd=tree,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        debs = sorted((tree / "dist").glob("pgpool-anycast-hook_*_all.deb"))
        if not debs:  # a lintian complaint alone still leaves the .deb, which is enough here
            pytest.fail(
                f"build-deb.sh of {commit} made no .deb (exit {build.returncode}):\n"
                f"{build.stderr[-3000:]}",
                pytrace=False,
            )
        into.mkdir(parents=True, exist_ok=True)
        partial = into / (debs[0].name + ".partial")
        shutil.copy2(debs[0], partial)
        final = into / debs[0].name
        partial.rename(final)
        return final


def old_deb(version: str) -> Path:
    """The .deb of `version`, from DEB_CACHE/<commit>/ or built (under a lock) into it."""
    commit = OLD_RELEASES[version]
    directory = git_dir()
    require_commit(directory, version, commit)
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    with open(DEB_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = sorted((DEB_CACHE / commit).glob(f"pgpool-anycast-hook_{version}_all.deb"))
        if cached:
            return cached[0]
        return build_old_deb(directory, commit, DEB_CACHE / commit)


@pytest.fixture(scope="session")
def old_debs(host_ready: None) -> dict[str, Path]:
    return {version: old_deb(version) for version in OLD_RELEASES}


# -- the container with the old release ---------------------------------------------------


class UpgradeUnit(GuardedUnit):
    """pgpool2.service wired the standalone way first (the old releases knew no other)."""

    drop_in = DROP_IN_SOURCE
    hook_settings = ""


@pytest.fixture
def unit(
    request: pytest.FixtureRequest,
    suite_root: tuple[str, Path],
    old_debs: dict[str, Path],
    deb_path: Path,
) -> Iterator[UpgradeUnit]:
    """A booted container with the old release installed and this checkout's .deb copied in."""
    version: str = request.param
    suite, root = suite_root
    name = f"pah-up-{suite[:4]}-{os.getpid()}-{next(_names)}"
    with Container(name, root) as box:
        box.copy_in(old_debs[version], OLD_DEB_INSIDE, mode=0o644)
        box.copy_in(deb_path, NEW_DEB_INSIDE, mode=0o644)
        box.run(["dpkg", "-i", OLD_DEB_INSIDE], timeout=120)
        box.write_file("/root/watch_upgrade.py", WATCHER)
        pgpool = UpgradeUnit(box, suite)
        yield pgpool
        if pgpool.state()["ActiveState"] not in ("inactive", "failed"):
            pgpool.stop()


# -- what the upgrade must leave ----------------------------------------------------------


def installed_version(unit: UpgradeUnit) -> str:
    return unit.box.run(["dpkg-query", "-W", "-f=${Version}", "pgpool-anycast-hook"]).stdout


def failed_units(unit: PgpoolUnit) -> list[str]:
    out = unit.box.run(["systemctl", "list-units", "--failed", "--all", "--plain", "--no-legend"])
    return [line for line in out.stdout.splitlines() if line.strip()]


def loaded_check_units(unit: UpgradeUnit) -> list[str]:
    """Lines of `list-units --all` for the check units (it loads nothing by itself)."""
    out = unit.box.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", *CHECK_UNITS]
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def check_unit_traces(unit: UpgradeUnit) -> list[str]:
    """Every file or link named after a check unit: unit files, enablement, d-s-h state."""
    places = (
        "/etc/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/var/lib/systemd/deb-systemd-helper-enabled",
        "/var/lib/systemd/deb-systemd-helper-masked",
    )
    script = 'find "$@" -name "pgpool-anycast-hook-check*" 2>/dev/null; true'
    return unit.box.run(["sh", "-c", script, "sh", *places]).stdout.split()


def wait_timer_fired(unit: UpgradeUnit) -> None:
    """The old timer is active and its service ran at least once."""

    def fired() -> bool:
        shown = unit.show(CHECK_SERVICE, "ExecMainExitTimestampMonotonic")
        return shown.get("ExecMainExitTimestampMonotonic", "0") not in ("", "0")

    active = unit.box.run(["systemctl", "is-active", CHECK_TIMER], check=False).stdout.strip()
    assert active == "active", unit.explain(f"the old timer is {active}, not active")
    unit.wait_until(fired, 30, f"{CHECK_SERVICE} ran once from the old timer")


class Watch:
    """WATCHER running inside the container until stopped."""

    def __init__(self, unit: PgpoolUnit, limit: float) -> None:
        self.unit = unit
        self.limit = limit
        unit.box.run(["rm", "-f", STOP_WATCH])
        self.proc = subprocess.Popen(
            unit.box.command(
                ["python3", "/root/watch_upgrade.py", ANYCAST_IP, STOP_WATCH, str(limit)]
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready and self.proc.stdout.readline().strip() == "ready", "watcher did not start"

    def result(self) -> dict[str, int]:
        self.unit.box.run(["touch", STOP_WATCH])
        try:
            out, err = self.proc.communicate(timeout=self.limit + 30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
                self.proc.communicate(timeout=10)
        assert out.strip(), f"watcher printed nothing: {err}"
        seen: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return seen


# -- the steps ----------------------------------------------------------------------------


def set_up_old_release(unit: UpgradeUnit, version: str) -> None:
    """Step 1: the old release configured, its timer enabled, pgpool running, announced."""
    assert installed_version(unit) == version, unit.explain("the old .deb is not installed")
    unit.prepare()  # addresses in conf.d/, the standalone drop-in linked, daemon-reload
    unit.box.run(["systemctl", "enable", "--now", CHECK_TIMER])
    unit.start()
    assert unit.anycast_present(), unit.explain(f"{version}: no address after start")
    wait_timer_fired(unit)
    assert unit.anycast_present(), unit.explain(f"{version}: the old check withdrew the address")
    # What the upgrade must clear is really there: loaded units, the link, the state.
    traces = check_unit_traces(unit)
    assert f"/etc/systemd/system/timers.target.wants/{CHECK_TIMER}" in traces, unit.explain(
        f"{version}: no enablement link of the old timer: {traces}"
    )
    assert any("deb-systemd-helper-enabled" in t for t in traces), unit.explain(
        f"{version}: no deb-systemd-helper state of the old timer: {traces}"
    )
    assert loaded_check_units(unit), unit.explain(f"{version}: the old check units are not loaded")
    assert failed_units(unit) == [], unit.explain(f"{version}: failed units before the upgrade")


def upgrade(unit: UpgradeUnit, version: str) -> None:
    """Step 2: dpkg -i of this checkout's .deb while pgpool runs, and what it must leave."""
    pid = unit.main_pid()
    watch = Watch(unit, limit=240)
    started = time.monotonic()
    done = unit.box.run(["dpkg", "-i", NEW_DEB_INSIDE], check=False, timeout=180)
    took = time.monotonic() - started
    seen = watch.result()
    assert done.returncode == 0, unit.explain(f"dpkg -i failed:\n{done.stdout}{done.stderr}")
    print(f"[{unit.suite}] upgrade from {version} took {took:.1f}s; watcher {seen}")
    assert installed_version(unit) != version, unit.explain("dpkg -i left the old version")
    assert seen["polls"] > 0 and seen["absent"] == 0, unit.explain(
        f"the address left lo during the upgrade: {seen}"
    )
    state = unit.state()
    assert state["ActiveState"] == "active" and int(state["MainPID"]) == pid, unit.explain(
        f"pgpool did not keep running through the upgrade (MainPID was {pid}): {state}"
    )
    assert unit.anycast_present(), unit.explain("no address after the upgrade")
    assert failed_units(unit) == [], unit.explain(f"failed units: {failed_units(unit)}")
    assert loaded_check_units(unit) == [], unit.explain(
        f"the retired check units are still loaded: {loaded_check_units(unit)}"
    )
    assert check_unit_traces(unit) == [], unit.explain(
        f"the retired check units left files or links: {check_unit_traces(unit)}"
    )
    enabled = unit.box.run(["systemctl", "is-enabled", CHECK_TIMER], check=False)
    assert enabled.returncode != 0 and "enabled" not in enabled.stdout, unit.explain(
        f"the retired timer is still enabled: {enabled.stdout}{enabled.stderr}"
    )
    guard = unit.guard()
    assert guard["ActiveState"] == "inactive" and guard["MainPID"] == "0", unit.explain(
        f"the upgrade started the guard: {guard}"
    )


def standalone_still_works(unit: UpgradeUnit) -> None:
    """Step 2, continued: del/add as the standalone drop-in runs them, and status."""
    dropins = unit.show("pgpool2", "DropInPaths")["DropInPaths"]
    assert f"{DROP_IN_DIR}/pgpool-anycast-hook.conf" in dropins, unit.explain(dropins)
    deleted = unit.box.run([*AS_DROP_IN, HOOK, "del", "0"], check=False)
    assert deleted.returncode == 0 and f"changed=-{ANYCAST}" in deleted.stderr, unit.explain(
        f"del 0 after the upgrade: exit {deleted.returncode}: {deleted.stderr}"
    )
    assert not unit.anycast_present(), unit.explain("del 0 left the address")
    added = unit.box.run([*AS_DROP_IN, HOOK, "add", "0"], check=False)
    assert added.returncode == 0 and f"changed=+{ANYCAST}" in added.stderr, unit.explain(
        f"add 0 after the upgrade: exit {added.returncode}: {added.stderr}"
    )
    assert unit.anycast_present(), unit.explain("add 0 did not bring the address back")
    shown = unit.box.run([HOOK, "status", "--json"], check=False)
    assert shown.returncode == 0, unit.explain(f"status exit {shown.returncode}: {shown.stderr}")
    data = json.loads(shown.stdout)
    assert data["desired"] == "present" and data["actual"] == "present", unit.explain(shown.stdout)


def switch_to_guarded(unit: UpgradeUnit) -> None:
    """Step 3, as the guarded drop-in's comments say: mode, link, daemon-reload, restart."""
    run = unit.box.run
    unit.box.write_file("/etc/pgpool-anycast-hook/conf.d/20-guarded.toml", 'mode = "guarded"\n')
    checked = run([HOOK, "check-config"], check=False)
    assert checked.returncode == 0, unit.explain(f"check-config: {checked.stderr}")
    run(["mkdir", "-p", DROP_IN_DIR])
    run(["rm", "-f", f"{DROP_IN_DIR}/pgpool-anycast-hook.conf"])
    run(["ln", "-s", GUARDED_SOURCE, f"{DROP_IN_DIR}/"])
    run(["systemctl", "daemon-reload"])
    restart(unit)
    unit.wait_until(
        lambda: unit.guard()["ActiveState"] == "active", GUARD_BOUND, "the guard is active"
    )
    unit.wait_until(unit.anycast_present, GUARD_BOUND, f"{ANYCAST} announced by the guard")
    pids = unit_pids(unit)
    assert pids, unit.explain("pgpool2.service has no process")
    for pid in pids:
        status = unit.proc_status(pid)
        held = {name: status.get(name) for name in CAP_FIELDS if int(status.get(name, "0"), 16)}
        assert not held, unit.explain(f"pgpool process {pid} holds capabilities: {held}")
    assert failed_units(unit) == [], unit.explain(f"failed units: {failed_units(unit)}")
    code = run([HOOK, "status"], check=False)
    assert code.returncode == 0, unit.explain(f"status in the guarded wiring:\n{code.stdout}")


# -- the test -----------------------------------------------------------------------------


@pytest.mark.parametrize("unit", sorted(OLD_RELEASES), indirect=True)
def test_upgrade_with_pgpool_running_then_switch_to_guarded(unit: UpgradeUnit) -> None:
    version = installed_version(unit)
    set_up_old_release(unit, version)
    upgrade(unit, version)
    standalone_still_works(unit)
    switch_to_guarded(unit)
    assert GUARD in unit.show("pgpool2", "Wants")["Wants"], unit.explain("pgpool2 lacks Wants=")


@pytest.fixture
def guarded(box: Container, suite_root: tuple[str, Path]) -> Iterator[GuardedUnit]:
    """This checkout's .deb in the guarded wiring; pgpool stopped (bounded) at the end."""
    pgpool = GuardedUnit(box, suite_root[0])
    yield pgpool
    if pgpool.state()["ActiveState"] not in ("inactive", "failed"):
        pgpool.stop()


def test_reinstall_with_the_guard_running_keeps_pgpool_and_the_address(
    guarded: GuardedUnit, deb_path: Path
) -> None:
    guarded.prepare()
    guarded.start()
    guarded.wait_until(guarded.anycast_present, GUARD_BOUND, f"{ANYCAST} announced by the guard")
    guarded.box.copy_in(deb_path, NEW_DEB_INSIDE, mode=0o644)
    guarded.box.write_file("/root/watch_upgrade.py", WATCHER)
    pid, guard_pid = guarded.main_pid(), guarded.guard_pid()
    watch = Watch(guarded, limit=240)
    done = guarded.box.run(["dpkg", "-i", NEW_DEB_INSIDE], check=False, timeout=180)
    seen = watch.result()
    assert done.returncode == 0, guarded.explain(f"dpkg -i:\n{done.stdout}{done.stderr}")
    assert seen["polls"] > 0 and seen["absent"] == 0, guarded.explain(
        f"the address left lo while the package was reinstalled: {seen}"
    )
    guarded.wait_until(
        lambda: guarded.guard()["ActiveState"] == "active", GUARD_BOUND, "the guard is active"
    )
    assert guarded.guard_pid() != guard_pid, guarded.explain("the guard was not restarted")
    assert guarded.main_pid() == pid, guarded.explain("pgpool did not keep running")
    assert guarded.anycast_present(), guarded.explain("no address after the reinstall")
    assert failed_units(guarded) == [], guarded.explain(f"failed units: {failed_units(guarded)}")
