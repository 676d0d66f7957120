"""A hard deadline for the whole process, enforced by a thread rather than a signal.

pgpool freezes while failover_command and failback_command run, blocks the
signals the hook inherits, and has no timeout of its own. So main.py arms this
before it parses anything, with the default `deadline`; once the configuration is
read, the frame of the run (logged_run.py) sets the real total and the expiry
action (the run's one log line). When the time is up a daemon thread runs that
action and calls os._exit(), which no signal mask, blocked write or held lock in
the main thread can prevent: the action takes no lock and writes nothing that
can block (run_log.py).
"""

import os
import threading
import time
from collections.abc import Callable

from pgpool_anycast_hook.errors import ExitCode

BEFORE_CONFIG_SECONDS = 5.0  # until the configuration is read: the default of `deadline`
EXPIRY_GRACE_SECONDS = 0.5  # for the expiry action itself

Expiry = Callable[[], int | None]  # writes what it must; returns the exit code (None: 75)


class _Deadline:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.expires_at = float("inf")
        self.on_expiry: Expiry = lambda: None
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, total_seconds: float, on_expiry: Expiry | None = None) -> None:
        """End the process `total_seconds` after it started (not after now)."""
        if on_expiry is not None:
            self.on_expiry = on_expiry
        self.expires_at = self.started + total_seconds
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="deadline", daemon=True)
            self._thread.start()
        self._changed.set()

    def seconds_left(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def _watch(self) -> None:
        while True:
            self._changed.clear()
            left = self.expires_at - time.monotonic()
            if left <= 0:
                break
            self._changed.wait(None if left == float("inf") else left)
        # Whatever the expiry action meets, the process ends soon after.
        threading.Timer(EXPIRY_GRACE_SECONDS, os._exit, (int(ExitCode.TEMPFAIL),)).start()
        code: int | None = None
        try:
            code = self.on_expiry()
        finally:
            os._exit(int(ExitCode.TEMPFAIL) if code is None else code)


_DEADLINE = _Deadline()


def arm(total_seconds: float, on_expiry: Expiry | None = None) -> None:
    """Arm or re-arm the process's deadline, counted from process start."""
    _DEADLINE.arm(total_seconds, on_expiry)


def disarm() -> None:
    """For the long-running guard only, whose every wait is bounded on its own."""
    _DEADLINE.expires_at = float("inf")
    _DEADLINE._changed.set()


def seconds_left() -> float:
    """What is left of the deadline (infinite before it is armed)."""
    return _DEADLINE.seconds_left()
