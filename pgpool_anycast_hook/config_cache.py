"""A compiled copy of the merged configuration, so the hot path can skip tomllib.

Importing tomllib costs about 5 ms, an eighth of a withdrawal (see the README's
performance section). The merged, already validated settings are kept with
marshal in the cache directory, keyed by the hook's version and by every
configuration file's path, inode, size and change times, and by the list of
files in conf.d/; any edit makes the key differ and the files are parsed again.

A cache is trusted only if it is owned by the user reading it and writable by
nobody else: a cache written by postgres is never used by a root run. When the
directory is missing or not writable, nothing is cached and nothing fails.
"""

import contextlib
import marshal
import os
from typing import Any

from pgpool_anycast_hook import __version__
from pgpool_anycast_hook.atomic_file import replace_file

CACHE_DIR_ENV = "PGPOOL_ANYCAST_HOOK_CACHE_DIR"
DEFAULT_CACHE_DIR = "/var/cache/pgpool-anycast-hook"


def cache_path(main_file: str) -> str:
    directory = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    name = os.path.abspath(main_file).replace("%", "%25").replace("/", "%2F")
    return os.path.join(directory, f"config{name}.marshal")


def cache_key(files: list[str]) -> tuple[Any, ...]:
    """What must not change for the cached settings to stay valid."""
    parts: list[Any] = [__version__]
    for path in files:
        info = os.stat(path)
        parts.append((path, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    return tuple(parts)


def read_cached(main_file: str, key: tuple[Any, ...]) -> dict[str, Any] | None:
    path = cache_path(main_file)
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid != os.geteuid() or info.st_mode & 0o022:
                return None
            cached = marshal.loads(handle.read())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    settings = cached.get("settings")
    return settings if isinstance(settings, dict) else None


def write_cached(main_file: str, key: tuple[Any, ...], settings: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, ValueError):  # no directory, not writable, unmarshallable
        data = marshal.dumps({"key": key, "settings": settings})
        replace_file(cache_path(main_file), data, 0o600)
