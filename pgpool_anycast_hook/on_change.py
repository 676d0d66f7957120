"""`on_change`: a command the guard runs after each transition, which never holds it up.

Operators want to hear of a change (page someone, tell a dashboard, move a weight)
the way keepalived's `notify` or Patroni's callbacks tell them. The guard, though,
is one poll loop that must withdraw the moment pgpool dies, so nothing here waits:

- the command is started (subprocess.Popen: no shell, stdin /dev/null, stdout and
  stderr the guard's own, the journal; cwd /, only the environment below) after
  the transition is made and logged, never before; and it gets a pidfd in the
  guard's poller, so its exit is one more event of the loop (`owns`, `reap`);
- at most `max_running` run at once; more wait in a queue of QUEUE_MAX, and when
  that is full the oldest waiting one is dropped, and logged as dropped;
- each runs at most `timeout` seconds (`next_deadline`, `expire`): then its whole
  process group (start_new_session) gets SIGKILL, and its pidfd says when it is gone.
  When a command exits, what it left running in its process group is killed too,
  before it is reaped (its zombie still holds the group's id, so the signal cannot
  reach another group): a command's time is bounded, its leftovers' too;
- a command that cannot be started (missing, not executable) is logged, not raised.

Starting one costs a vfork and the command's execve (Popen waits for the exec,
not for the command; the README has the measured cost), and only on the path after
a withdrawal: the guard calls start() once the transition is made and logged.

`close()` (the guard stops) drops what waits in the queue, logged, gives what runs
CLOSE_GRACE seconds to finish (the last transition's command is usually one of
them), then kills their process groups and reaps them, within KILLED_BOUND more.
Under systemd the unit's cgroup would be killed anyway; elsewhere (a test, a shell)
nothing is left behind, and the grace is short because the guard, stopping, no
longer watches pgpool meanwhile.

Least privilege: the guard runs with CAP_NET_ADMIN in its ambient set (systemd's
AmbientCapabilities=), which would pass to every command it execs.
`drop_ambient_capabilities()`, called once at the start, clears the ambient set:
the guard keeps CAP_NET_ADMIN in its effective and permitted sets, and commands
exec without it. (It stays in the inheritable set, which gives a command nothing
unless its file carries capabilities, and the unit's NoNewPrivileges= voids those.)
Otherwise a command is the guard's: its user and groups and, under systemd, the
unit's sandbox (a read-only file system but the runtime directory, the system call
filter): a command that must write elsewhere has to ask another service to.
"""

import contextlib
import os
import select
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pgpool_anycast_hook.run_log import SEVERITY_INFO, SEVERITY_WARNING

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TEXT_MAX = 512  # characters of PAH_REASON and PAH_REASON_CODE
QUEUE_MAX = 16
CLOSE_GRACE = 2.0  # seconds running commands get to finish when the guard stops
KILLED_BOUND = 1.0  # seconds to reap the ones close() killed
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4  # <linux/prctl.h>


def _text(value: str, limit: int | None = TEXT_MAX) -> str:
    """One printable line: no NUL (execve refuses it), no newline, at most `limit` long."""
    return "".join(c if c.isprintable() else " " for c in value[:limit])


def transition_environment(
    old: str,
    new: str,
    reason: str,
    reason_code: str,
    addresses: Sequence[str],
    announced: bool,
    at: float,
) -> dict[str, str]:
    """The whole environment of the command for one transition (not the guard's):

    PATH            /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    LANG            C.UTF-8
    PAH_OLD_STATE   the phase before: ANNOUNCED, WITHDRAWN, HOLDING_DOWN or ADOPTING
    PAH_NEW_STATE   the phase now, one of the same
    PAH_REASON      why, as the guard's transition line says it: one line of
                    printable text, at most 512 characters
    PAH_REASON_CODE the same as a short code, for scripts to match on (same limits)
    PAH_ADDRESSES   the configured addresses, space-separated (198.18.2.0/32 ...)
    PAH_ANNOUNCED   1 if the addresses are announced now, else 0
    PAH_TIME        when the transition happened, unix time with milliseconds
                    (1764640000.123)
    """
    return {
        "PATH": PATH,
        "LANG": "C.UTF-8",
        "PAH_OLD_STATE": _text(old),
        "PAH_NEW_STATE": _text(new),
        "PAH_REASON": _text(reason),
        "PAH_REASON_CODE": _text(reason_code),
        "PAH_ADDRESSES": _text(" ".join(addresses), None),
        "PAH_ANNOUNCED": "1" if announced else "0",
        "PAH_TIME": f"{at:.3f}",
    }


def drop_ambient_capabilities() -> bool:
    """Clear this process's ambient capabilities; False if the kernel has none to clear.

    Effective and permitted sets stay as they are: the guard keeps CAP_NET_ADMIN,
    and what it execs starts without it.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        arguments = (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        return bool(libc.prctl(*(ctypes.c_ulong(a) for a in arguments)) == 0)
    except (OSError, AttributeError):
        return False


def _kill_group(pgid: int) -> str:
    """SIGKILL a command's process group; the error, if one could not be sent."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # all gone already
        return ""
    except OSError as error:
        return str(error)
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal, which has no name of its own
        return str(number)


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    started: float  # the caller's clock (the guard's: time.monotonic)
    deadline: float
    killed: bool = False  # SIGKILL sent (timeout or stop): reaped when its pidfd says


class ChangeCommands:
    """The on_change commands of one guard, driven by its poll loop; nothing here waits
    except close(). `now` is always time.monotonic(). An empty argv means no command:
    start() then does nothing."""

    def __init__(
        self,
        argv: Sequence[str],
        timeout: float,
        max_running: int,
        poller: select.poll,
        log: Callable[..., None],
    ) -> None:
        if timeout <= 0 or max_running < 1:
            raise ValueError("on_change needs a positive timeout and max_running")
        self.argv = list(argv)
        self.timeout = timeout
        self.max_running = max_running
        self.poller = poller
        self.log = log
        self.running: dict[int, _Running] = {}  # by pidfd
        self.queued: deque[tuple[dict[str, str], float]] = deque()  # (env, since)

    def _log(self, severity: int, env: dict[str, str], **fields: object) -> None:
        transition = f"{env.get('PAH_OLD_STATE', '?')}->{env.get('PAH_NEW_STATE', '?')}"
        self.log(severity, event="on-change", transition=transition, **fields)

    def start(self, env: dict[str, str], now: float) -> None:
        """Run the command for one transition now, or queue it if enough run."""
        if not self.argv:
            return
        if len(self.running) < self.max_running:
            self._spawn(env, now, now)
            return
        if len(self.queued) >= QUEUE_MAX:
            dropped, since = self.queued.popleft()
            self._log(SEVERITY_WARNING, dropped, result="dropped", why="queue-full",
                      queued_ms=round((now - since) * 1000, 1))  # fmt: skip
        self.queued.append((env, now))

    def _spawn(self, env: dict[str, str], since: float, now: float) -> None:
        try:
            process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                cwd="/",
                env=env,
                close_fds=True,
                start_new_session=True,  # its own process group, for killpg
            )
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            self._log(SEVERITY_WARNING, env, result="spawn-failed", error=str(error))
            return
        try:
            fd = os.pidfd_open(process.pid)
        except OSError as error:  # out of descriptors: it cannot be watched, so it goes
            _kill_group(process.pid)
            process.poll()  # if not reaped yet, subprocess reaps it at a later Popen
            self._log(SEVERITY_WARNING, env, result="spawn-failed", error=f"pidfd: {error}")
            return
        self.poller.register(fd, select.POLLIN)
        self.running[fd] = _Running(process, env, now, now + self.timeout)
        fields: dict[str, object] = {"pid": process.pid}
        if now > since:
            fields["queued_ms"] = round((now - since) * 1000, 1)
        self._log(SEVERITY_INFO, env, result="started", **fields)

    def owns(self, fd: int) -> bool:
        return fd in self.running

    def reap(self, fd: int, now: float) -> None:
        """The pidfd `fd` is readable: log how the command ended, start a queued one."""
        entry = self.running.get(fd)
        if entry is None:
            return
        process = entry.process
        try:  # WNOWAIT: look, and leave the zombie, which keeps its group's id, to kill
            if os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return  # not exited after all: the guard asks again when the pidfd says
            _kill_group(process.pid)  # what it left running in its group
        except ChildProcessError:
            pass  # reaped by someone else: its group's id may be another's by now
        # Popen's own waitpid(WNOHANG), which cannot wait: the process has exited.
        # Not os.waitpid: Popen would later waitpid the same, perhaps reused, pid.
        if process.poll() is None:
            return
        code = process.returncode
        self.poller.unregister(fd)
        os.close(fd)
        del self.running[fd]
        fields: dict[str, object] = {
            "pid": process.pid,
            "duration_ms": round((now - entry.started) * 1000, 1),
        }
        if code == 0:
            self._log(SEVERITY_INFO, entry.env, result="ok", **fields)
        elif code > 0:
            self._log(SEVERITY_WARNING, entry.env, result="failed", exit=code, **fields)
        else:
            self._log(SEVERITY_WARNING, entry.env, result="killed", signal=_signal_name(-code),
                      **fields)  # fmt: skip
        self._start_queued(now)

    def _start_queued(self, now: float) -> None:
        while self.queued and len(self.running) < self.max_running:
            env, since = self.queued.popleft()
            self._spawn(env, since, now)

    def next_deadline(self) -> float | None:
        """When the first running command times out (the caller's clock), if any runs."""
        waiting = [e.deadline for e in self.running.values() if not e.killed]
        return min(waiting) if waiting else None

    def expire(self, now: float) -> None:
        """SIGKILL the process group of every command past its timeout."""
        for entry in self.running.values():
            if not entry.killed and now >= entry.deadline:
                self._kill(entry, "timeout", timeout=self.timeout)

    def _kill(self, entry: _Running, result: str, **fields: object) -> None:
        entry.killed = True
        error = _kill_group(entry.process.pid)  # not reaped yet: the group is still its
        if error:
            fields["error"] = error
        self._log(SEVERITY_WARNING, entry.env, result=result, pid=entry.process.pid, **fields)

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """The guard stops: drop the queue, let the running finish within `grace`,
        then kill and reap the rest (bounded); none is left without a log line."""
        while self.queued:
            env, _since = self.queued.popleft()
            self._log(SEVERITY_WARNING, env, result="dropped", why="guard-stops")
        self._wait(grace)
        for entry in list(self.running.values()):
            if not entry.killed:
                self._kill(entry, "killed-at-stop", grace=grace)
        self._wait(KILLED_BOUND)
        for fd, entry in list(self.running.items()):  # unkillable (D state): say so
            self._log(SEVERITY_WARNING, entry.env, result="left-running", pid=entry.process.pid)
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(fd)
            os.close(fd)
            del self.running[fd]

    def _wait(self, bound: float) -> None:
        """Reap what exits within `bound` seconds; bounded in time and in passes."""
        waiter = select.poll()
        for fd in self.running:
            waiter.register(fd, select.POLLIN)
        end = time.monotonic() + bound
        for _ in range(len(self.running) + 1):
            left = end - time.monotonic()
            if not self.running or left <= 0:
                return
            for fd, _events in waiter.poll(left * 1000):
                waiter.unregister(fd)
                self.reap(fd, time.monotonic())
