"""Running as pgpool runs the hook: as postgres, concurrently, with signals blocked, logged."""

import concurrent.futures
import fcntl
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.netns.conftest import HOOK, HookSetup, addresses_in

ANYCAST = "198.18.2.0/32"
AS_POSTGRES = ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups")
WITH_NET_ADMIN = ("--inh-caps", "+net_admin", "--ambient-caps", "+net_admin")


def test_postgres_with_ambient_cap_net_admin(netns: str, hook: HookSetup) -> None:
    result = hook.run(netns, "add", "0", prefix=(*AS_POSTGRES, *WITH_NET_ADMIN))
    assert result.returncode == 0, result.stderr
    assert ANYCAST in addresses_in(netns)
    result = hook.run(netns, "del", "0", prefix=(*AS_POSTGRES, *WITH_NET_ADMIN))
    assert result.returncode == 0, result.stderr
    assert ANYCAST not in addresses_in(netns)


def test_postgres_without_the_capability_gets_the_permission_code(
    netns: str, hook: HookSetup
) -> None:
    result = hook.run(netns, "add", "0", prefix=AS_POSTGRES)
    assert result.returncode == 77
    assert "CAP_NET_ADMIN" in result.stderr and "Traceback" not in result.stderr
    assert ANYCAST not in addresses_in(netns)
    subprocess.run(["ip", "-n", netns, "addr", "add", ANYCAST, "dev", "lo"], check=True)
    result = hook.run(netns, "del", "0", prefix=AS_POSTGRES)
    assert result.returncode == 77
    assert ANYCAST in addresses_in(netns)


def test_a_lock_file_left_by_root_does_not_lock_out_postgres(netns: str, hook: HookSetup) -> None:
    assert hook.run(netns, "add", "0").returncode == 0  # root creates the lock file
    lock = hook.state_dir / "lock"
    os.chmod(lock, 0o600)
    os.chmod(hook.state_dir, 0o755)
    result = hook.run(netns, "add", "0", prefix=(*AS_POSTGRES, *WITH_NET_ADMIN))
    assert result.returncode == 78 and "lock_file" in result.stderr  # 0600 root: unreadable
    result = hook.run(netns, "del", "0", prefix=(*AS_POSTGRES, *WITH_NET_ADMIN))
    assert result.returncode == 0, result.stderr  # a withdrawal needs no lock
    os.chmod(lock, 0o644)  # the mode root's umask gives it
    result = hook.run(netns, "add", "0", prefix=(*AS_POSTGRES, *WITH_NET_ADMIN))
    assert result.returncode == 0, result.stderr


def test_one_line_reaches_a_syslog_socket(netns: str, hook: HookSetup) -> None:
    path = hook.root / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        hook.write(addresses=[ANYCAST], syslog_address=str(path), syslog_facility="local3")
        result = hook.run(netns, "add", "0")
        assert result.returncode == 0
        datagram = server.recv(4096).decode()
        server.settimeout(0.3)
        try:
            extra = server.recv(4096)
        except TimeoutError:
            extra = b""
    assert extra == b""
    assert datagram.startswith(f"<{19 * 8 + 6}>")  # local3.info
    assert " pgpool-anycast-hook[" in datagram
    for field in (
        "action=add",
        "node=0",
        "decision=announce",
        "changed=+198.18.2.0/32",
        "result=ok",
        "duration_ms=",
    ):
        assert field in datagram
    line = datagram.split("]: ", 1)[1]
    assert result.stderr.strip() == f"pgpool-anycast-hook: {line}"


def test_concurrent_runs_all_succeed_and_an_overlapping_del_wins(
    netns: str, hook: HookSetup
) -> None:
    """50 concurrent add/del runs: each exits 0 with its line; the state is consistent.

    Adds serialize on the run lock, dels never wait for it (run_lock.py). An add
    that a del overlapped takes its addresses back (its line says `overlap=`), so
    the addresses can only be present if the last add to run was not overlapped.
    """
    path = hook.root / "log.sock"
    lines: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(0.2)

        def collect(stop: threading.Event) -> None:
            while not stop.is_set() or len(lines) < 50:
                try:
                    lines.append(server.recv(4096).decode())
                except TimeoutError:
                    if stop.is_set():
                        return

        hook.write(
            addresses=[ANYCAST, "2001:db8:2::1/128"],
            syslog_address=str(path),
            lock_timeout=30,
            deadline=40,
        )
        verbs = [random.choice(["add", "del"]) for _ in range(50)]
        stop = threading.Event()
        reader = threading.Thread(target=collect, args=(stop,))
        reader.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
                results = list(pool.map(lambda v: hook.run(netns, v, "0", timeout=60), verbs))
        finally:
            stop.set()
            reader.join(timeout=10)
    assert [r.returncode for r in results] == [0] * 50, [r.stderr for r in results if r.returncode]
    assert len(lines) == 50
    assert sorted(line.split("action=")[1].split()[0] for line in lines) == sorted(verbs)
    held = addresses_in(netns)
    assert (ANYCAST in held) is ("2001:db8:2::1/128" in held)  # all or nothing
    adds = [line for line in lines if "action=add" in line]
    if ANYCAST in held:
        assert adds and "overlap=" not in adds[-1]  # add lines are written under the lock
    assert hook.run(netns, "del", "0").returncode == 0
    assert ANYCAST not in addresses_in(netns)


def test_deadline_ends_a_stuck_run_with_one_line(netns: str, hook: HookSetup) -> None:
    hook.write(addresses=[ANYCAST], lock_timeout=30, deadline=0.5)
    with open(hook.state_dir / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        result = hook.run(netns, "add", "0")
        elapsed = time.monotonic() - started
    assert result.returncode == 75
    assert "result=deadline" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert elapsed < 10


def test_lock_wait_is_bounded_and_a_withdrawal_never_waits(netns: str, hook: HookSetup) -> None:
    hook.write(addresses=[ANYCAST], lock_timeout=0.3, deadline=10)
    with open(hook.state_dir / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = hook.run(netns, "add", "0")
        assert result.returncode == 75 and "result=busy" in result.stderr
        assert ANYCAST not in addresses_in(netns)
        subprocess.run(["ip", "-n", netns, "addr", "add", ANYCAST, "dev", "lo"], check=True)
        result = hook.run(netns, "del", "0")  # the lock is still held
    assert result.returncode == 0 and "changed=-198.18.2.0/32" in result.stderr
    assert ANYCAST not in addresses_in(netns)


def test_signals_blocked_by_pgpool_are_unblocked(netns: str, hook: HookSetup) -> None:
    """pgpool starts failover commands with SIGTERM blocked; the hook must still obey it."""
    hook.write(addresses=[ANYCAST], lock_timeout=30, deadline=30)
    with open(hook.state_dir / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, HOOK, "--config", str(hook.config), "add", "0"],
            stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}),
        )
        try:
            time.sleep(1.0)  # the hook is now waiting for the lock
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code == -signal.SIGTERM


def test_clean_moves_the_file_aside_and_logs_what_it_held(netns: str, hook: HookSetup) -> None:
    hook.status_file.write_text("down\nup\n")
    result = hook.run(netns, "clean", " 0")
    assert result.returncode == 0, result.stderr
    assert not hook.status_file.exists()
    kept = list(Path(hook.root).glob("pgpool_status.set-aside-*"))
    assert len(kept) == 1 and kept[0].read_text() == "down\nup\n"
    assert "status=down,up" in result.stderr and "moved:" in result.stderr
    hook.status_file.write_text("UP\ndown\n")  # usable primary: untouched
    result = hook.run(netns, "clean", "0")
    assert result.returncode == 0 and hook.status_file.read_text() == "UP\ndown\n"
    assert len(list(Path(hook.root).glob("pgpool_status.set-aside-*"))) == 1
