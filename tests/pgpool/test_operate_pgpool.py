"""status, check (SIGSTOP/SIGCONT), the hold across a restart, and drain; real pgpool."""

import json
import signal
import subprocess
import time

from tests.netns.conftest import HookSetup, addresses_in
from tests.pgpool.conftest import PG_BIN, PGPOOL_PORT, Cluster

ANYCAST = "198.18.2.0/32"


def status(hook: HookSetup, netns: str) -> tuple[int, dict[str, object]]:
    result = hook.run(netns, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def test_status_sees_a_live_pgpool(cluster: Cluster, pgpool_hook: HookSetup) -> None:
    netns = cluster.netns
    code, data = status(pgpool_hook, netns)
    assert code == 1  # pgpool serves, the address is not there yet: drift
    assert data["pgpool"] == {
        "pid_file": str(cluster.pid_file),
        "pid": cluster.processes()[0].pid,
        "alive": True,
        "port": PGPOOL_PORT,
        "listening": str(cluster.root / f".s.PGSQL.{PGPOOL_PORT}"),
    }
    assert data["desired"] == "present" and data["actual"] == "absent"
    added = pgpool_hook.run(netns, "add", "--wait-ready", "20", "0")
    assert added.returncode == 0 and ANYCAST in addresses_in(netns), added.stderr
    code, data = status(pgpool_hook, netns)
    assert code == 0 and data["matches"] is True
    table = pgpool_hook.run(netns, "status").stdout
    assert "alive, pid" in table and "matches" in table


def test_check_withdraws_a_stopped_pgpool_and_announces_after_sigcont(
    cluster: Cluster, pgpool_hook: HookSetup
) -> None:
    netns = cluster.netns
    assert pgpool_hook.run(netns, "add", "--wait-ready", "20", "0").returncode == 0
    first = pgpool_hook.run(netns, "check")
    assert first.returncode == 0 and 'transition="INIT->UP"' in first.stderr, first.stderr
    quiet = pgpool_hook.run(netns, "check")
    assert quiet.returncode == 0 and quiet.stderr == ""  # nothing changed: no line
    cluster.signal_all(signal.SIGSTOP)
    try:
        falling = pgpool_hook.run(netns, "check")
        assert falling.returncode == 1 and "FALLING:1" in falling.stderr, falling.stderr
        assert ANYCAST in addresses_in(netns)  # one failure: not yet
        started = time.monotonic()
        down = pgpool_hook.run(netns, "check")
        assert time.monotonic() - started < 5  # bounded by check_timeout
        assert down.returncode == 1 and 'transition="FALLING->DOWN"' in down.stderr
        assert "changed=-198.18.2.0/32" in down.stderr
        assert ANYCAST not in addresses_in(netns)
        _, data = status(pgpool_hook, netns)
        assert data["check"] == {"state": "DOWN", "count": 0}
    finally:
        cluster.signal_all(signal.SIGCONT)
    rising = pgpool_hook.run(netns, "check")
    assert rising.returncode == 0 and "DOWN->RISING" in rising.stderr, rising.stderr
    assert ANYCAST not in addresses_in(netns)
    up = pgpool_hook.run(netns, "check")
    assert up.returncode == 0 and "RISING->UP" in up.stderr
    assert "changed=+198.18.2.0/32" in up.stderr and ANYCAST in addresses_in(netns)


def test_the_hold_survives_a_pgpool_restart(cluster: Cluster, pgpool_hook: HookSetup) -> None:
    netns = cluster.netns
    assert pgpool_hook.run(netns, "add", "--wait-ready", "20", "0").returncode == 0
    assert pgpool_hook.run(netns, "disable", "--reason", "maintenance").returncode == 0
    assert ANYCAST not in addresses_in(netns)
    # systemctl restart pgpool2 with the drop-in: stop, ExecStopPost del, ExecStartPre
    # reconcile, start, ExecStartPost add; then the timer's check
    cluster.stop_pgpool()
    assert pgpool_hook.run(netns, "del", "0").returncode == 0
    assert pgpool_hook.run(netns, "reconcile").returncode == 0
    cluster.start_pgpool()
    added = pgpool_hook.run(netns, "add", "--wait-ready", "20", "0")
    assert added.returncode == 0 and "hold" in added.stderr
    assert pgpool_hook.run(netns, "reconcile").returncode == 0
    checked = pgpool_hook.run(netns, "check")
    assert checked.returncode == 0 and "DISABLED" in checked.stderr
    assert ANYCAST not in addresses_in(netns)
    code, data = status(pgpool_hook, netns)
    assert code == 0 and data["desired"] == "absent"
    assert isinstance(data["hold"], dict) and data["hold"]["reason"] == "maintenance"
    enabled = pgpool_hook.run(netns, "enable")
    assert enabled.returncode == 0 and "changed=+198.18.2.0/32" in enabled.stderr
    assert ANYCAST in addresses_in(netns)


def test_drain_waits_for_a_client_of_pgpool(cluster: Cluster, pgpool_hook: HookSetup) -> None:
    netns = cluster.netns
    pgpool_hook.write(
        addresses=[ANYCAST], pgpool_conf=str(cluster.pgpool_conf), status_file="",
        serving_route=True, drain_seconds=0.5, drain_timeout=20,
    )  # fmt: skip
    assert pgpool_hook.run(netns, "reconcile").returncode == 0
    assert ANYCAST in addresses_in(netns)
    client = subprocess.Popen(
        ["ip", "netns", "exec", netns, "setpriv", "--reuid", "postgres", "--regid", "postgres",
         "--init-groups", str(PG_BIN / "psql"), "-X", "-h", "127.0.0.1", "-p", str(PGPOOL_PORT),
         "-U", "postgres", "-d", "postgres", "-c", "SELECT pg_sleep(3)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        started = time.monotonic()
        drained = pgpool_hook.run(netns, "drain", "0")
        elapsed = time.monotonic() - started
        _out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    assert drained.returncode == 0, drained.stderr
    assert client.returncode == 0, err  # the client's query finished normally
    assert "clients_left=0" in drained.stderr and "serving=kept" in drained.stderr
    assert 1.0 < elapsed < 15
    assert ANYCAST not in addresses_in(netns)
    routes = subprocess.run(["ip", "-n", netns, "route", "show", "table", "local", "proto", "177"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "198.18.2.0" in routes  # still served until pgpool stops and `del` runs
