"""The compiled configuration: used only while every file is unchanged, and only if root's."""

import os
import pwd
from pathlib import Path

import pytest

from pgpool_anycast_hook import config_cache
from pgpool_anycast_hook.config import load_config
from pgpool_anycast_hook.errors import ConfigError


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    directory.mkdir()
    monkeypatch.setenv(config_cache.CACHE_DIR_ENV, str(directory))
    return directory


def test_cached_settings_follow_every_edit(tmp_path: Path, cache_dir: Path) -> None:
    main = tmp_path / "etc" / "config.toml"
    main.parent.mkdir()
    main.write_text('addresses = ["198.18.2.0"]\n')
    assert load_config(str(main)).primary_node_id == 0
    assert len(list(cache_dir.iterdir())) == 1
    assert load_config(str(main)).primary_node_id == 0  # from the cache
    main.write_text('addresses = ["198.18.2.0"]\nprimary_node_id = 2\n')
    assert load_config(str(main)).primary_node_id == 2
    (main.parent / "conf.d").mkdir()
    (main.parent / "conf.d" / "10-x.toml").write_text("primary_node_id = 3\n")
    assert load_config(str(main)).primary_node_id == 3
    (main.parent / "conf.d" / "10-x.toml").unlink()
    assert load_config(str(main)).primary_node_id == 2


def test_a_cache_anyone_else_could_write_is_ignored(tmp_path: Path, cache_dir: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text("primary_node_id = 1\n")
    key = config_cache.cache_key([str(main)])
    config_cache.write_cached(str(main), key, {"primary_node_id": 7})
    assert load_config(str(main)).primary_node_id == 7  # root's, mode 0644: trusted
    os.chmod(config_cache.cache_path(str(main)), 0o666)
    assert config_cache.read_cached(str(main), key) is None
    assert load_config(str(main)).primary_node_id == 1


def test_a_cache_postgres_owns_is_ignored(tmp_path: Path, cache_dir: Path) -> None:
    """What postgres can write never configures a run, not even postgres's own."""
    main = tmp_path / "config.toml"
    main.write_text("primary_node_id = 1\n")
    key = config_cache.cache_key([str(main)])
    config_cache.write_cached(str(main), key, {"primary_node_id": 7})
    postgres = pwd.getpwnam("postgres")
    os.chown(config_cache.cache_path(str(main)), postgres.pw_uid, postgres.pw_gid)
    assert config_cache.read_cached(str(main), key) is None
    assert load_config(str(main)).primary_node_id == 1


def test_a_cache_directory_others_can_write_is_neither_read_nor_written(
    tmp_path: Path, cache_dir: Path
) -> None:
    main = tmp_path / "config.toml"
    main.write_text("primary_node_id = 1\n")
    key = config_cache.cache_key([str(main)])
    config_cache.write_cached(str(main), key, {"primary_node_id": 7})
    os.chmod(cache_dir, 0o777)
    assert config_cache.read_cached(str(main), key) is None
    os.unlink(config_cache.cache_path(str(main)))
    assert load_config(str(main)).primary_node_id == 1
    assert list(cache_dir.iterdir()) == []


def test_no_cache_directory_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config_cache.CACHE_DIR_ENV, str(tmp_path / "missing"))
    main = tmp_path / "config.toml"
    main.write_text("primary_node_id = 4\n")
    assert load_config(str(main)).primary_node_id == 4
    assert not (tmp_path / "missing").exists()


def test_errors_still_name_the_file_with_the_bad_key(tmp_path: Path, cache_dir: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text("primary_node_id = 1\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "20-bad.toml").write_text("primary_node_id = 500\n")
    with pytest.raises(ConfigError, match=r"20-bad\.toml: primary_node_id"):
        load_config(str(main))


def test_the_guarded_client_reads_its_settings_with_the_defaults_filled_in(
    tmp_path: Path, cache_dir: Path
) -> None:
    main = tmp_path / "config.toml"
    main.write_text('mode = "guarded"\nsyslog_facility = "local3"\n')
    assert config_cache.read_client(str(main)) is None  # nothing cached yet
    config = load_config(str(main))
    client = config_cache.read_client(str(main))
    assert client is not None
    assert {name: getattr(client, name) for name in config_cache.CLIENT_FIELDS} == {
        name: getattr(config, name) for name in config_cache.CLIENT_FIELDS
    }
    assert client.facility == 19 and client.mode == "guarded"
    main.write_text('mode = "guarded"\nsyslog_facility = "local4"\n')
    assert config_cache.read_client(str(main)) is None  # stale until a run reads the files
    load_config(str(main))
    client = config_cache.read_client(str(main))
    assert client is not None and client.facility == 20


def test_the_guarded_client_checks_the_files_as_load_config_does(
    tmp_path: Path, cache_dir: Path
) -> None:
    main = tmp_path / "config.toml"
    main.write_text('mode = "guarded"\n')
    load_config(str(main))
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-x.toml").write_text('guard_socket = "/run/x.sock"\n')
    assert config_cache.read_client(str(main)) is None  # a new file: the key differs
    os.chmod(tmp_path / "conf.d" / "10-x.toml", 0o666)
    with pytest.raises(ConfigError, match="not trusted") as by_load:
        load_config(str(main))
    with pytest.raises(ConfigError, match="not trusted") as by_client:
        config_cache.read_client(str(main))
    assert str(by_client.value) == str(by_load.value)
    assert config_cache.read_client(str(tmp_path / "missing.toml")) is None


def test_a_configuration_that_fails_a_check_is_not_cached(tmp_path: Path, cache_dir: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text("interval = 5.0\nlease = 6.0\n")  # each valid, together not
    with pytest.raises(ConfigError, match="lease"):
        load_config(str(main))
    assert list(cache_dir.iterdir()) == []
    assert config_cache.read_client(str(main)) is None


def test_a_cache_of_the_old_layout_is_stale(tmp_path: Path, cache_dir: Path) -> None:
    """A record without the client's settings is rewritten, not used forever as it is."""
    main = tmp_path / "config.toml"
    main.write_text('mode = "guarded"\n')
    old_key = (config_cache.cache_key([str(main)])[0], *config_cache.cache_key([str(main)])[2:])
    config_cache.write_cached(str(main), old_key, {"mode": "guarded"})
    assert config_cache.read_client(str(main)) is None
    load_config(str(main))
    assert config_cache.read_client(str(main)) is not None
