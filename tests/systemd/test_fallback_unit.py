"""The last resort under a real systemd: the guard on a PostgreSQL host, on Debian 12 and 13.

Each test boots a fresh container (conftest.py) with this checkout's .deb, and follows
docs/examples/README.md, "The last resort": Debian's PostgreSQL with the guard's role
authenticated by `peer` through the pg_ident.conf map of pg_hba-fallback.conf,
`serve = "postgresql"`, and pgpool-anycast-hook-guard.service started on its own
(`systemctl add-wants multi-user.target`), no pgpool2.service at all. So the unit's
sandbox (its user, its supplementary group postgres, ProtectSystem=strict) is shown
to reach PostgreSQL's socket. The address is read from the container's lo.
"""

from __future__ import annotations

import time

import pytest

from testbed.container import Container
from tests.systemd.test_pgpool_drop_in import ANYCAST

pytestmark = pytest.mark.systemd

GUARD = "pgpool-anycast-hook-guard.service"
WITHDRAW_BOUND = 0.5 * 4 + 0.25 + 3.0  # interval x postgresql_misses + timeout + margin
HOLD_DOWN = 5.0


def present(box: Container) -> bool:
    return ANYCAST in box.addresses("lo")


def wait(box: Container, condition: object, bound: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < bound:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {bound:g} s waiting for {what}:\n"
                         f"{box.journal(GUARD)[-3000:]}")  # fmt: skip


def test_the_guard_follows_postgresql_under_systemd(box: Container) -> None:
    run = box.run
    run(["systemctl", "stop", "pgpool2"], check=False)  # installed in the root; not used here
    version = run(["ls", "/etc/postgresql"]).stdout.split()[0]
    conf = f"/etc/postgresql/{version}/main"
    # The guard's lines of the shipped example, as they are (the package's docs).
    example = "/usr/share/doc/pgpool-anycast-hook/examples/pg_hba-fallback.conf"
    guard_line = run(["sh", "-c", f"zcat -f {example}* | grep '^local .*pgpool_anycast'"])
    box.write_file(f"{conf}/pg_hba.conf", guard_line.stdout + "local all postgres peer\n")
    ident = run(["sh", "-c", f"zcat -f {example}* | sed -n 's/^# pg_ident.conf: *//p'"])
    assert "pgpool-anycast-guard" in ident.stdout, ident.stdout
    box.write_file(f"{conf}/pg_ident.conf", ident.stdout)
    run(["systemctl", "restart", "postgresql"], timeout=60)
    wait(box, lambda: run(["pg_isready", "-q"], check=False).returncode == 0, 30, "PostgreSQL")
    run(["runuser", "-u", "postgres", "--", "psql", "-qc", "CREATE ROLE pgpool_anycast LOGIN"])
    settings = f'addresses = ["{ANYCAST}"]\nmode = "guarded"\nserve = "postgresql"\n'
    box.write_file("/etc/pgpool-anycast-hook/conf.d/50-fallback.toml", settings)
    run(["pgpool-anycast-hook", "check-config"])

    run(["systemctl", "add-wants", "multi-user.target", GUARD])
    run(["systemctl", "start", GUARD], timeout=60)
    wait(box, lambda: present(box), 10.0, f"{ANYCAST} on lo (PostgreSQL is the primary)")
    status = run(["pgpool-anycast-hook", "status"], check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "KNOWN, primary" in status.stdout, status.stdout
    refused = run(["runuser", "-u", "postgres", "--", "pgpool-anycast-hook", "add", "0"],
                  check=False)  # fmt: skip
    assert refused.returncode == 2 and "result=not-applicable" in refused.stderr, refused

    run(["systemctl", "stop", "postgresql"], timeout=60)
    took = wait(box, lambda: not present(box), WITHDRAW_BOUND, f"{ANYCAST} withdrawn")
    assert took <= WITHDRAW_BOUND
    run(["systemctl", "start", "postgresql"], timeout=60)
    wait(box, lambda: present(box), HOLD_DOWN + 10.0, f"{ANYCAST} back after the hold-down")
    journal = box.journal(GUARD)
    assert "role-lost" in journal or "unanswered" in journal, journal[-3000:]
    enabled = run(["systemctl", "is-enabled", GUARD], check=False).stdout.strip()
    assert enabled in ("static", "enabled", "indirect"), enabled  # wanted by multi-user.target
    wants = run(["ls", "/etc/systemd/system/multi-user.target.wants/"]).stdout
    assert GUARD in wants, wants
