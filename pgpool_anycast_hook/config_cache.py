"""A compiled copy of the merged configuration, so the hot path can skip tomllib.

Importing and running tomllib is a measurable part of a withdrawal (see the
README's performance section). The merged, already validated settings are kept
with marshal in the cache directory, keyed by the hook's version and by every
configuration file's path, inode, size and change times (a chmod or chown changes
the ctime too), and by the list of files in conf.d/; any edit makes the key differ
and the files are parsed again.

The cache carries configuration, so it follows config_trust.py's rule strictly:
only root writes it, and every run, root's or postgres's, uses it only if the file
is root's, not writable by group or others, in a directory chain only root can
change. The package makes /var/cache/pgpool-anycast-hook root's (0755); root's
runs (`check-config` after an edit, the package's postinst, any root command)
refresh it, and other runs parse the files themselves when it is stale. When the
directory is missing or untrusted, nothing is cached and nothing fails.
"""

import contextlib
import marshal
import os
from typing import Any

from pgpool_anycast_hook import __version__
from pgpool_anycast_hook.errors import ConfigError

CACHE_DIR_ENV = "PGPOOL_ANYCAST_HOOK_CACHE_DIR"
DEFAULT_CACHE_DIR = "/var/cache/pgpool-anycast-hook"
MAX_CACHE_BYTES = 1 << 20
ROOT_ONLY = frozenset({0})


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


def _trusted(path: str) -> bool:
    from pgpool_anycast_hook.config_trust import check_trusted

    try:
        check_trusted(path, ROOT_ONLY, "configuration cache")
    except ConfigError:
        return False
    return True


def read_cached(main_file: str, key: tuple[Any, ...]) -> dict[str, Any] | None:
    from pgpool_anycast_hook.safe_files import read_regular

    path = cache_path(main_file)
    if not os.path.lexists(path) or not _trusted(path):
        return None
    try:
        cached = marshal.loads(read_regular(path, MAX_CACHE_BYTES))
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    settings = cached.get("settings")
    return settings if isinstance(settings, dict) else None


def write_cached(main_file: str, key: tuple[Any, ...], settings: dict[str, Any]) -> None:
    """Root only, into a directory only root can change."""
    path = cache_path(main_file)
    if os.geteuid() != 0 or not _trusted(os.path.dirname(path)):
        return
    from pgpool_anycast_hook.safe_files import replace_file

    with contextlib.suppress(OSError, ValueError):  # read-only, full, unmarshallable
        replace_file(path, marshal.dumps({"key": key, "settings": settings}), 0o644)
