"""A compiled copy of the merged configuration, so the hot path can skip tomllib.

Importing and running tomllib is a measurable part of a withdrawal (see the
README's performance section). The merged, already validated settings are kept
with marshal in the cache directory, keyed by the hook's version and by every
configuration file's path, inode, size and change times (a chmod or chown changes
the ctime too), and by the list of files in conf.d/; any edit makes the key differ
and the files are parsed again.

Next to the settings, the cache holds the few values the guarded client needs
(CLIENT_FIELDS, defaults filled in), written only for a configuration that passed
every check. With them, `add` and `del` in the guarded wiring read which files make
the configuration and check them exactly as load_config does (config_files() is
shared), but import neither config.py nor its validators: that client's whole run
is one message to the guard.

The cache carries configuration, so it follows config_trust.py's rule strictly:
only root writes it, and every run, root's or postgres's, uses it only if the file
is root's, not writable by group or others, in a directory chain only root can
change. The package makes /var/cache/pgpool-anycast-hook root's (0755); root's
runs (`check-config` after an edit, the package's postinst, any root command)
refresh it, and other runs parse the files themselves when it is stale. When the
directory is missing or untrusted, nothing is cached and nothing fails.
"""

import marshal
import os

from pgpool_anycast_hook import __version__
from pgpool_anycast_hook.config_trust import check_trusted, trusted_owners
from pgpool_anycast_hook.errors import ConfigError
from pgpool_anycast_hook.safe_files import read_regular

DEFAULT_CONFIG = "/etc/pgpool-anycast-hook/config.toml"
CONFIG_ENV = "PGPOOL_ANYCAST_HOOK_CONFIG"
CACHE_DIR_ENV = "PGPOOL_ANYCAST_HOOK_CACHE_DIR"
DEFAULT_CACHE_DIR = "/var/cache/pgpool-anycast-hook"
MAX_CACHE_BYTES = 1 << 20
ROOT_ONLY = frozenset({0})
RECORD_FORMAT = "settings+client"  # part of the key: a record of another layout is stale
# What the guarded client reads (guard_client.py), plus "facility", the syslog number.
CLIENT_FIELDS = ("mode", "guard_socket", "pgpool_conf", "syslog_address", "deadline", "serve")


def resolve_main_file(explicit: str | None) -> tuple[str, bool]:
    """Which main file to read, and whether the user asked for it by name."""
    chosen = explicit or os.environ.get(CONFIG_ENV) or ""
    if chosen:
        return chosen, True
    return DEFAULT_CONFIG, False


def config_files(main_file: str, owners: frozenset[int]) -> list[str]:
    """The main file (if present) and its sibling conf.d/*.toml, in merge order.

    Each is checked with config_trust (raises ConfigError), and so is conf.d itself:
    a directory someone else can write could gain or lose a file.
    """
    files: list[str] = []
    if os.path.lexists(main_file):
        check_trusted(main_file, owners)
        files.append(main_file)
    conf_d = os.path.join(os.path.dirname(main_file), "conf.d")
    if not os.path.lexists(conf_d):
        return files
    check_trusted(conf_d, owners, "configuration directory")
    try:
        names = sorted(n for n in os.listdir(conf_d) if n.endswith(".toml"))
    except OSError as error:
        raise ConfigError(f"{conf_d}: cannot list: {error.strerror}") from None
    for name in names:
        path = os.path.join(conf_d, name)
        check_trusted(path, owners)
        files.append(path)
    return files


def cache_path(main_file: str) -> str:
    directory = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    name = os.path.abspath(main_file).replace("%", "%25").replace("/", "%2F")
    return os.path.join(directory, f"config{name}.marshal")


def cache_key(files: list[str]) -> tuple[object, ...]:
    """What must not change for the cached settings to stay valid."""
    parts: list[object] = [__version__, RECORD_FORMAT]
    for path in files:
        info = os.stat(path)
        parts.append((path, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    return tuple(parts)


def _trusted(path: str) -> bool:
    try:
        check_trusted(path, ROOT_ONLY, "configuration cache")
    except ConfigError:
        return False
    return True


def _read_record(main_file: str, key: tuple[object, ...]) -> dict[object, object] | None:
    path = cache_path(main_file)
    if not os.path.lexists(path) or not _trusted(path):
        return None
    try:
        cached = marshal.loads(read_regular(path, MAX_CACHE_BYTES))
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    return cached


def read_cached(main_file: str, key: tuple[object, ...]) -> dict[str, object] | None:
    """The merged settings of the files `key` was made of, if cached and still valid."""
    settings = (_read_record(main_file, key) or {}).get("settings")
    return settings if isinstance(settings, dict) else None


class ClientSettings:
    """What the guarded client reads: CLIENT_FIELDS, and the syslog facility's number."""

    __slots__ = ("deadline", "facility", "guard_socket", "mode", "pgpool_conf", "serve",
                 "syslog_address")  # fmt: skip

    def __init__(self, mode: str, guard_socket: str, pgpool_conf: str, syslog_address: str,
                 deadline: float, facility: int, serve: str) -> None:  # fmt: skip
        self.mode = mode
        self.serve = serve  # "postgresql": add and del do not apply (hook.py says so)
        self.guard_socket = guard_socket
        self.pgpool_conf = pgpool_conf
        self.syslog_address = syslog_address
        self.deadline = deadline
        self.facility = facility


def read_client(explicit: str | None) -> ClientSettings | None:
    """The guarded client's CLIENT_FIELDS, or None when only load_config can tell.

    The files are found and checked as load_config finds and checks them (a file
    not trusted is the same ConfigError); only parsing and validating is left out,
    done by the run that wrote the cache.
    """
    main_file, named = resolve_main_file(explicit)
    if named and not os.path.lexists(main_file):
        return None  # load_config says so, in its words
    key = cache_key(config_files(main_file, trusted_owners()))
    client = (_read_record(main_file, key) or {}).get("client")
    if not isinstance(client, dict):
        return None
    try:
        return ClientSettings(**client)
    except TypeError:  # a record of another layout
        return None


def client_view(config: object, facility: int) -> dict[str, object]:
    """What write_cached keeps for read_client, from a configuration that passed every check."""
    return {**{name: getattr(config, name) for name in CLIENT_FIELDS}, "facility": facility}


def write_cached(
    main_file: str,
    key: tuple[object, ...],
    settings: dict[str, object],
    client: dict[str, object] | None = None,
) -> None:
    """Root only, into a directory only root can change."""
    path = cache_path(main_file)
    if os.geteuid() != 0 or not _trusted(os.path.dirname(path)):
        return
    import contextlib

    from pgpool_anycast_hook.safe_files import replace_file

    record = {"key": key, "settings": settings, "client": client}
    with contextlib.suppress(OSError, ValueError):  # read-only, full, unmarshallable
        replace_file(path, marshal.dumps(record), 0o644)
