"""Hostile input: whatever a file or argv holds, only the hook's own errors come out.

The hook runs with CAP_NET_ADMIN and a traceback is a failed failover, so every
reader is fed garbage here: random bytes, nesting deep enough to break a recursive
parser, integers with thousands of digits, NUL bytes, include cycles and FIFOs.
A reader may return a value or raise ConfigError (UsageError for argv), nothing
else, and never block.
"""

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgpool_anycast_hook import config_cache
from pgpool_anycast_hook.config import _VALIDATORS, Config, check_merged, load_config, validate
from pgpool_anycast_hook.errors import ConfigError, UsageError
from pgpool_anycast_hook.hook_argv import HOOK_VERBS, MAX_NODE_ID, HookArgs, parse_hook_argv
from pgpool_anycast_hook.pgpool_conf import MAX_NUM_BACKENDS, read_pgpool_conf
from pgpool_anycast_hook.pgpool_process import endpoints

KEYS = sorted(_VALIDATORS)
slow = settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def no_config_cache() -> Iterator[None]:
    """Nothing is cached (the cache directory does not exist): every run parses."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(config_cache.CACHE_DIR_ENV, "/nonexistent/pgpool-anycast-hook-cache")
        yield


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail, instead of hanging, if the body blocks (e.g. opening a FIFO)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def config_dir() -> Iterator[str]:
    """A fresh directory as load_config trusts it: root's, 0755 (tests run as root in CI)."""
    directory = tempfile.mkdtemp(prefix="hostile-")
    try:
        os.chmod(directory, 0o755)
        yield directory
    finally:
        shutil.rmtree(directory)


def write(path: str, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o644)
    return path


def load_bytes(data: bytes, conf_d: bytes | None = None) -> Config | ConfigError:
    """load_config on a main file (and a conf.d file) holding `data`."""
    with config_dir() as directory:
        main = write(os.path.join(directory, "config.toml"), data)
        if conf_d is not None:
            os.mkdir(os.path.join(directory, "conf.d"), 0o755)
            write(os.path.join(directory, "conf.d", "50-x.toml"), conf_d)
        try:
            with within(10):
                return load_config(main)
        except ConfigError as error:
            assert str(error).startswith(directory), str(error)
            return error


def assert_sane(config: Config) -> None:
    for key in KEYS:
        value = getattr(config, key)
        if isinstance(value, str):
            assert "\0" not in value and len(value) <= 4096
    assert 0 < len(config.interface.encode("utf-8", "surrogatepass")) < 16
    for address in config.addresses:
        assert not (address.is_loopback or address.is_multicast or address.is_link_local)
        assert not address.is_unspecified
    for address in config.addresses:
        widest = {4: 24, 6: 64} if config.allow_wide_prefixes else {4: 32, 6: 128}
        assert address.network.prefixlen >= widest[address.version]


# TOML fragments: the values a confused or hostile editor could write.
toml_scalars = st.one_of(
    st.integers().map(str),
    st.integers(min_value=10**20, max_value=10**400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-inf", "+inf", "1e999", "0.0", "-0.0", "true", "false"]),
    st.sampled_from(["1979-05-27", "07:32:00", "1979-05-27T07:32:00Z"]),
    st.text(max_size=30).map(lambda t: json.dumps(t, ensure_ascii=False)),  # valid TOML too
    st.sampled_from(
        [
            '"lo"',
            '"lo\\u0000"',
            '"/etc/x\\u0000y"',
            '"127.0.0.1/8"',
            '"fe80::1%lo"',
            '"198.18.2.0/24"',
            '"2001:db8::1"',
            '"::ffff:1.2.3.4"',
            '"daemon"',
            '""',
            '"/' + "a" * 5000 + '"',
            "9" * 5000,  # more digits than int() takes
            '"/var/lib/x"',
            '["198.18.2.1", "2001:db8::5"]',
            '["198.18.2.0/24"]',
            "2.5",
            "3",
            "true",
        ]
    ),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(["a", "b"]), inner), max_size=2).map(
            lambda pairs: "{" + ", ".join(f"{k} = {v}" for k, v in dict(pairs).items()) + "}"
        ),
    ),
    max_leaves=8,
)
toml_lines = st.lists(
    st.tuples(st.sampled_from([*KEYS, "adresses", "a.b", '"quoted key"']), toml_values).map(
        lambda kv: f"{kv[0]} = {kv[1]}"
    ),
    max_size=3,
    unique_by=lambda line: line.split(" = ", 1)[0],
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@slow
@given(data=st.binary(max_size=2000))
def test_random_bytes_as_a_config_file(data: bytes) -> None:
    result = load_bytes(data)
    assert isinstance(result, Config | ConfigError)
    if isinstance(result, Config):
        assert_sane(result)


@slow
@given(data=toml_lines, conf_d=st.none() | toml_lines)
def test_random_settings_as_config_files(data: bytes, conf_d: bytes | None) -> None:
    result = load_bytes(data, conf_d)
    assert isinstance(result, Config | ConfigError)
    if isinstance(result, Config):
        assert_sane(result)


# Values near each key's limits, so that most files load and the checks on a loaded
# Config run too.
edge_values = {
    "interface": ['"lo"', '"eth0"', '"' + "x" * 15 + '"', '"' + "x" * 16 + '"', '"lo:1"', '""'],
    "addresses": [
        "[]",
        '["198.18.2.1"]',
        '["198.18.2.1/24", "2001:db8::1/64"]',
        '["198.18.2.1/23"]',
        '["2001:db8::1/63"]',
        '["127.0.0.1"]',
        '["fe80::1%lo"]',
        '["198.18.2.1", "198.18.2.1/31"]',
    ],
    "allow_wide_prefixes": ["true", "false", "1"],
    "primary_node_id": ["0", "127", "128", "-1"],
    "lock_timeout": ["0", "60", "60.000001", "nan"],
    "deadline": ["0.1", "0.09", "inf"],
    "check_rise": ["1", "100", "101", "0"],
    "syslog_facility": ['"local7"', '"local8"'],
    "state_dir": ['"/var/lib/x"', '"var/lib/x"', '"/var/lib/x\\u0000"'],
    "lock_file": ['""', '"/run/lock"'],
}
edge_files = st.dictionaries(
    st.sampled_from(sorted(edge_values)), st.integers(0, 7), max_size=4
).map(
    lambda chosen: "\n".join(
        f"{key} = {edge_values[key][i % len(edge_values[key])]}" for key, i in chosen.items()
    ).encode()
)


@slow
@given(data=edge_files, conf_d=st.none() | edge_files)
def test_settings_at_their_limits(data: bytes, conf_d: bytes | None) -> None:
    result = load_bytes(data, conf_d)
    assert isinstance(result, Config | ConfigError)
    if isinstance(result, Config):
        assert_sane(result)


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 100000,
        "a = " + "[" * 100000 + "]" * 100000,
        "addresses = " + "[" * 900 + "]" * 900,
        "a = " + "{b = " * 20000 + "1" + "}" * 20000,
        "a" + ".a" * 1000 + " = 1",  # tomllib's memory grows with the square of the parts
        "a" + ".a" * 100000 + " = 1",  # refused before tomllib sees it
        "primary_node_id = " + "9" * 5000,
        "primary_node_id = 0x" + "f" * 5000,
        "lock_timeout = 1e999",
        "deadline = nan",
        'state_dir = "/var/lib/x\\u0000"',
        'interface = "lo\\u0000"',
        'addresses = ["198.18.2.1\\u0000"]',
        'addresses = ["' + "1" * 100000 + '"]',
        "addresses = [" + ", ".join(['"198.18.2.1"'] * 10000) + "]",
        '"\\u0000" = 1',
        "a = '''" + "x" * (1 << 20) + "'''",  # more than the reader reads
    ],
)
def test_pathological_config_files(text: str) -> None:
    result = load_bytes(text.encode())
    assert isinstance(result, ConfigError)
    assert len(str(result)) < 1000


def test_a_fifo_in_conf_d_never_blocks() -> None:
    with config_dir() as directory:
        main = write(os.path.join(directory, "config.toml"), b"")
        os.mkdir(os.path.join(directory, "conf.d"), 0o755)
        os.mkfifo(os.path.join(directory, "conf.d", "10-fifo.toml"), 0o644)
        with within(10), pytest.raises(ConfigError, match=r"10-fifo\.toml"):
            load_config(main)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["\0", "lo\0", "/x\0", "127.0.0.1", "fe80::1%lo", "10.0.0.1/8", "::/0"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


@settings(max_examples=500)
@given(raw=st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_like, max_size=6))
def test_validate_any_value_of_any_key(raw: dict[str, Any]) -> None:
    try:
        typed = validate(raw, "/x.toml")
        check_merged(typed, "/x.toml")
    except ConfigError as error:
        assert str(error).startswith("/x.toml: ") and len(str(error)) < 1000
        return
    config = Config(**typed)
    assert_sane(config)
    for address in config.addresses:
        prefix = address.network.prefixlen
        widest = {4: 24, 6: 64}[address.version]
        host = {4: 32, 6: 128}[address.version]
        assert prefix >= (widest if config.allow_wide_prefixes else host)


# pgpool.conf: lines pgpool would read, with values chosen to hurt.
pgpool_names = st.sampled_from(
    [
        "port",
        "pcp_port",
        "include",
        "socket_dir",
        "unix_socket_directories",
        "listen_addresses",
        "logdir",
        "work_dir",
        "pid_file_name",
        "backend_port0",
        "backend_port127",
        "backend_port128",
        "backend_port" + "9" * 5000,
        "backend_port\u0663",
        "PORT",
    ]
)
pgpool_values = st.one_of(
    st.sampled_from(
        [
            "'a.conf'",
            "'b.conf'",
            "'pgpool.conf'",
            "'fifo.conf'",
            "'missing.conf'",
            "''",
            "'.'",
            "'/dev/zero'",
            "'/dev/stdin'",
            "9" * 5000,
            "70000",
            "0x1538",
            "-1",
            "0",
            "5432",
            "'*'",
            "'::'",
            "'db.example.com'",
            "'/run/a,/run/b'",
            "'x\0y'",
            "'unterminated",
            "'it''s'",
        ]
    ),
    st.text(max_size=20),
)
pgpool_text = st.lists(
    st.tuples(pgpool_names, st.sampled_from([" = ", "=", " "]), pgpool_values).map("".join),
    max_size=8,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


def read_pgpool_dir(files: dict[str, bytes]) -> None:
    """read_pgpool_conf on pgpool.conf among `files` and a FIFO; settings or ConfigError."""
    with config_dir() as directory:
        os.mkfifo(os.path.join(directory, "fifo.conf"))
        for name, data in files.items():
            write(os.path.join(directory, name), data)
        try:
            with within(10):
                found = read_pgpool_conf(os.path.join(directory, "pgpool.conf"))
        except ConfigError as error:
            assert len(str(error)) < 2000
            return
    assert 1 <= found.port <= 65535 and 1 <= found.pcp_port <= 65535
    assert 0 <= found.num_backends <= MAX_NUM_BACKENDS
    for endpoint in endpoints(found):
        text = endpoint.address if isinstance(endpoint.address, str) else endpoint.address[0]
        assert "\0" not in text


@slow
@given(data=st.binary(max_size=3000))
def test_random_bytes_as_pgpool_conf(data: bytes) -> None:
    read_pgpool_dir({"pgpool.conf": data})


@slow
@given(main=pgpool_text, a=pgpool_text, b=pgpool_text)
def test_random_pgpool_conf_with_includes(main: bytes, a: bytes, b: bytes) -> None:
    read_pgpool_dir({"pgpool.conf": main, "a.conf": a, "b.conf": b})


@pytest.mark.parametrize(
    "files",
    [
        {"pgpool.conf": b"include = 'pgpool.conf'\n"},
        {"pgpool.conf": b"include = 'a.conf'\n", "a.conf": b"include = 'pgpool.conf'\n"},
        {"pgpool.conf": b"include = 'a.conf'\n", "a.conf": b"include = '../" + b"x/.." * 50},
        {"pgpool.conf": b"include = 'fifo.conf'\n"},
        {"pgpool.conf": b"include = '/dev/zero'\n"},
        {"pgpool.conf": b"port = " + b"9" * 5000 + b"\n"},
        {"pgpool.conf": b"include = 'a.conf'\n" * 200, "a.conf": b"port = 5433\n"},
    ],
)
def test_pgpool_conf_cycles_fifos_and_huge_numbers_are_config_errors(
    files: dict[str, bytes],
) -> None:
    with pytest.raises(ConfigError), config_dir() as directory:
        os.mkfifo(os.path.join(directory, "fifo.conf"))
        for name, data in files.items():
            write(os.path.join(directory, name), data)
        with within(10):
            read_pgpool_conf(os.path.join(directory, "pgpool.conf"))


def test_pgpool_conf_itself_a_fifo_never_blocks() -> None:
    with config_dir() as directory:
        os.mkfifo(os.path.join(directory, "pgpool.conf"))
        with within(10), pytest.raises(ConfigError, match="not a regular file"):
            read_pgpool_conf(os.path.join(directory, "pgpool.conf"))


argv_words = st.one_of(
    st.sampled_from(
        [
            *HOOK_VERBS,
            "status",
            "--config",
            "--config=",
            "--config=/c.toml",
            "/c.toml",
            "--dry-run",
            "--wait-ready",
            "--wait-ready=",
            "--wait-ready=1e999",
            "nan",
            "inf",
            "--help",
            "-h",
            "--version",
            "--",
            "-",
            "0",
            " 1 ",
            "-1",
            "127",
            "128",
            "9" * 5000,
            "-" + "9" * 5000,
            "",
            " ",
            "\0",
            "1\0",
            "\u0663",
            "1_0",
        ]
    ),
    st.text(max_size=10),
    st.text(alphabet="0123456789 -.", max_size=30),
)


@settings(max_examples=1000)
@given(argv=st.lists(argv_words, max_size=8))
def test_any_argv_parses_or_is_a_usage_error(argv: list[str]) -> None:
    try:
        parsed = parse_hook_argv(argv)
    except UsageError as error:
        assert len(str(error)) < 300
        return
    if isinstance(parsed, HookArgs):
        assert parsed.verb in HOOK_VERBS and 0 <= parsed.node <= MAX_NODE_ID
        assert parsed.old_primary is None or -1 <= parsed.old_primary <= MAX_NODE_ID
        assert 0 <= parsed.wait_ready <= 600
        assert parsed.config_path != ""
    else:
        assert parsed is None or parsed in HOOK_VERBS
