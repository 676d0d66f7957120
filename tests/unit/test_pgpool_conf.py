"""pgpool.conf: where pgpool_status lives, and the settings readiness needs."""

from pathlib import Path

from pgpool_anycast_hook.pgpool_conf import read_pgpool_conf


def test_debian_defaults_when_absent(tmp_path: Path) -> None:
    settings = read_pgpool_conf(str(tmp_path / "missing.conf"))
    assert not settings.found
    assert settings.status_file == "/var/log/postgresql/pgpool_status"
    assert settings.port == 9999 and settings.pid_file == "/var/run/postgresql/pgpool.pid"


def test_last_of_logdir_and_work_dir_wins(tmp_path: Path) -> None:
    conf = tmp_path / "pgpool.conf"
    conf.write_text("logdir = '/a'\nwork_dir = '/b'   # 4.7\n#logdir = '/c'\n")
    assert read_pgpool_conf(str(conf)).work_dir == "/b"
    conf.write_text("work_dir = '/b'\nlogdir='/a'\n")
    assert read_pgpool_conf(str(conf)).work_dir == "/a"


def test_include_quotes_and_backends(tmp_path: Path) -> None:
    (tmp_path / "extra.conf").write_text(
        "port = 5433\nbackend_hostname2 = 'pg3'\nbackend_port2 = 5432\n"
        "backend_hostname3 = 'no port: not counted'\n"
    )
    conf = tmp_path / "pgpool.conf"
    conf.write_text(
        "include = 'extra.conf'\n"
        "backend_hostname0 = 'pg1'\nbackend_port0 = 5432\n"
        "backend_hostname1 = 'pg2'\nbackend_port1 = 0\n"
        "pid_file_name = 'run/pgpool.pid'\nlisten_addresses = '*'\n"
        "socket_dir = '/tmp/it''s'\n"
    )
    settings = read_pgpool_conf(str(conf))
    assert settings.port == 5433
    assert settings.num_backends == 3
    assert settings.pid_file == str(tmp_path / "run" / "pgpool.pid")
    assert settings.listen_addresses == "*"
    assert settings.socket_dir == "/tmp/it's"
