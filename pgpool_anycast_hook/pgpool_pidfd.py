"""Find pgpool's main process and hold a pidfd on it, without a PID-reuse race.

A pidfd becomes readable the moment its process exits, so the guard can withdraw
before systemd even starts the unit's stop sequence. The pid comes from pgpool's
pid file when the guard may read it (it is pgpool's user's, mode 0600), else from
/proc: the process named `pgpool` whose parent is not a pgpool, run by pgpool's
user, in the guard's network namespace (when the guard may see which one that
is). The race: between learning a pid and opening its pidfd the process may
exit and the pid be reused. So the pidfd is opened first and the process checked
afterwards, through /proc, and then the pidfd is asked (a null signal, and poll:
a zombie answers the signal but its pidfd is readable) whether its process still
lives: if it does, the /proc check saw that same process.
"""

import os
import select
import signal

from pgpool_anycast_hook.pgpool_process import read_pid_file

PGPOOL = "pgpool"


def _stat(pid: int) -> tuple[str, int] | None:
    """(comm, ppid) of a process, from /proc/<pid>/stat; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read(1024)
    except OSError:
        return None
    head, _, tail = data.rpartition(b")")
    fields = tail.split()
    if b"(" not in head or len(fields) < 2:
        return None
    return head.split(b"(", 1)[1].decode(errors="replace"), int(fields[1])


def is_main_pgpool(pid: int, uid: int | None) -> bool:
    """Is `pid` a pgpool whose parent is not a pgpool (and, given `uid`, run by it)?"""
    seen = _stat(pid)
    if seen is None or seen[0] != PGPOOL:
        return False
    parent = _stat(seen[1])
    if parent is not None and parent[0] == PGPOOL:
        return False
    if uid is None:
        return True
    try:
        return os.stat(f"/proc/{pid}").st_uid == uid
    except OSError:
        return False


def find_main_pid(pid_file: str, uid: int | None) -> int | None:
    """pgpool's main pid: from its pid file if readable, else by looking through /proc."""
    pid = read_pid_file(pid_file)
    if pid is not None and is_main_pgpool(pid, uid):
        return pid
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    mains = [int(n) for n in names
             if n.isdigit() and is_main_pgpool(int(n), uid) and _our_network(int(n))]  # fmt: skip
    return min(mains) if len(mains) == 1 else None  # two pgpools: not knowable which


def _our_network(pid: int) -> bool:
    """Does `pid` live in the guard's network namespace, where its addresses are?

    A pgpool of another namespace (a container's, another test's) serves other
    addresses. Reading another user's namespace link needs ptrace access, which the
    guard's own user lacks for pgpool's processes: then this cannot tell, and says yes.
    """
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
        ours = os.stat("/proc/self/ns/net")
    except PermissionError:
        return True
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def open_pidfd(pid: int, uid: int | None) -> int | None:
    """A pidfd on pgpool's main process `pid`, or None if that is not (or no longer) it."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if is_main_pgpool(pid, uid) and _alive(fd) and not _exited(fd):
        return fd
    os.close(fd)
    return None


def _exited(pidfd: int) -> bool:
    """Readable already: the process has exited (a zombie answers a null signal)."""
    ready = select.poll()
    ready.register(pidfd, select.POLLIN)
    return bool(ready.poll(0))


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except PermissionError:  # someone else's process, but it exists
        return True
    except OSError:
        return False
    return True
