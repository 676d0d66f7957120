"""The hook's configuration: one TOML file plus `conf.d/*.toml` beside it.

Files are merged key by key in this order: built-in defaults, the main file, then
every `conf.d/*.toml` in lexical order (later wins). An unknown key or a bad value
is a ConfigError that names the key and the file, so that a typo can never turn
into a silently different behaviour. Only files that nobody less privileged can
change are read (config_trust.py).
"""

import ipaddress
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from pgpool_anycast_hook import config_cache
from pgpool_anycast_hook.config_cache import (
    cache_key,
    client_view,
    config_files,
    read_cached,
    resolve_main_file,
    write_cached,
)
from pgpool_anycast_hook.config_trust import trusted_owners
from pgpool_anycast_hook.errors import ConfigError
from pgpool_anycast_hook.safe_files import read_regular

# Which files make the configuration is config_cache.py's, shared with the guarded client.
DEFAULT_CONFIG = config_cache.DEFAULT_CONFIG
CONFIG_ENV = config_cache.CONFIG_ENV
MAX_CONFIG_BYTES = 1 << 20
MAX_DOTS_PER_LINE = 1000

SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class Config(NamedTuple):
    interface: str = "lo"
    addresses: tuple[Address, ...] = ()
    allow_wide_prefixes: bool = False  # addresses may be up to /24 or /64 (check_merged)
    primary_node_id: int | None = 0  # None: "auto", the primary pgpool reports (guarded only)
    announce_when: str = "primary"  # or "any-backend" (policy.py; guarded only)
    pgpool_conf: str = "/etc/pgpool2/pgpool.conf"
    status_file: str = ""  # empty: found through pgpool.conf (work_dir or logdir)
    syslog_address: str = "/dev/log"
    syslog_facility: str = "daemon"
    state_dir: str = "/var/lib/pgpool-anycast-hook"
    lock_file: str = ""  # empty: <state_dir>/lock
    lock_timeout: float = 3.0
    deadline: float = 5.0
    drain_seconds: float = 2.0
    drain_timeout: float = 10.0
    drain_idle: float = 5.0  # drain: a client quiet this long no longer holds it (0: off)
    check_timeout: float = 2.0
    check_query: bool = False
    check_rise: int = 2
    check_fall: int = 3
    serving_route: bool = False
    mode: str = "standalone"  # or "guarded": add/del/drain are requests to the guard
    guard_socket: str = "/run/pgpool-anycast-hook/guard.sock"
    guard_clients: tuple[str, ...] = ("postgres",)  # who may send events, besides root
    interval: float = 0.5  # guard: seconds between probes and lease renewals
    lease: float = 10.0  # guard: lifetime of an announced address unless renewed
    hold_down: float = 5.0  # guard: continuous health needed to announce after a withdrawal
    query_pool_nodes: bool = False  # guard: ask SHOW POOL_NODES even when the policy does not
    pgpool_user: str = "pgpool_anycast"  # the guard's role for SHOW POOL_NODES
    pgpool_database: str = "postgres"
    pgpool_passfile: str = "/etc/pgpool-anycast-hook/pgpass"  # libpq's passfile
    pgpool_service: str = ""  # a libpq service name (pg_service.conf), if any
    pool_nodes_timeout: float = 0.25  # connect and answer, per query
    pool_nodes_misses: int = 10  # unanswered queries in a row before pgpool's view is lost
    metrics_file: str = "/run/pgpool-anycast-hook/metrics.prom"  # empty: no metrics
    on_change: tuple[str, ...] = ()  # argv run after each transition (none: empty)
    on_change_timeout: float = 10.0
    on_change_max_running: int = 2
    # `status --routing`: ask the routing daemon whether it exports the addresses (routing.py)
    routing_daemon: str = "auto"  # "frr", "bird", "none"; auto: whichever control socket exists
    routing_timeout: float = 2.0  # all of one status run's questions to the daemon together
    frr_vty_socket: str = "/run/frr"  # the directory of FRR's *.vty sockets (vtysh --vty_socket)
    bird_socket: str = "/run/bird/bird.ctl"  # BIRD's control socket (birdc -s)
    sources: tuple[str, ...] = ()  # files that were read, for check-config

    @property
    def lock_path(self) -> str:
        return self.lock_file or os.path.join(self.state_dir, "lock")

    @property
    def guard_state_path(self) -> str:
        """guard.json, beside the guard's socket: what the guard says for `status`."""
        return os.path.join(os.path.dirname(self.guard_socket), "guard.json")


MAX_STRING = 4096  # PATH_MAX
MAX_ADDRESSES = 64
_HOST_PREFIX = {4: 32, 6: 128}
_WIDEST_PREFIX = {4: 24, 6: 64}  # with allow_wide_prefixes
_REFUSED_NETWORKS = [
    (ipaddress.ip_network(network), what)
    for network, what in (
        ("127.0.0.0/8", "a loopback address"),
        ("::1/128", "a loopback address"),
        ("0.0.0.0/32", "the unspecified address"),
        ("::/128", "the unspecified address"),
        ("224.0.0.0/4", "a multicast address"),
        ("ff00::/8", "a multicast address"),
        ("169.254.0.0/16", "a link-local address"),
        ("fe80::/10", "a link-local address"),
        ("::ffff:0:0/96", "an IPv4-mapped IPv6 address"),
        ("255.255.255.255/32", "the IPv4 limited broadcast address"),
    )
]


def _show(text: str) -> str:
    """`text` in double quotes, escaped and cut short, for an error message."""
    shown = text[:60].encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{shown}"' + ("..." if len(text) > 60 else "")


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    if len(value) > MAX_STRING:
        raise ValueError(f"must be at most {MAX_STRING} characters long")
    return value


def _path(key: str, value: Any) -> str:
    text = _string(key, value)
    if text and not text.startswith("/"):
        raise ValueError("must be an absolute path")
    return text


def _required_path(key: str, value: Any) -> str:
    text = _path(key, value)
    if not text:
        raise ValueError("must not be empty")
    return text


def _interface(key: str, value: Any) -> str:
    text = _string(key, value)
    size = len(text.encode("utf-8", "surrogatepass"))
    odd = any(c in "/:" or c.isspace() or not c.isprintable() for c in text)
    if not 0 < size < 16 or odd or text in (".", ".."):
        raise ValueError(
            "must be a Linux interface name (1 to 15 bytes, no '/', ':', blanks or control "
            "characters, not '.' or '..')"
        )
    return text


def _addresses(key: str, value: Any) -> tuple[Address, ...]:
    """Each entry on its own; whether its prefix is allowed is for check_merged."""
    if not isinstance(value, list):
        raise ValueError('must be a list of addresses, e.g. ["198.18.2.0/32"]')
    if len(value) > MAX_ADDRESSES:
        raise ValueError(f"must list at most {MAX_ADDRESSES} addresses")
    parsed: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Address] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"entry {index + 1} is not a string")
        address = _address(item)
        if address.ip in parsed:
            first = parsed[address.ip]
            if first == address:
                raise ValueError(f"{_show(item)} is listed twice")
            raise ValueError(f"{_show(item)} is listed twice, as {first} and as {address}")
        parsed[address.ip] = address
    return tuple(parsed.values())


def _address(item: str) -> Address:
    """One entry of `addresses`; no prefix means /32 or /128."""
    try:
        address = ipaddress.ip_interface(item.strip()) if len(item) <= 100 else None
    except ValueError:
        address = None
    if address is None:
        raise ValueError(f"{_show(item)} is not an IPv4 or IPv6 address")
    if isinstance(address, ipaddress.IPv6Interface) and address.scope_id:
        raise ValueError(f"{_show(item)} has a scope id: the interface is set by `interface`")
    for network, what in _REFUSED_NETWORKS:
        if address.version != network.version:
            continue
        if address.ip in network:
            raise ValueError(f"{_show(item)} is {what}")
        if address.network.overlaps(network):
            raise ValueError(f"{_show(item)} covers {what}")
    return address


def _node_id(key: str, value: Any) -> int | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 127:
        raise ValueError('must be an integer from 0 to 127, or "auto"')
    return value


def _one_of(*choices: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        text = _string(key, value)
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return check


def _word(key: str, value: Any) -> str:
    """A libpq role, database or service name: printable, no blanks or quotes."""
    text = _string(key, value)
    if len(text) > 63 or any(c.isspace() or c in "'\\\"=" or not c.isprintable() for c in text):
        raise ValueError("must be at most 63 printable characters, without blanks, quotes, = or \\")
    return text


def _argv(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 64:
        raise ValueError('must be a list of at most 64 strings, e.g. ["/usr/local/bin/notify"]')
    argv = tuple(_string(key, item) for item in value)
    if argv and not argv[0].startswith("/"):
        raise ValueError("must start with an absolute path (no PATH lookup, no shell)")
    return argv


def _facility(key: str, value: Any) -> str:
    text = _string(key, value)
    if text not in SYSLOG_FACILITIES:
        raise ValueError(f"must be one of {', '.join(SYSLOG_FACILITIES)}")
    return text


def _seconds(low: float, high: float) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number of seconds")
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g} seconds")
        return float(value)

    return check


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValueError("must be an integer from 1 to 100")
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


MODES = ("standalone", "guarded")


def _mode(key: str, value: Any) -> str:
    text = _string(key, value)
    if text not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}")
    return text


def _user_names(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 16:
        raise ValueError('must be a list of at most 16 user names, e.g. ["postgres"]')
    names = tuple(_string(key, item) for item in value)
    for name in names:
        if not name or len(name) > 32 or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"{name[:40]!r} is not a user name")
    return names


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "interface": _interface,
    "addresses": _addresses,
    "primary_node_id": _node_id,
    "pgpool_conf": _required_path,
    "status_file": _path,
    "syslog_address": _required_path,
    "syslog_facility": _facility,
    "state_dir": _required_path,
    "lock_file": _path,
    "lock_timeout": _seconds(0.0, 60.0),
    "deadline": _seconds(0.1, 60.0),
    "drain_seconds": _seconds(0.0, 300.0),
    "drain_timeout": _seconds(0.0, 3600.0),
    "drain_idle": _seconds(0.0, 3600.0),
    "check_timeout": _seconds(0.1, 60.0),
    "check_query": _flag,
    "check_rise": _count,
    "check_fall": _count,
    "serving_route": _flag,
    "allow_wide_prefixes": _flag,
    "mode": _mode,
    "guard_socket": _required_path,
    "guard_clients": _user_names,
    "interval": _seconds(0.05, 10.0),
    "lease": _seconds(2.0, 3600.0),
    "hold_down": _seconds(0.0, 600.0),
    "announce_when": _one_of("primary", "any-backend"),
    "query_pool_nodes": _flag,
    "pgpool_user": _word,
    "pgpool_database": _word,
    "pgpool_passfile": _path,
    "pgpool_service": _word,
    "pool_nodes_timeout": _seconds(0.05, 10.0),
    "pool_nodes_misses": _count,
    "metrics_file": _path,
    "on_change": _argv,
    "on_change_timeout": _seconds(0.1, 3600.0),
    "on_change_max_running": _count,
    # `status --routing`
    "routing_daemon": _one_of("auto", "frr", "bird", "none"),
    "routing_timeout": _seconds(0.1, 30.0),
    "frr_vty_socket": _required_path,
    "bird_socket": _required_path,
}


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib  # only when the cache (config_cache.py) cannot answer

    try:
        text = read_regular(path, MAX_CONFIG_BYTES, follow=True).decode("utf-8")
        if any(line.count(".") > MAX_DOTS_PER_LINE for line in text.splitlines()):
            # tomllib's work grows with the square of a dotted key's parts.
            raise ConfigError(f"{path}: not valid here: a line with over {MAX_DOTS_PER_LINE} dots")
        return tomllib.loads(text)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    except ValueError as error:  # tomllib.TOMLDecodeError, and a NUL or surrogate
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def validate(settings: dict[str, Any], source: str) -> dict[str, Any]:
    """Check every key of one file; return the typed values."""
    typed: dict[str, Any] = {}
    for key, value in settings.items():
        validator = _VALIDATORS.get(key)
        if validator is None:
            raise ConfigError(f"{source}: unknown key {_show(str(key))}")
        try:
            typed[key] = validator(key, value)
        except ValueError as error:
            raise ConfigError(f"{source}: {key} {error}") from None
    return typed


def check_merged(typed: dict[str, Any], source: str) -> None:
    """Checks across keys, on the merged settings (validate() sees one file at a time).

    An address is a host address (/32, /128) unless allow_wide_prefixes is true; then
    its prefix may be as wide as /24 or /64, never wider: the kernel makes every
    address of a prefix on `lo` local, and FRR announces the whole prefix.
    """
    interval: float = typed.get("interval", Config().interval)
    lease: float = typed.get("lease", Config().lease)
    if lease < 2 * interval:
        raise ConfigError(
            f"{source}: lease {lease:g} must be at least twice interval {interval:g}, "
            "or the guard's renewals could not keep the addresses up"
        )
    defaults = Config()
    mode = typed.get("mode", defaults.mode)
    auto = "primary_node_id" in typed and typed["primary_node_id"] is None
    any_backend = typed.get("announce_when", defaults.announce_when) != "primary"
    if (auto or any_backend) and mode != "guarded":
        what = 'primary_node_id = "auto"' if auto else 'announce_when = "any-backend"'
        raise ConfigError(
            f'{source}: {what} needs mode = "guarded": only the guard asks pgpool for its '
            "view of the backends (SHOW POOL_NODES), continuously"
        )
    timeout: float = typed.get("pool_nodes_timeout", defaults.pool_nodes_timeout)
    queried = auto or any_backend or typed.get("query_pool_nodes", False)
    if queried and timeout >= interval:
        raise ConfigError(
            f"{source}: pool_nodes_timeout {timeout:g} must be below interval {interval:g}: "
            "one query per interval"
        )
    wide = typed.get("allow_wide_prefixes", False)
    for address in typed.get("addresses", ()):
        prefix = address.network.prefixlen
        if prefix < _HOST_PREFIX[address.version] and not wide:
            raise ConfigError(
                f'{source}: addresses "{address}" has a /{prefix} prefix: only '
                f"/{_HOST_PREFIX[address.version]} is allowed unless allow_wide_prefixes = true"
            )
        if prefix < _WIDEST_PREFIX[address.version]:
            raise ConfigError(
                f'{source}: addresses "{address}" has a /{prefix} prefix, wider than '
                f"/{_WIDEST_PREFIX[address.version]}, the widest allow_wide_prefixes permits"
            )


def load_config(explicit: str | None = None) -> Config:
    """Read, merge and validate the configuration, from trusted files only."""
    main_file, named = resolve_main_file(explicit)
    if named and not os.path.lexists(main_file):
        raise ConfigError(f"{main_file}: configuration file not found")
    owners = trusted_owners()
    files = config_files(main_file, owners)
    key = cache_key(files)
    raw = read_cached(main_file, key)
    fresh = raw is None
    if raw is None:
        raw = {}
        for path in files:
            settings = _read_toml(path)
            validate(settings, path)  # errors name the file that holds the key
            raw.update(settings)
    typed = validate(raw, main_file)
    check_merged(typed, main_file)
    config = Config(**typed, sources=tuple(files))
    if fresh:  # only what passed every check is cached
        facility = SYSLOG_FACILITIES[config.syslog_facility]
        write_cached(main_file, key, raw, client_view(config, facility))
    return config
