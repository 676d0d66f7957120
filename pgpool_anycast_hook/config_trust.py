"""Configuration is read only from files that nobody less privileged can change.

The hook's configuration says which addresses a run with CAP_NET_ADMIN adds, and
with `redistribute connected` an added address is announced to the whole network.
If anything running as postgres (a cron job, a local PostgreSQL's `COPY ... TO
PROGRAM`) could change what a privileged run reads, it could hijack traffic. So a
privileged run (root, or any user holding CAP_NET_ADMIN) reads configuration only
from files owned by root, and only through directories owned by root: every
component of the path, symbolic links and their targets included, is checked, and
no directory on the way may be writable by group or others unless it is sticky
(like /tmp, where only an entry's owner can replace it, and the entry must be
root's). Files must not be writable by group or others either.

An unprivileged run (no CAP_NET_ADMIN) cannot change anything, so it may also read
files of its own user, e.g. a test configuration.
"""

import os
import stat

from pgpool_anycast_hook.errors import ConfigError

CAP_NET_ADMIN = 12
_MAX_LINKS = 40


def has_net_admin() -> bool:
    """Does this process hold CAP_NET_ADMIN in its effective set?"""
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def trusted_owners() -> frozenset[int]:
    """Whose files may configure this run: root's, plus our own when unprivileged."""
    euid = os.geteuid()
    if euid == 0 or has_net_admin():
        return frozenset({0})
    return frozenset({0, euid})


def _why_untrusted(info: os.stat_result, owners: frozenset[int], is_dir: bool) -> str | None:
    if info.st_uid not in owners:
        names = " or ".join("root" if uid == 0 else f"uid {uid}" for uid in sorted(owners))
        return f"is owned by uid {info.st_uid}, not {names}"
    if stat.S_ISLNK(info.st_mode):
        return None
    if info.st_mode & 0o022 and not (is_dir and info.st_mode & stat.S_ISVTX):
        return "is writable by group or others"
    return None


def check_trusted(path: str, owners: frozenset[int], kind: str = "configuration file") -> None:
    """Raise ConfigError unless every component of `path` is trusted (see the module).

    The path is walked one component at a time, as the kernel resolves it, so a
    symbolic link is checked where it lies and again where it points.
    """
    pending = [p for p in os.path.abspath(path).split("/") if p]
    current = "/"
    why = _why_untrusted(os.lstat(current), owners, is_dir=True)
    links = 0
    while why is None and pending:
        name = pending.pop(0)
        if name in (".", ".."):
            current = os.path.dirname(current) if name == ".." else current
            continue
        current = os.path.join(current, name)
        try:
            info = os.lstat(current)
        except OSError as error:
            raise ConfigError(f"{path}: cannot check {current}: {error.strerror}") from None
        why = _why_untrusted(info, owners, stat.S_ISDIR(info.st_mode))
        if why is not None:
            break
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                why = "has too many symbolic links"
                break
            target = os.readlink(current)
            current = "/" if target.startswith("/") else os.path.dirname(current)
            pending = [p for p in target.split("/") if p] + pending
        elif stat.S_ISDIR(info.st_mode):
            continue
        elif pending:
            why = "is not a directory"
        elif not stat.S_ISREG(info.st_mode):
            why = "is not a regular file"
    if why is not None:
        raise ConfigError(
            f"{path}: {kind} not trusted: {current} {why}; a run that can change addresses "
            "reads configuration only from root's files, through directories only root can change"
        )
