"""Configuration: defaults, conf.d merge order, and errors that name the key."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pgpool_anycast_hook.config import CONFIG_ENV, Config, check_merged, load_config, validate
from pgpool_anycast_hook.config_cache import CACHE_DIR_ENV
from pgpool_anycast_hook.errors import ConfigError


@pytest.fixture(autouse=True)
def no_config_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse every time, and leave nothing in the system's cache directory."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "no-cache"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_when_the_main_file_is_empty(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path / "config.toml", "")))
    assert config.interface == "lo" and config.addresses == () and config.primary_node_id == 0
    assert config.lock_path == "/var/lib/pgpool-anycast-hook/lock"


def test_conf_d_merges_in_lexical_order(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'addresses = ["198.18.2.0"]\nprimary_node_id = 1\n')
    write(tmp_path / "conf.d" / "20-b.toml", "primary_node_id = 3\n")
    write(tmp_path / "conf.d" / "10-a.toml", 'primary_node_id = 2\ninterface = "veth0"\n')
    write(tmp_path / "conf.d" / "ignored.conf", "primary_node_id = 9\n")
    config = load_config(str(main))
    assert config.primary_node_id == 3 and config.interface == "veth0"
    assert [str(a) for a in config.addresses] == ["198.18.2.0/32"]
    assert [Path(s).name for s in config.sources] == ["config.toml", "10-a.toml", "20-b.toml"]


def test_missing_prefix_means_host_route(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'addresses = ["198.18.2.0", " 2001:db8::1 "]')
    assert [str(a) for a in load_config(str(main)).addresses] == [
        "198.18.2.0/32",
        "2001:db8::1/128",
    ]


def merged(settings: dict[str, Any]) -> dict[str, Any]:
    typed = validate(settings, "/merged")
    check_merged(typed, "/merged")
    return typed


def test_wide_prefixes_only_when_allowed_and_never_wider_than_24_or_64() -> None:
    wide = ["10.1.2.3/24", "198.18.2.0/31", "2001:db8::/64", "2001:db8::1/127"]
    for address in wide:
        with pytest.raises(ConfigError, match=r"^/merged: addresses .* allow_wide_prefixes = true"):
            merged({"addresses": [address]})
    typed = merged({"addresses": wide, "allow_wide_prefixes": True})
    assert [str(a) for a in typed["addresses"]] == wide
    for address in ["10.1.0.0/23", "2001:db8::/63", "10.0.0.0/8"]:
        with pytest.raises(ConfigError, match="wider than"):
            merged({"addresses": [address], "allow_wide_prefixes": True})
    assert merged({"addresses": ["198.18.2.0/32", "2001:db8::1/128"]})["addresses"]


def test_allow_wide_prefixes_may_come_from_another_file(tmp_path: Path) -> None:
    """validate() sees one file at a time: the prefix is checked on the merged result."""
    first = validate({"addresses": ["10.1.2.3/24"]}, "/a.toml")
    second = validate({"allow_wide_prefixes": True}, "/conf.d/b.toml")
    check_merged({**first, **second}, "/a.toml")
    assert Config(**{**first, **second}).allow_wide_prefixes is True
    assert Config().allow_wide_prefixes is False


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1/8", '"127.0.0.1/8" is a loopback address'),
        ("127.3.4.5", "is a loopback address"),
        ("::1", "is a loopback address"),
        ("0.0.0.0", "is the unspecified address"),
        ("::", "is the unspecified address"),
        ("0.0.0.1/24", "covers the unspecified address"),
        ("224.0.0.5", "is a multicast address"),
        ("ff02::1", "is a multicast address"),
        ("169.254.1.1", "is a link-local address"),
        ("fe80::1", "is a link-local address"),
        ("fe80::1%lo", "has a scope id"),
        ("2001:db8::1%eth0", "has a scope id"),
        ("::ffff:198.18.2.1", "is an IPv4-mapped IPv6 address"),
        ("255.255.255.255", "is the IPv4 limited broadcast address"),
        ("198.18.2.300", "is not an IPv4 or IPv6 address"),
        ("198.18.2.1/33", "is not an IPv4 or IPv6 address"),
        ("198.18.2.1\\u0000", "is not an IPv4 or IPv6 address"),  # a TOML escape
        ("1" * 5000, "is not an IPv4 or IPv6 address"),
    ],
)
def test_refused_addresses_name_the_entry_and_why(tmp_path: Path, address: str, why: str) -> None:
    main = write(tmp_path / "config.toml", f'addresses = ["198.18.2.9", "{address}"]')
    with pytest.raises(ConfigError, match=re.escape(why)) as error:
        load_config(str(main))
    assert str(error.value).startswith(f"{main}: addresses ")
    assert len(str(error.value)) < 300


@pytest.mark.parametrize(
    "addresses",
    [
        ["198.18.2.0", "198.18.2.0/32"],
        ["198.18.2.1/32", "198.18.2.1/24"],
        ["2001:db8::1", "2001:DB8:0::1"],
        ["2001:db8::1/128", "2001:db8::1/64"],
    ],
)
def test_an_address_listed_twice_is_refused(addresses: list[str]) -> None:
    with pytest.raises(ConfigError, match="is listed twice"):
        validate({"addresses": addresses}, "/x.toml")


@pytest.mark.parametrize(
    "settings, why",
    [
        ({"state_dir": "/var/lib/x\0y"}, "state_dir must not contain a NUL"),
        ({"syslog_facility": "daemon\0"}, "syslog_facility must not contain a NUL"),
        ({"interface": "lo\0"}, "interface must not contain a NUL"),
        ({"pgpool_conf": "/" + "a" * 5000}, "pgpool_conf must be at most 4096"),
        ({"interface": "lo:1"}, "interface must be a Linux interface name"),
        ({"interface": ".."}, "interface must be a Linux interface name"),
        ({"interface": "\u00e9" * 8}, "interface must be a Linux interface name"),
        ({"interface": "eth\x7f"}, "interface must be a Linux interface name"),
        ({"addresses": [["198.18.2.1"]]}, "addresses entry 1 is not a string"),
        ({"addresses": ["198.18.2.1"] * 65}, "at most 64"),
        ({"allow_wide_prefixes": "yes"}, "allow_wide_prefixes must be true or false"),
        ({"lock_timeout": float("nan")}, "lock_timeout must be between"),
        ({"deadline": float("inf")}, "deadline must be between"),
        ({"primary_node_id": 10**5000}, "primary_node_id must be an integer"),
        ({"x" * 5000: 1}, "unknown key"),
    ],
)
def test_hostile_values_are_config_errors(settings: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(why)) as error:
        validate(settings, "/x.toml")
    assert len(str(error.value)) < 300


def test_interface_names_the_kernel_takes() -> None:
    for name in ("lo", "eth0", "veth-a.10", "x" * 15, "\u00e9" * 7):
        assert validate({"interface": name}, "/x.toml") == {"interface": name}


@pytest.mark.parametrize(
    "text, key",
    [
        ("adresses = []", "adresses"),
        ('addresses = ["198.18.2.300"]', "addresses"),
        ('addresses = "198.18.2.0"', "addresses"),
        ('addresses = ["198.18.2.0", "198.18.2.0/32"]', "addresses"),
        ("primary_node_id = 128", "primary_node_id"),
        ("primary_node_id = true", "primary_node_id"),
        ('interface = "a-very-long-ifname0"', "interface"),
        ('syslog_facility = "local9"', "syslog_facility"),
        ('state_dir = "relative/dir"', "state_dir"),
        ("deadline = 0", "deadline"),
        ("lock_timeout = -1", "lock_timeout"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    main = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError, match=key) as error:
        load_config(str(main))
    assert str(main) in str(error.value)


def test_syntax_error_and_missing_named_file(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", "addresses = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(main))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "absent.toml"))


def test_environment_variable_picks_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = write(tmp_path / "other.toml", "primary_node_id = 5")
    monkeypatch.setenv(CONFIG_ENV, str(main))
    assert load_config().primary_node_id == 5


def test_pgpool_view_keys(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.toml",
        'mode = "guarded"\nprimary_node_id = "auto"\nannounce_when = "any-backend"\n'
        'pgpool_user = "anycast"\non_change = ["/usr/local/bin/notify", "--site", "a"]\n',
    )
    config = load_config(str(main))
    assert config.primary_node_id is None and config.announce_when == "any-backend"
    assert config.pgpool_user == "anycast"
    assert config.on_change == ("/usr/local/bin/notify", "--site", "a")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('primary_node_id = "auto"', 'needs mode = "guarded"'),
        ('announce_when = "any-backend"', 'needs mode = "guarded"'),
        ('mode = "guarded"\nannounce_when = "reads"', "announce_when must be one of"),
        ('mode = "guarded"\nprimary_node_id = "first"', 'or "auto"'),
        ("query_pool_nodes = true\npool_nodes_timeout = 0.5", "must be below interval"),
        ('on_change = ["notify"]', "absolute path"),
        ('on_change = "/bin/true"', "on_change must be a list"),
        ('pgpool_user = "a b"', "pgpool_user must be at most 63"),
        ('pgpool_database = "x\'y"', "pgpool_database must be"),
        ("pool_nodes_misses = 0", "pool_nodes_misses must be an integer"),
    ],
)
def test_pgpool_view_keys_refused(tmp_path: Path, text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(why)):
        load_config(str(write(tmp_path / "config.toml", text + "\n")))


@pytest.mark.parametrize("primary", ['"auto"', "3"])
def test_check_config_prints_what_a_user_can_paste_back(tmp_path: Path, primary: str) -> None:
    """check-config's TOML, read again, is the same configuration (keys it cannot know aside)."""
    import tomllib

    from pgpool_anycast_hook.config_report import config_report

    main = write(tmp_path / "config.toml", f'mode = "guarded"\nprimary_node_id = {primary}\n'
                 'addresses = ["198.18.2.0/32"]\non_change = ["/bin/true", "a b"]\n')  # fmt: skip
    config = load_config(str(main))
    printed = tomllib.loads(config_report(config, str(main)))
    again = write(tmp_path / "again" / "config.toml", "")
    again.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in printed.items()))
    assert load_config(str(again))._replace(sources=()) == config._replace(sources=())


# -- serve = "postgresql" ------------------------------------------------------------------


def test_postgresql_keys(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.toml",
        'mode = "guarded"\nserve = "postgresql"\npostgresql_socket_dir = "/run/pg"\n'
        'postgresql_port = 5433\npostgresql_user = "anycast"\npostgresql_database = "db"\n'
        'postgresql_passfile = "/etc/x/pgpass"\npostgresql_timeout = 0.2\n'
        "postgresql_misses = 6\n",
    )
    config = load_config(str(main))
    assert config.serve == "postgresql" and config.postgresql_socket_dir == "/run/pg"
    assert config.postgresql_port == 5433 and config.postgresql_user == "anycast"
    assert config.postgresql_database == "db" and config.postgresql_passfile == "/etc/x/pgpass"
    assert config.postgresql_timeout == 0.2 and config.postgresql_misses == 6
    assert load_config(str(write(tmp_path / "d" / "config.toml", ""))).serve == "pgpool"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('serve = "postgresql"', 'serve = "postgresql" needs mode = "guarded"'),
        ('serve = "postgres"', "serve must be one of pgpool, postgresql"),
        ('mode = "guarded"\nserve = "postgresql"\npostgresql_timeout = 0.5',
         "postgresql_timeout 0.5 must be below interval 0.5"),
        ('mode = "guarded"\nserve = "postgresql"\nprimary_node_id = "auto"',
         'serve = "postgresql" follows no pgpool'),
        ('mode = "guarded"\nserve = "postgresql"\nquery_pool_nodes = true',
         'serve = "postgresql" follows no pgpool'),
        ("postgresql_port = 0", "postgresql_port must be a port number"),
        ("postgresql_port = true", "postgresql_port must be a port number"),
        ('postgresql_socket_dir = "run"', "postgresql_socket_dir must be an absolute path"),
        ('postgresql_socket_dir = ""', "postgresql_socket_dir must not be empty"),
        ('postgresql_user = "a b"', "postgresql_user must be at most 63"),
        ("postgresql_misses = 0", "postgresql_misses must be an integer"),
        ("postgresql_timeout = 0", "postgresql_timeout must be between"),
    ],
)  # fmt: skip
def test_postgresql_keys_refused(tmp_path: Path, text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(why)):
        load_config(str(write(tmp_path / "config.toml", text + "\n")))


def test_the_postgresql_keys_are_one_block() -> None:
    """Kept together in Config (and in config.toml and the man page), for merges."""
    fields = list(Config._fields)
    block = [name for name in fields if name == "serve" or name.startswith("postgresql_")]
    start = fields.index("serve")
    assert fields[start : start + len(block)] == block


def test_every_key_is_documented_and_the_postgresql_block_stays_one() -> None:
    """conf.d/config.toml shows every key with its default, the man page names it, and
    serve's keys sit together in both, in Config's order (one block to merge around)."""
    repo = Path(__file__).resolve().parents[2]
    shipped = (repo / "conf.d" / "config.toml").read_text().splitlines()
    manual = (repo / "packaging" / "man" / "pgpool-anycast-hook.8").read_text()
    keys = [name for name in Config._fields if name != "sources"]
    shown = [line[1:].split(" =")[0] for line in shipped if re.match(r"#[a-z_]+ = ", line)]
    assert sorted(shown) == sorted(keys)
    for key in keys:
        assert f".B {key} =" in manual, key
    block = [k for k in keys if k == "serve" or k.startswith("postgresql_")]
    start = shown.index("serve")
    assert shown[start : start + len(block)] == block
    named = re.findall(r"^\.B (\w+) =", manual, flags=re.MULTILINE)
    start = named.index("serve")
    assert named[start : start + len(block)] == block
