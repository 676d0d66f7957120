"""The operator commands under a real systemd (issue 5): check, hold, drain, reconcile.

Same bed as test_pgpool_drop_in.py (whose PgpoolUnit this reuses): a fresh Debian 12
or 13 container per test, this checkout's .deb, the drop-in activated by its symbolic
link, Debian's pgpool2.service and PostgreSQL. What is new here is what only systemd
shows: `check` as a one-shot probe of a frozen pgpool (standalone: withdrawing after
check_fall runs, as an administrator's own timer would run it; guarded: reporting
only), a hold that outlives `systemctl restart`, ExecStop's drain before pgpool's
shutdown, ExecStartPre's reconcile before pgpool starts.

A planned restart can meet pgpool's own stop hang (research/real-systemd.md); it is
reported as a PgpoolStopHang warning and the unit is killed, as in the other module.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.container import Container
from tests.systemd.test_guard_unit import GuardedUnit
from tests.systemd.test_pgpool_drop_in import (
    ANYCAST,
    ANYCAST_IP,
    HOOK_IDENT,
    STOP_BOUND,
    PgpoolStopHang,
    PgpoolUnit,
)

pytestmark = pytest.mark.systemd

HOOK = "pgpool-anycast-hook"
CONF_D = "/etc/pgpool-anycast-hook/conf.d"
CHECK_JSON = "/var/lib/pgpool-anycast-hook/check.json"
START_BOUND = 90.0  # ExecStartPost's add waits at most 60 s for pgpool
# As the drop-in's hook lines run (User=postgres, ambient CAP_NET_ADMIN), or without it.
AS_POSTGRES = ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups")
WITH_NET_ADMIN = ("--inh-caps", "+net_admin", "--ambient-caps", "+net_admin")
SHUTDOWN = re.compile(r"shut(ting)? ?down", re.IGNORECASE)


@pytest.fixture
def unit(box: Container, suite_root: tuple[str, Path]) -> Iterator[PgpoolUnit]:
    """pgpool2.service ready to start; stopped again (bounded) before the container is."""
    pgpool = PgpoolUnit(box, suite_root[0])
    yield pgpool
    if pgpool.state()["ActiveState"] not in ("inactive", "failed"):
        pgpool.stop()


# -- reading the journal -------------------------------------------------------------


def message(entry: dict[str, Any]) -> str:
    """MESSAGE as text; journald gives it as a byte list when it has control characters."""
    text = entry.get("MESSAGE", "")
    return bytes(text).decode(errors="replace") if isinstance(text, list) else str(text)


def line_fields(entry: dict[str, Any]) -> dict[str, str]:
    """key=value pairs of a hook line, quoted values included (run_log.format_value)."""
    words = shlex.split(message(entry))
    return dict(word.split("=", 1) for word in words if "=" in word)


def is_hook_line(entry: dict[str, Any]) -> bool:
    """The hook's own syslog line (not its stderr copy, which the unit's stdout carries)."""
    return entry.get("SYSLOG_IDENTIFIER") == HOOK_IDENT and entry.get("_TRANSPORT") == "syslog"


def after(entries: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    return [e for e in entries if int(e["__REALTIME_TIMESTAMP"]) / 1e6 >= since]


def unit_journal(unit: PgpoolUnit, since: float) -> list[dict[str, Any]]:
    """pgpool2.service's entries and the hook's lines since `since`, in journal order.

    The hook's lines are matched by identifier too: journald names the unit of a
    datagram from the sender's cgroup, which a process that already exited has lost.
    """
    matches = ("_SYSTEMD_UNIT=pgpool2.service", "+", f"SYSLOG_IDENTIFIER={HOOK_IDENT}")
    return after(unit.box.journal_entries(*matches), since)


def first_index(entries: list[dict[str, Any]], what: str, match: Any) -> int:
    """Index of the first entry for which `match` holds; fails with `what` if none does."""
    for index, entry in enumerate(entries):
        if match(entry):
            return index
    listing = "\n".join(message(e) for e in entries)
    raise AssertionError(f"no {what} in pgpool2.service's journal:\n{listing}")


def hook_action(action: str, **wanted: str) -> Any:
    """A matcher for the hook's line of `action` with the given field values."""

    def match(entry: dict[str, Any]) -> bool:
        found = line_fields(entry) if is_hook_line(entry) else {}
        return found.get("action") == action and all(found.get(k) == v for k, v in wanted.items())

    return match


def pgpool_shutdown_line(entry: dict[str, Any]) -> bool:
    return entry.get("SYSLOG_IDENTIFIER") != HOOK_IDENT and bool(SHUTDOWN.search(message(entry)))


def wait_for_line(
    unit: PgpoolUnit, lines: Any, match: Any, bound: float, what: str
) -> dict[str, Any]:
    """Poll `lines()` until one entry matches (bounded); return it."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in lines() if match(e)]
        return bool(found)

    unit.wait_until(seen, bound, what)
    return found[0]


def assert_from_postgres(unit: PgpoolUnit, entry: dict[str, Any], unit_name: str) -> None:
    """A hook line written by the unit's postgres process (User=postgres, not root)."""
    assert int(entry["_UID"]) == unit.postgres_uid, unit.explain(
        f"hook ran as uid {entry['_UID']}, not postgres: {message(entry)}"
    )
    assert entry.get("_SYSTEMD_UNIT") == unit_name, unit.explain(
        f"hook line from {entry.get('_SYSTEMD_UNIT')}, not {unit_name}: {message(entry)}"
    )


# -- acting ------------------------------------------------------------------------------


def hook(unit: PgpoolUnit, *args: str, user: str = "root") -> Any:
    """Run the installed hook inside, as root or (runuser) as another user."""
    prefix = [] if user == "root" else ["runuser", "-u", user, "--"]
    return unit.box.run([*prefix, HOOK, *args], check=False, timeout=60)


def write_conf(unit: PgpoolUnit, name: str, text: str) -> None:
    unit.box.write_file(f"{CONF_D}/{name}", text)


def restart(unit: PgpoolUnit) -> None:
    """`systemctl restart pgpool2`, bounded; pgpool's own stop hang is a warning, as in stop().

    Returns once the unit is active again (ExecStartPost's add has finished).
    """
    old = unit.main_pid()
    unit.box.run(["systemctl", "reset-failed", "pgpool2"], check=False)
    unit.box.run(["systemctl", "restart", "--no-block", "pgpool2"])
    if not wait_gone(unit, old, STOP_BOUND):
        state = unit.state()
        hooks = unit.unit_processes(HOOK_IDENT[:15])
        if hooks or state["SubState"] in ("stop", "stop-post"):
            pytest.fail(
                unit.explain(
                    f"the hook hangs on restart: unit {state['SubState']} after "
                    f"{STOP_BOUND:.0f}s; hook processes {hooks}"
                ),
                pytrace=False,
            )
        warnings.warn(
            f"[{unit.suite}] pgpool did not stop within {STOP_BOUND:.0f}s on restart (unit "
            f"{state['SubState']}, main process: {unit.process_state(old)}); no hook "
            "process is running, so this is pgpool's own stop hang; killing the unit",
            PgpoolStopHang,
            stacklevel=2,
        )
        unit.box.run(["systemctl", "kill", "--signal=SIGKILL", "pgpool2"], check=False)
        assert wait_gone(unit, old, STOP_BOUND), unit.explain("pgpool survived SIGKILL")

    def running_again() -> bool:
        state = unit.state()
        return state["ActiveState"] == "active" and state["MainPID"] not in ("0", str(old))

    unit.wait_until(running_again, START_BOUND, "pgpool2 active again after restart")


def wait_gone(unit: PgpoolUnit, pid: int, bound: float) -> bool:
    """Whether process `pid` (inside) exits within `bound` seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if unit.box.run(["test", "-e", f"/proc/{pid}"], check=False).returncode != 0:
            return True
        time.sleep(0.1)
    return False


def unit_pids(unit: PgpoolUnit) -> list[int]:
    """Every process in pgpool2.service's cgroup."""
    group = unit.box.run(["systemctl", "show", "-P", "ControlGroup", "pgpool2"]).stdout.strip()
    procs = unit.box.run(["cat", f"/sys/fs/cgroup{group}/cgroup.procs"]).stdout
    return [int(pid) for pid in procs.split()]


def process_states(unit: PgpoolUnit, pids: list[int]) -> dict[int, str]:
    """The one-letter state (R, S, T, ...) of each process; gone ones are left out."""
    script = 'for p; do s=$(cut -d")" -f2 /proc/$p/stat 2>/dev/null) && echo "$p $s"; done'
    out = unit.box.run(["sh", "-c", script, "sh", *map(str, pids)], check=False).stdout
    return {int(line.split()[0]): line.split()[1] for line in out.splitlines()}


def serving_routes(unit: PgpoolUnit) -> list[str]:
    """The hook's serving routes: `ip route show table local proto 177`, one per line."""
    out = unit.box.run(["ip", "route", "show", "table", "local", "proto", "177"]).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def status(unit: PgpoolUnit) -> tuple[int, dict[str, Any], str]:
    """`status --json` and `status` as root: (exit code, JSON, table)."""
    as_json = hook(unit, "status", "--json")
    table = hook(unit, "status")
    assert as_json.returncode == table.returncode, unit.explain(
        f"status and status --json disagree: {as_json.returncode} != {table.returncode}"
    )
    return as_json.returncode, json.loads(as_json.stdout), table.stdout


# -- the tests ---------------------------------------------------------------------------


def check_run(
    unit: PgpoolUnit, *prefix: str, config: str | None = None
) -> tuple[int, dict[str, str]]:
    """One `check`, run as `prefix` says (setpriv as postgres...): (exit code, its line)."""
    options = ["--config", config] if config else []
    done = unit.box.run([*prefix, HOOK, *options, "check"], check=False, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.startswith(f"{HOOK_IDENT}: ")]
    assert len(lines) <= 1, unit.explain(f"check wrote more than one line: {done.stderr}")
    found = dict(w.split("=", 1) for w in shlex.split(lines[0]) if "=" in w) if lines else {}
    return done.returncode, found


def freeze(unit: PgpoolUnit) -> None:
    """SIGSTOP every process of pgpool2.service, and wait until all are stopped."""
    unit.box.run(["systemctl", "kill", "--signal=SIGSTOP", "pgpool2"])
    states: dict[int, str] = {}

    def all_stopped() -> bool:
        states.clear()
        states.update(process_states(unit, unit_pids(unit)))
        return bool(states) and set(states.values()) == {"T"}

    unit.wait_until(all_stopped, 5, "every pgpool process stopped", lambda: str(states))


def thaw(unit: PgpoolUnit) -> None:
    unit.box.run(["systemctl", "kill", "--signal=SIGCONT", "pgpool2"], check=False)


def check_json_exists(unit: PgpoolUnit) -> bool:
    return unit.box.run(["test", "-e", CHECK_JSON], check=False).returncode == 0


def test_1_check_probe_standalone_withdraws_after_check_fall_and_announces_after_rise(
    unit: PgpoolUnit,
) -> None:
    """`check` as an administrator's own timer runs it in the standalone wiring (postgres
    with CAP_NET_ADMIN): a frozen pgpool is reported with exit 1 on every run and loses
    its address only at the check_fall-th run; after SIGCONT it comes back at the
    check_rise-th. pgpool2.service stays active throughout (no ExecStopPost involved)."""
    unit.prepare()
    write_conf(unit, "60-check.toml", "check_fall = 2\ncheck_rise = 2\ncheck_timeout = 1.0\n")
    unit.start()
    assert unit.anycast_present(), unit.explain("no address after start")
    code, line = check_run(unit, *AS_POSTGRES, *WITH_NET_ADMIN)
    assert code == 0 and line.get("transition") == "INIT->UP", unit.explain(f"{code} {line}")
    assert line.get("changed") == "none" and unit.anycast_present(), unit.explain(str(line))

    freeze(unit)
    try:
        code, line = check_run(unit, *AS_POSTGRES, *WITH_NET_ADMIN)
        assert code == 1 and line.get("probe") == "failed", unit.explain(f"{code} {line}")
        assert line.get("transition") == "UP->FALLING", unit.explain(str(line))
        assert unit.anycast_present(), unit.explain("withdrawn before check_fall runs")
        code, line = check_run(unit, *AS_POSTGRES, *WITH_NET_ADMIN)
        assert code == 1 and line.get("transition") == "FALLING->DOWN", unit.explain(str(line))
        assert line.get("changed") == f"-{ANYCAST}", unit.explain(str(line))
        assert not unit.anycast_present(), unit.explain("still announced after check_fall runs")
        assert unit.state()["ActiveState"] == "active", unit.explain("pgpool2 is not active")
    finally:
        thaw(unit)
    unit.wait_until(
        lambda: check_run(unit, *AS_POSTGRES, *WITH_NET_ADMIN)[0] == 0, 20, "pgpool answers"
    )  # the first answer after SIGCONT: RISING, one of check_rise
    assert not unit.anycast_present(), unit.explain("announced before check_rise answers")
    code, line = check_run(unit, *AS_POSTGRES, *WITH_NET_ADMIN)
    assert code == 0 and line.get("transition") == "RISING->UP", unit.explain(f"{code} {line}")
    assert line.get("changed") == f"+{ANYCAST}", unit.explain(str(line))
    assert unit.anycast_present(), unit.explain("not announced again after check_rise answers")
    code, data, table = status(unit)
    assert code == 0, unit.explain(f"status exit {code} after SIGCONT:\n{table}")
    assert data["check"] == {"state": "UP", "count": 0}, unit.explain(table)


@pytest.fixture
def guarded(box: Container, suite_root: tuple[str, Path]) -> Iterator[GuardedUnit]:
    """The guarded pgpool2.service (test_guard_unit.py); stopped again before the container."""
    pgpool = GuardedUnit(box, suite_root[0])
    yield pgpool
    if pgpool.state()["ActiveState"] not in ("inactive", "failed"):
        pgpool.stop()


def test_1b_check_probe_guarded_reports_and_changes_nothing(guarded: GuardedUnit) -> None:
    """In the guarded mode `check` only probes: as postgres without any capability it
    reports a frozen pgpool with exit 1 and an answering one with 0, and never touches
    the address or check.json, even though its own configuration says check_fall = 1.
    The guard's configuration (check_fall = 100) keeps the guard itself from
    withdrawing during the test, so any withdrawal would be check's."""
    guarded.prepare()
    write_conf(guarded, "60-check.toml", "check_fall = 100\ncheck_timeout = 1.0\n")
    config = "/etc/pah-check-probe/config.toml"
    guarded.box.run(["mkdir", "-m", "0755", "-p", "/etc/pah-check-probe"])
    guarded.box.write_file(
        config,
        f'addresses = ["{ANYCAST}"]\nmode = "guarded"\ncheck_fall = 1\ncheck_rise = 1\n'
        "check_timeout = 1.0\n",
    )
    guarded.start()
    guarded.wait_until(guarded.anycast_present, 30, f"{ANYCAST} announced by the guard")
    guard_pid = guarded.guard_pid()
    assert not check_json_exists(guarded), guarded.explain(f"{CHECK_JSON} before any check")
    code, line = check_run(guarded, *AS_POSTGRES, config=config)
    assert code == 0 and line.get("probe") == "ok", guarded.explain(f"{code} {line}")
    assert line.get("changed") == "none" and line.get("mode") == "guarded", guarded.explain(
        str(line)
    )
    freeze(guarded)
    try:
        for _ in range(2):
            code, line = check_run(guarded, *AS_POSTGRES, config=config)
            assert code == 1 and line.get("probe") == "failed", guarded.explain(f"{code} {line}")
            assert line.get("changed") == "none", guarded.explain(str(line))
            assert guarded.anycast_present(), guarded.explain("the guarded check withdrew")
    finally:
        thaw(guarded)
    guarded.wait_until(
        lambda: check_run(guarded, *AS_POSTGRES, config=config)[0] == 0, 20, "pgpool answers"
    )
    assert guarded.anycast_present(), guarded.explain("the address left during the test")
    assert not check_json_exists(guarded), guarded.explain(f"the guarded check wrote {CHECK_JSON}")
    assert guarded.guard_pid() == guard_pid, guarded.explain("the guard restarted")


def test_2_hold_survives_systemctl_restart(unit: PgpoolUnit) -> None:
    unit.prepare()
    unit.start()
    assert unit.anycast_present(), unit.explain("no address after start")
    disabled = hook(unit, "disable", "--reason", "test")
    assert disabled.returncode == 0, unit.explain(f"disable failed: {disabled.stderr}")
    assert f"changed=-{ANYCAST}" in disabled.stderr, unit.explain(disabled.stderr)
    assert not unit.anycast_present(), unit.explain("address still there after disable")

    restarted_at = time.time()
    restart(unit)
    add = wait_for_line(
        unit,
        lambda: unit_journal(unit, restarted_at),
        hook_action("add"),
        5,
        "ExecStartPost's add after the restart",
    )
    add_fields = line_fields(add)
    assert add_fields.get("changed") == "none", unit.explain(message(add))
    assert "hold" in add_fields.get("reason", ""), unit.explain(f"add ignored the hold: {add}")
    assert_from_postgres(unit, add, "pgpool2.service")
    assert not unit.anycast_present(), unit.explain("the restart brought the address back")

    code, data, table = status(unit)
    assert code == 0, unit.explain(f"status exit {code} with the hold:\n{table}")
    assert data["hold"] is not None and data["hold"]["reason"] == "test", unit.explain(table)
    assert data["desired"] == "absent" and data["actual"] == "absent", unit.explain(table)
    assert re.search(r"^hold\s+set .* by root: test$", table, re.MULTILINE), unit.explain(table)

    enabled = hook(unit, "enable")
    assert enabled.returncode == 0, unit.explain(f"enable failed: {enabled.stderr}")
    assert f"changed=+{ANYCAST}" in enabled.stderr, unit.explain(enabled.stderr)
    assert unit.anycast_present(), unit.explain("enable did not bring the address back")
    code, data, table = status(unit)
    assert code == 0 and data["hold"] is None, unit.explain(f"status after enable:\n{table}")


def test_3_restart_drains_before_pgpool_stops(unit: PgpoolUnit) -> None:
    unit.prepare()
    unit.start()
    assert unit.anycast_present(), unit.explain("no address after start")
    restarted_at = time.time()
    restart(unit)
    assert unit.anycast_present(), unit.explain("no address after the restart")
    entries: list[dict[str, Any]] = []

    def logged_through_add() -> bool:
        entries[:] = unit_journal(unit, restarted_at)
        return any(hook_action("add")(e) for e in entries)

    unit.wait_until(logged_through_add, 5, "the restart's lines up to ExecStartPost's add")
    drain = first_index(entries, "ExecStop's drain line", hook_action("drain"))
    shutdown = first_index(entries, "pgpool shutdown line", pgpool_shutdown_line)
    delete = first_index(entries, "ExecStopPost's del line", hook_action("del"))
    add = first_index(entries, "ExecStartPost's add line", hook_action("add"))
    order = {"drain": drain, "pgpool shutdown": shutdown, "del": delete, "add": add}
    assert drain < shutdown < delete < add, unit.explain(f"journal order {order}")
    drain_fields = line_fields(entries[drain])
    assert drain_fields.get("changed") == f"-{ANYCAST}", unit.explain(message(entries[drain]))
    assert drain_fields.get("result") == "ok", unit.explain(message(entries[drain]))
    # drain withdrew the address, so del found nothing left to remove.
    assert line_fields(entries[delete]).get("changed") == "none", unit.explain(
        message(entries[delete])
    )
    assert line_fields(entries[add]).get("changed") == f"+{ANYCAST}", unit.explain(
        message(entries[add])
    )
    for index in (drain, delete, add):
        assert_from_postgres(unit, entries[index], "pgpool2.service")


def test_3b_serving_route_stays_through_drain_and_goes_with_stop(unit: PgpoolUnit) -> None:
    unit.prepare()
    write_conf(unit, "60-serving.toml", "serving_route = true\n")
    unit.start()
    assert unit.anycast_present(), unit.explain("no address after start")
    routes = serving_routes(unit)
    assert any(r.startswith(f"local {ANYCAST_IP} dev lo") for r in routes), unit.explain(
        f"no serving route after add: {routes}"
    )
    # While ExecStop drains (drain_seconds, 2 s), the address is gone and the route stays.
    unit.box.run(["systemctl", "stop", "--no-block", "pgpool2"])
    script = "ip -o addr show dev lo; echo --; ip route show table local proto 177"
    seen_draining = False
    deadline = time.monotonic() + STOP_BOUND
    while time.monotonic() < deadline and not seen_draining:
        addresses, _, route_text = unit.box.run(["sh", "-c", script]).stdout.partition("--")
        seen_draining = f" {ANYCAST} " not in addresses and f"local {ANYCAST_IP} " in route_text
        if unit.state()["ActiveState"] in ("inactive", "failed"):
            break
    assert seen_draining, unit.explain("never saw the address withdrawn with the route kept")
    unit.stop()  # bounded; pgpool's own stop hang is a warning
    assert not unit.anycast_present(), unit.explain("address left after stop")
    assert serving_routes(unit) == [], unit.explain(f"routes left: {serving_routes(unit)}")


def test_4_reconcile_at_exec_start_pre_removes_a_leftover(unit: PgpoolUnit) -> None:
    unit.prepare()
    assert unit.state()["ActiveState"] in ("inactive", "failed")
    unit.box.run(["ip", "addr", "add", ANYCAST, "dev", "lo"])
    assert unit.anycast_present(), unit.explain("could not place the leftover address")
    started_at = time.time()
    unit.start()
    entries: list[dict[str, Any]] = []

    def logged_through_add() -> bool:
        entries[:] = unit_journal(unit, started_at)
        return any(hook_action("add")(e) for e in entries)

    unit.wait_until(logged_through_add, 5, "the start's lines up to ExecStartPost's add")
    reconcile = first_index(entries, "ExecStartPre's reconcile line", hook_action("reconcile"))
    clean = first_index(entries, "ExecStartPre's clean line", hook_action("clean"))
    pgpool = first_index(
        entries,
        "a line of pgpool itself",
        lambda e: e.get("SYSLOG_IDENTIFIER") == "pgpool",
    )
    add = first_index(entries, "ExecStartPost's add line", hook_action("add"))
    order = {"reconcile": reconcile, "clean": clean, "pgpool": pgpool, "add": add}
    assert reconcile < clean < pgpool < add, unit.explain(f"journal order {order}")
    found = line_fields(entries[reconcile])
    assert found.get("changed") == f"-{ANYCAST}", unit.explain(message(entries[reconcile]))
    assert found.get("pgpool") == "down" and found.get("decision") == "withdraw", unit.explain(
        message(entries[reconcile])
    )
    assert line_fields(entries[add]).get("changed") == f"+{ANYCAST}", unit.explain(
        message(entries[add])
    )
    for index in (reconcile, add):
        assert_from_postgres(unit, entries[index], "pgpool2.service")
    assert unit.anycast_present(), unit.explain("no address after start")
