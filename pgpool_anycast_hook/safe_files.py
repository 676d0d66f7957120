"""Every file the hook opens in a directory that a less privileged user can write.

The state directory, pgpool's run and log directories and the pid file's directory
are writable by postgres, and root runs the hook there too (prerm, `status`,
`disable`, `reconcile` by hand). Whatever lies at a name there may have been
planted: a symbolic link to a file root should never touch, or a FIFO that blocks
an open or a read forever. So, in those directories and only through this module:

- every open uses O_NOFOLLOW (a link is refused, never followed) and O_NONBLOCK
  (a FIFO cannot block the open), and the file must then be a regular file;
- nothing is created, truncated or chmod-ed through a name: a new file is made
  with mkstemp (O_EXCL, a fresh random name), its mode set with fchmod, its data
  flushed, then renamed over the old name, and the directory is flushed;
- a file is moved aside with link() and unlink(), which never replace an existing
  name.

Errors are OSErrors; a refused link or a non-regular file is an UnsafeFile, whose
message says which.
"""

import errno
import os
import stat


class UnsafeFile(OSError):
    """A name that is a symbolic link or not a regular file: refused, never followed."""


def _refuse(path: str, what: str) -> UnsafeFile:
    return UnsafeFile(errno.EINVAL, f"{what}; refused", path)


def open_regular(
    path: str, flags: int = os.O_RDONLY, mode: int = 0o600, follow: bool = False
) -> int:
    """Open `path` without following a link or blocking on a FIFO; a regular file only.

    `follow` allows a symbolic link, for files in root's own directories (pgpool.conf).
    """
    nofollow = 0 if follow else os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | nofollow | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _refuse(path, "is a symbolic link") from None
        if error.errno == errno.ENXIO:  # a FIFO without a reader, a socket, a device
            raise _refuse(path, "is not a regular file") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(path, "is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int, follow: bool = False) -> bytes:
    """At most `limit` bytes of a regular file (see open_regular)."""
    fd = open_regular(path, follow=follow)
    try:
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_directory(directory: str) -> None:
    """Flush a directory's entries, so a rename or an unlink survives a crash."""
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str, data: bytes, mode: int) -> None:
    """Replace `path` at once with `data`: a reader sees the old content or the new.

    mkstemp creates a fresh name with O_EXCL (nothing planted can be followed),
    fchmod sets the mode on the open file (not through a name), fsync flushes the
    data, rename puts it in place (it replaces a link; it never writes through
    one), and the directory is flushed last.
    """
    import tempfile  # not on the withdrawal path, which only reads

    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, path)
    except BaseException:
        _unlink_quietly(temporary)
        raise
    fsync_directory(directory)


def _unlink_quietly(path: str) -> None:
    """Undo a half-made name; an error here must not hide the one being raised.

    contextlib is imported here, on the failure path only: reading through this
    module is on the guarded client's path (config_cache.py), which stays lean.
    """
    import contextlib

    with contextlib.suppress(OSError):
        os.unlink(path)


def move_aside(path: str, target: str) -> None:
    """Give `path` the name `target` and drop the old name; FileExistsError if taken.

    link() fails when `target` exists, where rename() would replace it, so an
    earlier set-aside file (or a planted name) is never overwritten.
    """
    os.link(path, target, follow_symlinks=False)
    try:
        os.unlink(path)
    except BaseException:
        _unlink_quietly(target)
        raise
    fsync_directory(os.path.dirname(path))


def open_lock_file(path: str) -> int:
    """An fd of the lock file for flock(): created if missing, read-only if not ours.

    A lock file created by root is not writable by postgres; read-only is enough
    for flock. The file is never written, truncated or chmod-ed.
    """
    try:
        return open_regular(path, os.O_RDWR | os.O_CREAT, 0o664)
    except PermissionError:
        return open_regular(path)
