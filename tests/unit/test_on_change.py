"""on_change: the environment, and real commands run by a loop like the guard's.

Every command here is a real process (sh, sleep, python3); nothing is mocked. Each
wait is bounded in passes and in time, every process a test starts is stopped by
its PID, and no assertion depends on how fast the machine is: only on the order of
events and on generous bounds.
"""

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.on_change import (
    PATH,
    QUEUE_MAX,
    TEXT_MAX,
    ChangeCommands,
    transition_environment,
)
from pgpool_anycast_hook.run_log import SEVERITY_INFO, SEVERITY_WARNING

SH = "/bin/sh"
BOUND = 30.0  # seconds any of these loops may take, at most: never reached when all is well
KEYS = {
    "PATH",
    "LANG",
    "PAH_OLD_STATE",
    "PAH_NEW_STATE",
    "PAH_REASON",
    "PAH_REASON_CODE",
    "PAH_ADDRESSES",
    "PAH_ANNOUNCED",
    "PAH_TIME",
}


def env_for(reason: str = "probe down") -> dict[str, str]:
    return transition_environment(
        "ANNOUNCED", "WITHDRAWN", reason, "probe-down", ["198.18.2.0/32"], False, 1764640000.5
    )


class Recorder:
    """The `log` the guard would pass: every call, in order."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, dict[str, object]]] = []

    def log(self, severity: int, **fields: object) -> None:
        self.lines.append((severity, fields))

    def results(self) -> list[str]:
        return [str(fields.get("result")) for _severity, fields in self.lines]

    def with_result(self, result: str) -> list[dict[str, object]]:
        return [fields for _severity, fields in self.lines if fields.get("result") == result]


@pytest.fixture
def made() -> Iterator[Callable[..., tuple[ChangeCommands, select.poll, Recorder]]]:
    """ChangeCommands on a fresh poller; whatever still runs at the end is killed."""
    everything: list[ChangeCommands] = []

    def make(
        argv: list[str], timeout: float = BOUND, max_running: int = 2
    ) -> tuple[ChangeCommands, select.poll, Recorder]:
        poller, recorder = select.poll(), Recorder()
        commands = ChangeCommands(argv, timeout, max_running, poller, recorder.log)
        everything.append(commands)
        return commands, poller, recorder

    yield make
    for commands in everything:
        commands.close(grace=0)


def drive(commands: ChangeCommands, poller: select.poll, bound: float = BOUND) -> None:
    """The guard's loop, for on_change only: poll until the next deadline, reap, expire;
    until nothing runs or waits."""
    end = time.monotonic() + bound
    for _ in range(10_000):
        if not commands.running and not commands.queued:
            return
        now = time.monotonic()
        assert now < end, f"commands still running after {bound} s"
        deadline = commands.next_deadline()
        wait = end - now if deadline is None else max(0.0, min(deadline, end) - now)
        for fd, _events in poller.poll(wait * 1000):
            assert commands.owns(fd), fd
            commands.reap(fd, time.monotonic())
        commands.expire(time.monotonic())
    pytest.fail("the loop made 10000 passes")


def wait_until(check: Callable[[], bool], bound: float = 10.0, step: float = 0.02) -> bool:
    end = time.monotonic() + bound
    for _ in range(int(bound / step) + 50):
        if check():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)
    return check()


def gone(pid: int) -> bool:
    """Exited (a zombie counts: whoever its parent is now has yet to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


# -- the environment -----------------------------------------------------------------


def test_the_environment_is_the_transition_and_nothing_else() -> None:
    env = transition_environment(
        "HOLDING_DOWN",
        "ANNOUNCED",
        "tick: all checks pass",
        "checks-pass",
        ["198.18.2.0/32", "2001:db8::1/128"],
        True,
        1764640000.1234,
    )
    assert env == {
        "PATH": PATH,
        "LANG": "C.UTF-8",
        "PAH_OLD_STATE": "HOLDING_DOWN",
        "PAH_NEW_STATE": "ANNOUNCED",
        "PAH_REASON": "tick: all checks pass",
        "PAH_REASON_CODE": "checks-pass",
        "PAH_ADDRESSES": "198.18.2.0/32 2001:db8::1/128",
        "PAH_ANNOUNCED": "1",
        "PAH_TIME": "1764640000.123",
    }
    withdrawn = transition_environment("ANNOUNCED", "WITHDRAWN", "x", "y", [], False, 5.0)
    assert withdrawn["PAH_ANNOUNCED"] == "0" and withdrawn["PAH_ADDRESSES"] == ""
    assert withdrawn["PAH_TIME"] == "5.000"


def test_a_reason_is_made_one_bounded_printable_line() -> None:
    env = env_for("a\0b\nc\td" + "x" * 5000)
    assert env["PAH_REASON"].startswith("a b c d")
    assert len(env["PAH_REASON"]) == TEXT_MAX


@given(reason=st.text(), code=st.text(), addresses=st.lists(st.text(), max_size=4))
def test_every_value_can_be_passed_to_execve(reason: str, code: str, addresses: list[str]) -> None:
    env = transition_environment("A", "B", reason, code, addresses, True, 0.0)
    assert set(env) == KEYS
    for value in env.values():
        assert "\0" not in value and "\n" not in value and value.isprintable()
        os.fsencode(value)  # what Popen does with it: must not raise
    assert len(env["PAH_REASON"]) <= TEXT_MAX and len(env["PAH_REASON_CODE"]) <= TEXT_MAX


# -- one command -------------------------------------------------------------------


def test_the_command_gets_exactly_its_environment_dev_null_and_its_own_session(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]], tmp_path: Path
) -> None:
    out = tmp_path / "seen.json"
    script = (
        "import json, os, sys\n"
        "seen = {'env': dict(os.environ), 'cwd': os.getcwd(),"
        " 'stdin': os.readlink('/proc/self/fd/0'),"
        " 'session_leader': os.getsid(0) == os.getpid(),"
        " 'group_leader': os.getpgid(0) == os.getpid()}\n"
        "open(sys.argv[1], 'w').write(json.dumps(seen))\n"
    )
    commands, poller, recorder = made(["/usr/bin/python3", "-c", script, str(out)])
    env = env_for()
    commands.start(env, time.monotonic())
    drive(commands, poller)
    assert recorder.results() == ["started", "ok"], recorder.lines
    seen = json.loads(out.read_text())
    assert seen == {
        "env": env,
        "cwd": "/",
        "stdin": "/dev/null",
        "session_leader": True,
        "group_leader": True,
    }


@pytest.mark.parametrize(
    ("script", "result", "detail"),
    [
        ("exit 0", "ok", {}),
        ("exit 3", "failed", {"exit": 3}),
        ("kill -TERM $$", "killed", {"signal": "SIGTERM"}),
        ("kill -40 $$", "killed", {"signal": "40"}),  # real-time: no name
    ],
)
def test_how_a_command_ended_is_logged(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]],
    script: str,
    result: str,
    detail: dict[str, object],
) -> None:
    commands, poller, recorder = made([SH, "-c", script])
    commands.start(env_for(), time.monotonic())
    drive(commands, poller)
    assert recorder.results() == ["started", result], recorder.lines
    severity, fields = recorder.lines[-1]
    assert severity == (SEVERITY_INFO if result == "ok" else SEVERITY_WARNING)
    assert fields["event"] == "on-change" and fields["transition"] == "ANNOUNCED->WITHDRAWN"
    assert fields["pid"] == recorder.lines[0][1]["pid"]
    assert isinstance(fields["duration_ms"], float) and fields["duration_ms"] >= 0
    for key, value in detail.items():
        assert fields[key] == value


def test_a_command_that_cannot_start_is_logged_not_raised(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]], tmp_path: Path
) -> None:
    not_executable = tmp_path / "notify"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(0o644)
    for argv, why in [
        ([str(tmp_path / "missing")], "No such file"),
        ([str(not_executable)], "Permission denied"),
    ]:
        commands, _poller, recorder = made(argv)
        commands.start(env_for(), time.monotonic())
        assert not commands.running and not commands.queued
        assert recorder.results() == ["spawn-failed"], recorder.lines
        severity, fields = recorder.lines[0]
        assert severity == SEVERITY_WARNING and why in str(fields["error"]), fields


def test_no_command_configured_does_nothing(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]],
) -> None:
    commands, _poller, recorder = made([])
    commands.start(env_for(), time.monotonic())
    assert not commands.running and not commands.queued and recorder.lines == []
    assert commands.next_deadline() is None


def test_a_timeout_and_a_bound_of_at_least_one_are_required() -> None:
    for timeout, max_running in [(0, 1), (-1, 1), (1, 0)]:
        with pytest.raises(ValueError):
            ChangeCommands([SH], timeout, max_running, select.poll(), Recorder().log)


# -- the bounds --------------------------------------------------------------------


def test_max_running_one_runs_them_one_after_another_in_order(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]], tmp_path: Path
) -> None:
    trace = tmp_path / "trace"
    script = 'echo "start $PAH_REASON" >> "$0"; sleep 0.1; echo "end $PAH_REASON" >> "$0"'
    commands, poller, recorder = made([SH, "-c", script, str(trace)], max_running=1)
    for n in ("1", "2", "3"):
        commands.start(env_for(n), time.monotonic())
    assert len(commands.running) == 1 and len(commands.queued) == 2
    drive(commands, poller)
    assert trace.read_text().split("\n") == [
        "start 1", "end 1", "start 2", "end 2", "start 3", "end 3", "",
    ]  # fmt: skip
    assert recorder.results() == ["started", "ok"] * 3, recorder.lines
    queued = [f for f in recorder.with_result("started") if "queued_ms" in f]
    assert len(queued) == 2  # the second and third waited, and say for how long


def test_a_full_queue_drops_its_oldest_and_says_so(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]],
) -> None:
    commands, _poller, recorder = made(["sleep", "60"], max_running=1)
    for n in range(QUEUE_MAX + 3):  # 0 runs; 1..16 wait; 17 and 18 push out 1 and 2
        commands.start(env_for(str(n)), time.monotonic())
    dropped = recorder.with_result("dropped")
    assert [f["why"] for f in dropped] == ["queue-full"] * 2
    assert len(commands.running) == 1
    assert [env["PAH_REASON"] for env, _since in commands.queued] == [
        str(n) for n in range(3, QUEUE_MAX + 3)
    ]
    commands.close(grace=0)
    assert len(recorder.with_result("dropped")) == 2 + QUEUE_MAX  # none silently
    assert [f["why"] for f in recorder.with_result("dropped")[2:]] == ["guard-stops"] * QUEUE_MAX
    assert len(recorder.with_result("killed-at-stop")) == 1
    assert [f["signal"] for f in recorder.with_result("killed")] == ["SIGKILL"]
    assert not commands.running and not commands.queued


def test_a_command_past_its_timeout_is_killed_with_its_group_and_reaped(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]], tmp_path: Path
) -> None:
    child = tmp_path / "child.pid"
    script = 'sleep 600 & echo $! > "$0"; wait'  # a command with a child of its own
    commands, poller, recorder = made([SH, "-c", script, str(child)], timeout=0.5)
    started = time.monotonic()
    commands.start(env_for(), started)
    deadline = commands.next_deadline()
    assert deadline is not None and deadline == pytest.approx(started + 0.5)
    assert wait_until(lambda: child.exists() and child.read_text().strip() != ""), "no child"
    sleeper = int(child.read_text())
    drive(commands, poller)
    assert recorder.results() == ["started", "timeout", "killed"], recorder.lines
    assert recorder.with_result("timeout")[0]["timeout"] == 0.5
    assert recorder.with_result("killed")[0]["signal"] == "SIGKILL"
    assert commands.next_deadline() is None
    assert wait_until(lambda: gone(sleeper)), f"the command's child {sleeper} still runs"


def test_what_a_command_leaves_in_its_group_goes_with_it(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]], tmp_path: Path
) -> None:
    child = tmp_path / "child.pid"
    commands, poller, recorder = made([SH, "-c", 'sleep 600 & echo $! > "$0"', str(child)])
    commands.start(env_for(), time.monotonic())
    drive(commands, poller)
    assert recorder.results() == ["started", "ok"], recorder.lines
    sleeper = int(child.read_text())
    assert wait_until(lambda: gone(sleeper)), f"the command's child {sleeper} still runs"


# -- never waited on ---------------------------------------------------------------


def test_a_slow_command_never_holds_up_a_withdrawal(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]], tmp_path: Path
) -> None:
    """The guard's loop, with a stand-in for pgpool: its death is handled (and logged)
    while a command that sleeps 5 s runs, not after it."""
    done = tmp_path / "done"
    commands, poller, recorder = made([SH, "-c", 'sleep 5; echo done > "$0"', str(done)])
    pgpool = subprocess.Popen(["sleep", "600"])
    pidfd = os.pidfd_open(pgpool.pid)
    poller.register(pidfd, select.POLLIN)
    try:
        commands.start(env_for(), time.monotonic())
        assert commands.running and not done.exists()  # start returned; the command runs
        os.kill(pgpool.pid, signal.SIGKILL)
        withdrawn = False
        end = time.monotonic() + BOUND
        for _ in range(10_000):
            if withdrawn and not commands.running:
                break
            assert time.monotonic() < end, recorder.lines
            deadline = commands.next_deadline()
            wait = end if deadline is None else min(deadline, end)
            for fd, _events in poller.poll(max(0.0, wait - time.monotonic()) * 1000):
                if fd == pidfd:
                    poller.unregister(pidfd)
                    recorder.log(SEVERITY_WARNING, event="withdrawal",
                                 command_running=bool(commands.running),
                                 command_done=done.exists())  # fmt: skip
                    withdrawn = True
                elif commands.owns(fd):
                    commands.reap(fd, time.monotonic())
            commands.expire(time.monotonic())
    finally:
        os.close(pidfd)
        if pgpool.poll() is None:
            os.kill(pgpool.pid, signal.SIGKILL)
        pgpool.wait(timeout=10)
    events = [str(fields.get("result", fields["event"])) for _s, fields in recorder.lines]
    assert events == ["started", "withdrawal", "ok"], recorder.lines
    withdrawal = recorder.lines[1][1]
    assert withdrawal["command_running"] is True and withdrawal["command_done"] is False
    assert done.read_text() == "done\n"


# -- close -------------------------------------------------------------------------


def test_close_lets_a_running_command_finish_within_the_grace(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]], tmp_path: Path
) -> None:
    done = tmp_path / "done"
    commands, _poller, recorder = made([SH, "-c", 'sleep 0.2; echo done > "$0"', str(done)])
    commands.start(env_for(), time.monotonic())
    commands.close(grace=BOUND)
    assert recorder.results() == ["started", "ok"], recorder.lines
    assert done.read_text() == "done\n" and not commands.running


def test_close_kills_what_outlives_the_grace_with_its_group(
    made: Callable[..., tuple[ChangeCommands, select.poll, Recorder]], tmp_path: Path
) -> None:
    child = tmp_path / "child.pid"
    commands, _poller, recorder = made([SH, "-c", 'sleep 600 & echo $! > "$0"; wait', str(child)])
    commands.start(env_for(), time.monotonic())
    assert wait_until(lambda: child.exists() and child.read_text().strip() != ""), "no child"
    sleeper = int(child.read_text())
    leader = commands.running[next(iter(commands.running))].process
    commands.close(grace=0.2)
    assert recorder.results() == ["started", "killed-at-stop", "killed"], recorder.lines
    assert leader.returncode == -signal.SIGKILL  # reaped, not left as a zombie
    assert not commands.running
    assert wait_until(lambda: gone(sleeper)), f"the command's child {sleeper} still runs"
