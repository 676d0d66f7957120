"""A hard deadline for the whole process, enforced by a thread rather than a signal.

pgpool freezes while failover_command and failback_command run, blocks the
signals the hook inherits, and has no timeout of its own. So main.py arms this
before it parses anything, with the default `deadline`; once the configuration is
read, the frame of the run (logged_run.py) sets the real total and the expiry
action (the run's one log line). When the time is up a daemon thread runs that
action and calls os._exit(), which no signal mask, blocked write or held lock in
the main thread can prevent: the action takes no lock and writes nothing that
can block (run_log.py).

The watcher is a bare `_thread` thread sleeping on a lock, not a threading.Thread
on an Event: the `threading` module's import is most of what a thread costs, and
every run, the guarded client's short one included, pays for this one.
"""

import _thread
import os
import time

from pgpool_anycast_hook.errors import ExitCode

TYPE_CHECKING = False  # mypy reads this as True; `collections` stays unloaded
if TYPE_CHECKING:
    from collections.abc import Callable

    Expiry = Callable[[], int | None]  # writes what it must; returns the exit code (None: 75)

BEFORE_CONFIG_SECONDS = 5.0  # until the configuration is read: the default of `deadline`
EXPIRY_GRACE_SECONDS = 0.5  # for the expiry action itself


def _exit_after(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(ExitCode.TEMPFAIL)


class _Deadline:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.expires_at = float("inf")
        self.on_expiry: Expiry = lambda: None
        self._wake = _thread.allocate_lock()  # held; released to wake the watcher
        self._wake.acquire()
        self._watching = False

    def arm(self, total_seconds: float, on_expiry: "Expiry | None" = None) -> None:
        """End the process `total_seconds` after it started (not after now)."""
        if on_expiry is not None:
            self.on_expiry = on_expiry
        self.expires_at = self.started + total_seconds
        if not self._watching:
            self._watching = True
            _thread.start_new_thread(self._watch, ())
        else:
            self.wake()

    def wake(self) -> None:
        """Make the watcher look at `expires_at` again (only the watcher takes the lock)."""
        if self._wake.locked():  # else it was released and not yet taken back: it will look
            self._wake.release()

    def seconds_left(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def _watch(self) -> None:
        while True:
            left = self.expires_at - time.monotonic()
            if left <= 0:
                break
            self._wake.acquire(True, -1 if left == float("inf") else left)
        # Whatever the expiry action meets, the process ends soon after.
        _thread.start_new_thread(_exit_after, (EXPIRY_GRACE_SECONDS,))
        code: int | None = None
        try:
            code = self.on_expiry()
        finally:
            os._exit(ExitCode.TEMPFAIL if code is None else code)


_DEADLINE = _Deadline()


def arm(total_seconds: float, on_expiry: "Expiry | None" = None) -> None:
    """Arm or re-arm the process's deadline, counted from process start."""
    _DEADLINE.arm(total_seconds, on_expiry)


def disarm() -> None:
    """For the long-running guard only, whose every wait is bounded on its own."""
    _DEADLINE.expires_at = float("inf")
    _DEADLINE.wake()


def seconds_left() -> float:
    """What is left of the deadline (infinite before it is armed)."""
    return _DEADLINE.seconds_left()
