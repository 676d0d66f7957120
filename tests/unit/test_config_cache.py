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
