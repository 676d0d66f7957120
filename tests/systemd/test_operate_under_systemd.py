"""The operator commands under a real systemd (issue 5): check timer, hold, drain, reconcile.

Same bed as test_pgpool_drop_in.py (whose PgpoolUnit this reuses): a fresh Debian 12
or 13 container per test, this checkout's .deb, the drop-in activated by its symbolic
link, Debian's pgpool2.service and PostgreSQL. What is new here is what only systemd
shows: the shipped check timer acting on a frozen pgpool, a hold that outlives
`systemctl restart`, ExecStop's drain before pgpool's shutdown, ExecStartPre's
reconcile before pgpool starts.

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
CHECK_TIMER = "pgpool-anycast-hook-check.timer"
CHECK_SERVICE = "pgpool-anycast-hook-check.service"
CONF_D = "/etc/pgpool-anycast-hook/conf.d"
START_BOUND = 90.0  # ExecStartPost's add waits at most 60 s for pgpool
CHECK_BOUND = 40.0  # timer every 5 s; fall/rise 2 runs of at most 2 s each
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


def check_lines(unit: PgpoolUnit, since: float) -> list[dict[str, Any]]:
    """The check service's hook lines since `since`."""
    entries = unit.box.journal_entries(f"_SYSTEMD_UNIT={CHECK_SERVICE}")
    return [e for e in after(entries, since) if is_hook_line(e)]


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


def test_1_check_timer_withdraws_a_frozen_pgpool_and_announces_after_sigcont(
    unit: PgpoolUnit,
) -> None:
    unit.prepare()
    write_conf(unit, "60-check.toml", "check_fall = 2\ncheck_rise = 2\ncheck_timeout = 1.0\n")
    unit.start()
    assert unit.anycast_present(), unit.explain("no address after start")
    enabled_at = time.time()
    unit.box.run(["systemctl", "enable", "--now", CHECK_TIMER])
    # A healthy pgpool: the first run goes INIT->UP and leaves the address alone.
    first = wait_for_line(
        unit,
        lambda: check_lines(unit, enabled_at),
        hook_action("check", transition="INIT->UP"),
        20,
        "the timer's first check (INIT->UP)",
    )
    assert line_fields(first).get("changed") == "none", unit.explain(message(first))
    assert unit.anycast_present(), unit.explain("a healthy check withdrew the address")
    assert_from_postgres(unit, first, CHECK_SERVICE)

    frozen_at = time.time()
    unit.box.run(["systemctl", "kill", "--signal=SIGSTOP", "pgpool2"])
    try:
        states: dict[int, str] = {}

        def all_stopped() -> bool:
            states.clear()
            states.update(process_states(unit, unit_pids(unit)))
            return bool(states) and set(states.values()) == {"T"}

        unit.wait_until(all_stopped, 5, "every pgpool process stopped", lambda: str(states))
        unit.wait_until(
            lambda: not unit.anycast_present(), CHECK_BOUND, f"{ANYCAST} withdrawn by the timer"
        )
        withdrawn_after = time.time() - frozen_at
        down = wait_for_line(
            unit,
            lambda: check_lines(unit, frozen_at),
            hook_action("check", transition="FALLING->DOWN"),
            5,
            "the check line FALLING->DOWN",
        )
        down_fields = line_fields(down)
        assert down_fields.get("changed") == f"-{ANYCAST}", unit.explain(message(down))
        assert down_fields.get("probe") == "failed", unit.explain(message(down))
        assert_from_postgres(unit, down, CHECK_SERVICE)
        # The timer withdrew it, not ExecStopPost: pgpool2.service is still up.
        assert unit.state()["ActiveState"] == "active", unit.explain("pgpool2 is not active")
    finally:
        thawed_at = time.time()
        unit.box.run(["systemctl", "kill", "--signal=SIGCONT", "pgpool2"], check=False)
    unit.wait_until(unit.anycast_present, CHECK_BOUND, f"{ANYCAST} announced again by the timer")
    announced_after = time.time() - thawed_at
    up = wait_for_line(
        unit,
        lambda: check_lines(unit, thawed_at),
        hook_action("check", transition="RISING->UP"),
        5,
        "the check line RISING->UP",
    )
    assert line_fields(up).get("changed") == f"+{ANYCAST}", unit.explain(message(up))
    assert_from_postgres(unit, up, CHECK_SERVICE)
    code, data, table = status(unit)
    assert code == 0, unit.explain(f"status exit {code} after SIGCONT:\n{table}")
    assert data["check"] == {"state": "UP", "count": 0}, unit.explain(table)
    print(f"[{unit.suite}] withdrawn {withdrawn_after:.1f}s after SIGSTOP, "
          f"announced {announced_after:.1f}s after SIGCONT")  # fmt: skip


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
