"""The hook's configuration: one TOML file plus `conf.d/*.toml` beside it.

Files are merged key by key in this order: built-in defaults, the main file, then
every `conf.d/*.toml` in lexical order (later wins). An unknown key or a bad value
is a ConfigError that names the key and the file, so that a typo can never turn
into a silently different behaviour.
"""

import ipaddress
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from pgpool_anycast_hook.config_cache import cache_key, read_cached, write_cached
from pgpool_anycast_hook.errors import ConfigError

DEFAULT_CONFIG = "/etc/pgpool-anycast-hook/config.toml"
CONFIG_ENV = "PGPOOL_ANYCAST_HOOK_CONFIG"

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
    primary_node_id: int = 0
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
    check_timeout: float = 2.0
    check_query: bool = False
    check_rise: int = 2
    check_fall: int = 3
    serving_route: bool = False
    sources: tuple[str, ...] = ()  # files that were read, for check-config

    @property
    def lock_path(self) -> str:
        return self.lock_file or os.path.join(self.state_dir, "lock")


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
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
    if not 0 < len(text) < 16 or "/" in text or any(c.isspace() for c in text):
        raise ValueError("must be a Linux interface name (1 to 15 characters, no '/' or blanks)")
    return text


def _addresses(key: str, value: Any) -> tuple[Address, ...]:
    if not isinstance(value, list):
        raise ValueError('must be a list of addresses, e.g. ["198.18.2.0/32"]')
    parsed: list[Address] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a string")
        try:
            address = ipaddress.ip_interface(item.strip())  # no prefix: /32 or /128
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 or IPv6 address") from None
        if address in parsed:
            raise ValueError(f"{item!r} is listed twice")
        parsed.append(address)
    return tuple(parsed)


def _node_id(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 127:
        raise ValueError("must be an integer from 0 to 127")
    return value


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
    "check_timeout": _seconds(0.1, 60.0),
    "check_query": _flag,
    "check_rise": _count,
    "check_fall": _count,
    "serving_route": _flag,
}


def config_files(main_file: str) -> list[str]:
    """The main file (if present) and its sibling conf.d/*.toml, in merge order."""
    files = [main_file] if os.path.isfile(main_file) else []
    conf_d = os.path.join(os.path.dirname(main_file), "conf.d")
    try:
        names = sorted(n for n in os.listdir(conf_d) if n.endswith(".toml"))
    except OSError:
        names = []
    files.extend(p for p in (os.path.join(conf_d, n) for n in names) if os.path.isfile(p))
    return files


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib  # only when the cache (config_cache.py) cannot answer

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def validate(settings: dict[str, Any], source: str) -> dict[str, Any]:
    """Check every key of one file; return the typed values."""
    typed: dict[str, Any] = {}
    for key, value in settings.items():
        validator = _VALIDATORS.get(key)
        if validator is None:
            raise ConfigError(f"{source}: unknown key {key!r}")
        try:
            typed[key] = validator(key, value)
        except ValueError as error:
            raise ConfigError(f"{source}: {key} {error}") from None
    return typed


def resolve_main_file(explicit: str | None) -> tuple[str, bool]:
    """Which main file to read, and whether the user asked for it by name."""
    chosen = explicit or os.environ.get(CONFIG_ENV) or ""
    if chosen:
        return chosen, True
    return DEFAULT_CONFIG, False


def load_config(explicit: str | None = None) -> Config:
    """Read, merge and validate the configuration."""
    main_file, named = resolve_main_file(explicit)
    if named and not os.path.isfile(main_file):
        raise ConfigError(f"{main_file}: configuration file not found")
    files = config_files(main_file)
    key = cache_key(files)
    raw = read_cached(main_file, key)
    if raw is None:
        raw = {}
        for path in files:
            settings = _read_toml(path)
            validate(settings, path)  # errors name the file that holds the key
            raw.update(settings)
        write_cached(main_file, key, raw)
    return Config(**validate(raw, main_file), sources=tuple(files))
