"""status, reconcile, disable/enable, drain and the serving route, on a real kernel in a netns.

pgpool is not running here (tests/pgpool covers a live one), so the desired state
is "absent" unless a fake pgpool, a listener on the port with a pgpool pid file, is
started; the tests that need pgpool alive use a real pgpool in tests/pgpool.
"""

import json
import subprocess
import time

from tests.netns.conftest import HookSetup, addresses_in

ANYCAST = "198.18.2.0/32"


def serving_routes(netns: str) -> set[str]:
    out = subprocess.run(
        ["ip", "-j", "-n", netns, "route", "show", "table", "local", "proto", "177"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {f"{r['dst']}/32" if "/" not in r["dst"] else r["dst"] for r in json.loads(out)}


def test_reconcile_removes_leftovers_when_pgpool_is_not_running(
    netns: str, hook: HookSetup
) -> None:
    subprocess.run(["ip", "-n", netns, "addr", "add", ANYCAST, "dev", "lo"], check=True)
    drift = hook.run(netns, "status")
    assert drift.returncode == 1, drift.stdout
    assert "DRIFT" in drift.stdout and "pgpool is not running" in drift.stdout
    dry = hook.run(netns, "--dry-run", "reconcile")
    assert dry.returncode == 0 and "result=dry-run" in dry.stderr
    assert "changed=-198.18.2.0/32" in dry.stderr and ANYCAST in addresses_in(netns)
    done = hook.run(netns, "reconcile")
    assert done.returncode == 0, done.stderr
    assert "decision=withdraw" in done.stderr and "changed=-198.18.2.0/32" in done.stderr
    assert ANYCAST not in addresses_in(netns)
    assert len(done.stderr.strip().splitlines()) == 1
    clean = hook.run(netns, "status", "--json")
    assert clean.returncode == 0
    data = json.loads(clean.stdout)
    assert data["matches"] is True and data["desired"] == "absent" and data["actual"] == "absent"
    assert data["addresses"] == [{"address": ANYCAST, "present": False, "serving_route": None}]
    assert data["pgpool"]["alive"] is False and data["hold"] is None
    assert [n["up"] for n in data["pgpool_status"]["nodes"]] == [True, True]


def test_disable_holds_across_add_and_enable_lifts_it(netns: str, hook: HookSetup) -> None:
    assert hook.run(netns, "add", "0").returncode == 0
    assert ANYCAST in addresses_in(netns)
    dry = hook.run(netns, "--dry-run", "disable", "--reason", "x")
    assert dry.returncode == 0 and ANYCAST in addresses_in(netns)
    assert not (hook.state_dir / "hold").exists()
    held = hook.run(netns, "disable", "--reason", "kernel upgrade")
    assert held.returncode == 0, held.stderr
    assert "changed=-198.18.2.0/32" in held.stderr and ANYCAST not in addresses_in(netns)
    # a failback (add) and a restart of the hook's process do not lift it
    again = hook.run(netns, "add", "0")
    assert again.returncode == 0 and "hold" in again.stderr
    assert ANYCAST not in addresses_in(netns)
    data = json.loads(hook.run(netns, "status", "--json").stdout)
    assert data["hold"]["reason"] == "kernel upgrade" and data["hold"]["by"] == "root"
    assert data["hold"]["since"].endswith("Z")
    assert "kernel upgrade" in hook.run(netns, "status").stdout
    lifted = hook.run(netns, "enable")
    assert lifted.returncode == 0 and "hold=cleared" in lifted.stderr
    assert not (hook.state_dir / "hold").exists()
    assert hook.run(netns, "add", "0").returncode == 0
    assert ANYCAST in addresses_in(netns)


def test_the_serving_route_keeps_a_connection_alive_after_the_withdrawal(
    netns: str, hook: HookSetup
) -> None:
    """The kernel facts drain relies on: address gone, local route kept, packets accepted."""
    hook.write(addresses=[ANYCAST], serving_route=True)
    subprocess.run(["ip", "-n", netns, "addr", "add", ANYCAST, "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", netns, "route", "append", "local", "198.18.2.0/32", "dev", "lo",
                    "table", "local", "proto", "177"], check=True)  # fmt: skip
    assert hook.run(netns, "status").returncode == 1  # pgpool is not running: drift
    drained = hook.run(netns, "drain")  # no pgpool: nobody connected on 9999
    assert drained.returncode == 0, drained.stderr
    assert "changed=-198.18.2.0/32" in drained.stderr and "serving=kept" in drained.stderr
    assert ANYCAST not in addresses_in(netns)
    assert serving_routes(netns) == {ANYCAST}
    # the kernel still accepts the address: a listener binds it and a client reaches it
    script = (
        "import socket\n"
        "s = socket.socket(); s.bind(('198.18.2.0', 7000)); s.listen()\n"
        "c = socket.create_connection(('198.18.2.0', 7000), timeout=2)\n"
        "a, _ = s.accept(); c.sendall(b'ping'); print(a.recv(4).decode())\n"
    )
    out = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", script],
                         capture_output=True, text=True, timeout=10)  # fmt: skip
    assert out.stdout.strip() == "ping", out.stderr
    gone = hook.run(netns, "reconcile")  # pgpool not running: the serving route goes too
    assert gone.returncode == 0 and "-route:198.18.2.0/32" in gone.stderr
    assert serving_routes(netns) == set()
    assert hook.run(netns, "status").returncode == 0


def test_reconcile_and_disable_manage_the_serving_route_exactly(
    netns: str, hook: HookSetup
) -> None:
    hook.write(addresses=[ANYCAST, "2001:db8:2::1/128"], serving_route=True)
    # someone else's local route (another protocol) is never ours
    subprocess.run(["ip", "-n", netns, "route", "append", "local", "198.18.2.0/32", "dev", "lo",
                    "table", "local", "proto", "static"], check=True)  # fmt: skip
    for family in ("-4", "-6"):
        address = "198.18.2.0/32" if family == "-4" else "2001:db8:2::1/128"
        subprocess.run(["ip", family, "-n", netns, "route", "append", "local", address, "dev", "lo",
                        "table", "local", "proto", "177"], check=True)  # fmt: skip
    result = hook.run(netns, "disable")
    assert result.returncode == 0, result.stderr
    assert "-route:198.18.2.0/32" in result.stderr and "-route:2001:db8:2::1/128" in result.stderr
    table = subprocess.run(["ip", "-n", netns, "route", "show", "table", "local"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "198.18.2.0 dev lo proto static" in table and "proto 177" not in table


def test_drain_waits_for_clients_then_returns(netns: str, hook: HookSetup) -> None:
    """A connection to pgpool's port keeps drain waiting until it closes, within bounds."""
    pid_file = hook.root / "pgpool.pid"
    (hook.root / "pgpool.conf").write_text(f"port = 9999\npid_file_name = '{pid_file}'\n")
    hook.write(addresses=[ANYCAST], pgpool_conf=str(hook.root / "pgpool.conf"),
               drain_seconds=0.2, drain_timeout=1.0, deadline=5)  # fmt: skip
    # A stand-in for pgpool: named "pgpool", with its pid file, holding one client connection.
    script = (
        "import ctypes, os, socket, sys, time\n"
        "ctypes.CDLL(None).prctl(15, b'pgpool', 0, 0, 0)\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}}\\0')\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', 9999)); s.listen()\n"
        "c = socket.create_connection(('127.0.0.1', 9999)); a, _ = s.accept()\n"
        "print('ready', flush=True); time.sleep(float(sys.argv[1]))\n"
    )
    holder = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", script, "30"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        stuck = hook.run(netns, "drain", "0")
        elapsed = time.monotonic() - started
        assert stuck.returncode == 75, stuck.stderr
        assert "result=drain-timeout" in stuck.stderr and "clients_left=1" in stuck.stderr
        assert 1.1 <= elapsed < 5
    finally:
        holder.kill()
        holder.wait(timeout=10)
    hook.write(addresses=[ANYCAST], pgpool_conf=str(hook.root / "pgpool.conf"),
               drain_seconds=0.0, drain_timeout=10.0, deadline=5)  # fmt: skip
    short = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", script, "1.5"],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert short.stdout is not None and short.stdout.readline().strip() == "ready"
        started = time.monotonic()
        done = hook.run(netns, "drain")
        elapsed = time.monotonic() - started
    finally:
        short.kill()
        short.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "clients_left=0" in done.stderr and 0.5 < elapsed < 8


def test_drain_lets_quiet_connections_go_and_waits_for_live_ones(
    netns: str, hook: HookSetup
) -> None:
    """drain_idle: a connection quiet either way stops holding the drain; a live one holds."""
    pid_file = hook.root / "pgpool.pid"
    (hook.root / "pgpool.conf").write_text(f"port = 9999\npid_file_name = '{pid_file}'\n")
    hook.write(addresses=[ANYCAST], pgpool_conf=str(hook.root / "pgpool.conf"),
               drain_seconds=0.0, drain_timeout=3.0, drain_idle=0.5, deadline=5)  # fmt: skip
    # pgpool's stand-in holds one connection; with "chatty" its client sends every 0.1 s.
    script = (
        "import ctypes, os, socket, sys, time\n"
        "ctypes.CDLL(None).prctl(15, b'pgpool', 0, 0, 0)\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}}\\0')\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', 9999)); s.listen()\n"
        "c = socket.create_connection(('127.0.0.1', 9999)); a, _ = s.accept()\n"
        "print('ready', flush=True)\n"
        "for _ in range(300):\n"
        "    time.sleep(0.1)\n"
        "    if sys.argv[1] == 'chatty': c.send(b'x'); a.recv(1)\n"
    )
    for kind, code, bound in (("quiet", 0, (0.3, 2.5)), ("chatty", 75, (2.9, 6.0))):
        holder = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", script, kind],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            started = time.monotonic()
            done = hook.run(netns, "drain", "0")
            elapsed = time.monotonic() - started
        finally:
            holder.kill()
            holder.wait(timeout=10)
        assert done.returncode == code, (kind, done.stderr)
        assert bound[0] <= elapsed < bound[1], (kind, elapsed)
        if kind == "quiet":
            assert "clients_left=0" in done.stderr and "idle_left=1" in done.stderr
        else:
            assert "clients_left=1" in done.stderr and "result=drain-timeout" in done.stderr


def test_drain_after_a_crash_withdraws_and_returns_at_once(netns: str, hook: HookSetup) -> None:
    """systemd runs ExecStop after kill -9 too: drain is then the first to withdraw."""
    pid_file = hook.root / "pgpool.pid"
    pid_file.write_text("999999\0")  # left behind by a killed pgpool
    (hook.root / "pgpool.conf").write_text(f"pid_file_name = '{pid_file}'\n")
    hook.write(addresses=[ANYCAST], pgpool_conf=str(hook.root / "pgpool.conf"),
               drain_seconds=30, drain_timeout=30, deadline=5)  # fmt: skip
    subprocess.run(["ip", "-n", netns, "address", "add", ANYCAST, "dev", "lo"], check=True)
    started = time.monotonic()
    result = hook.run(netns, "drain", "0")
    assert result.returncode == 0, result.stderr
    assert "pgpool=gone" in result.stderr and "changed=-198.18.2.0/32" in result.stderr
    assert ANYCAST not in addresses_in(netns)
    assert time.monotonic() - started < 10  # neither drain_seconds nor drain_timeout waited


def test_every_changing_command_has_a_dry_run(netns: str, hook: HookSetup) -> None:
    hook.write(addresses=[ANYCAST], serving_route=True)
    subprocess.run(["ip", "-n", netns, "addr", "add", ANYCAST, "dev", "lo"], check=True)
    for args in (["reconcile"], ["disable"], ["enable"], ["drain"], ["check"]):
        result = hook.run(netns, "--dry-run", *args)
        assert result.returncode in (0, 1), (args, result.stderr)
        assert "result=dry-run" in result.stderr, (args, result.stderr)
        assert ANYCAST in addresses_in(netns), args
    assert not (hook.state_dir / "hold").exists()
    assert not (hook.state_dir / "check.json").exists()
