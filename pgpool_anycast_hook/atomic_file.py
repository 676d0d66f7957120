"""Replace a small file at once: a reader sees the old content or the new, never a part.

Used for the maintenance hold, the check's counters and the compiled configuration,
which other runs may read at any moment.
"""

import contextlib
import os


def replace_file(path: str, data: bytes, mode: int) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, rename it over."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)  # the umask may have narrowed it
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
