"""Configuration: defaults, conf.d merge order, and errors that name the key."""

from pathlib import Path

import pytest

from pgpool_anycast_hook.config import CONFIG_ENV, load_config
from pgpool_anycast_hook.errors import ConfigError


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
    main = write(
        tmp_path / "config.toml", 'addresses = ["198.18.2.0", "2001:db8::1", "10.1.2.3/24"]'
    )
    assert [str(a) for a in load_config(str(main)).addresses] == [
        "198.18.2.0/32",
        "2001:db8::1/128",
        "10.1.2.3/24",
    ]


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
