"""How concurrent runs stay consistent without a withdrawal ever waiting.

Announcing runs (add, reconcile, enable, check) serialize their read-decide-apply
steps with flock(2) on the lock file, waiting a bounded time: follow_primary_command
runs concurrently with failback commands, and systemd's Exec lines can overlap a
pgpool-started hook. None of them probes pgpool while holding the lock: probes
run first, and only cheap facts (pid file, pgpool_status, hold) are read again
under it.

Withdrawing runs (del, disable, drain, and any withdrawal) take no lock at all: a
withdrawal must never wait behind a slower command. Instead each one first writes a
new random token into the withdrawal mark (`<state_dir>/withdrawn`). An announcing
run reads the mark before it observes anything and again after it added the
addresses; if the mark changed meanwhile, a withdrawal overlapped it, and it takes
its addresses back. So an overlap always ends withdrawn, whatever the interleaving.

The lock file may have been created by root during a manual run: opening it
read-only is enough for flock, so such a file never locks out the postgres user.
"""

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pgpool_anycast_hook.errors import Busy, ConfigError
from pgpool_anycast_hook.safe_files import open_lock_file, read_regular

POLL_SECONDS = 0.01
MARK_FILE = "withdrawn"
_MARK_SIZE = 64


def _open_lock_file(path: str) -> int:
    try:
        return open_lock_file(path)
    except FileNotFoundError:
        raise ConfigError(
            f"lock_file {path}: directory {os.path.dirname(path)} does not exist "
            "(create it, writable by pgpool's user, or set lock_file)"
        ) from None
    except OSError as error:
        raise ConfigError(f"lock_file {path}: cannot open: {error.strerror}") from None


@contextmanager
def run_lock(path: str, timeout: float) -> Iterator[float]:
    """Hold the exclusive lock for the body; yield how long the wait took."""
    fd = _open_lock_file(path)
    started = time.monotonic()
    try:
        for _ in range(int(timeout / POLL_SECONDS) + 2):  # bounded in count and in time
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started >= timeout:
                    raise Busy(f"another run holds {path} (waited {timeout:g} s)") from None
                time.sleep(POLL_SECONDS)
        else:
            raise Busy(f"another run holds {path} (waited {timeout:g} s)")
        yield time.monotonic() - started
    finally:
        os.close(fd)


def withdrawal_mark(state_dir: str) -> bytes:
    """The current mark ('' when none was written, or it cannot be read)."""
    try:
        return read_regular(os.path.join(state_dir, MARK_FILE), _MARK_SIZE)
    except OSError:
        return b""


def mark_withdrawal(state_dir: str) -> bool:
    """Write a new token into the mark; False if it cannot be written.

    The name lies in a directory postgres can write, so a file is written in place
    only if it is a regular file of ours with a single link (nothing planted can be
    written through); anything else at the name is unlinked and the file made anew.
    """
    path = os.path.join(state_dir, MARK_FILE)
    token = os.urandom(16).hex().encode() + b"\n"
    for _ in range(2):
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644
            )
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.ELOOP, errno.ENXIO, errno.EPERM):
                return False
        else:
            try:
                info = os.fstat(fd)
                if (
                    stat.S_ISREG(info.st_mode)
                    and info.st_uid == os.geteuid()
                    and info.st_nlink == 1
                ):
                    return os.pwrite(fd, token, 0) == len(token)
            except OSError:
                return False
            finally:
                os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            return False
    return False
