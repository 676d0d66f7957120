"""Serialize hook runs with flock(2), waiting a bounded time.

follow_primary_command runs in its own process at the same time as failback
commands, and systemd's Exec lines can overlap a pgpool-started hook, so two runs
must never interleave their read-decide-apply steps. The lock file may have been
created by root during a manual run: opening it read-only is enough for flock, so
such a file never locks out the postgres user.
"""

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pgpool_anycast_hook.errors import Busy, ConfigError

POLL_SECONDS = 0.01


def _open_lock_file(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
    except PermissionError:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise ConfigError(f"lock_file {path}: cannot open: {error.strerror}") from None
    except FileNotFoundError:
        raise ConfigError(
            f"lock_file {path}: directory {os.path.dirname(path)} does not exist "
            "(create it, writable by pgpool's user, or set lock_file)"
        ) from None
    except OSError as error:
        raise ConfigError(f"lock_file {path}: cannot open: {error.strerror}") from None
    return fd


@contextmanager
def run_lock(path: str, timeout: float) -> Iterator[float]:
    """Hold the exclusive lock for the body; yield how long the wait took."""
    fd = _open_lock_file(path)
    started = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started >= timeout:
                    raise Busy(f"another run holds {path} (waited {timeout:g} s)") from None
                time.sleep(POLL_SECONDS)
        yield time.monotonic() - started
    finally:
        os.close(fd)
