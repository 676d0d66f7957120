"""pgpool.conf: where pgpool_status lives, and the settings readiness needs."""

import os
import socket
from pathlib import Path

import pytest

from pgpool_anycast_hook.errors import ConfigError
from pgpool_anycast_hook.pgpool_conf import read_pgpool_conf
from pgpool_anycast_hook.pgpool_process import Endpoint, endpoints


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


def conf(tmp_path: Path, text: str, name: str = "pgpool.conf") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, socket_dir, noted",
    [
        ("unix_socket_directories = '/run/a,/run/b'\n", "/run/a", False),
        ("unix_socket_directories = ',,/run/a, /run/b'\n", "/run/a", False),  # strtok
        ("socket_dir = '/run/old'\n", "/run/old", False),  # pgpool 4.1-4.3
        ("socket_dir = '/run/old'\nunix_socket_directories = '/run/new'\n", "/run/new", True),
        ("unix_socket_directories = '/run/new'\nsocket_dir = '/run/old'\n", "/run/new", True),
        ("unix_socket_directories = '/run/same'\nsocket_dir = '/run/same'\n", "/run/same", False),
        ("unix_socket_directories = ''\nsocket_dir = '/run/old'\n", "/run/old", False),
        ("unix_socket_directories = ''\n", "/var/run/postgresql", False),
    ],
)
def test_unix_socket_directories_first_entry_beside_socket_dir(
    tmp_path: Path, text: str, socket_dir: str, noted: bool
) -> None:
    settings = read_pgpool_conf(conf(tmp_path, text))
    assert settings.socket_dir == socket_dir
    assert any("socket_dir" in note for note in settings.notes) == noted


@pytest.mark.parametrize(
    "files, match",
    [
        ({"pgpool.conf": "include = 'pgpool.conf'\n"}, "include loop"),
        ({"pgpool.conf": "include = 'a.conf'\n", "a.conf": "include = 'pgpool.conf'"}, "loop"),
        ({"pgpool.conf": "include = 'missing.conf'\n"}, "cannot read included file"),
        ({"pgpool.conf": "include = ''\n"}, "not a regular file"),
        ({"pgpool.conf": "port = 70000\n"}, "port must be a port number"),
        ({"pgpool.conf": "port = 0\n"}, "port must be a port number"),
        ({"pgpool.conf": "port = " + "9" * 5000 + "\n"}, "port must be a port number"),
        ({"pgpool.conf": "port = '99x'\n"}, "port must be a port number"),
        ({"pgpool.conf": "pcp_port = -1\n"}, "pcp_port must be a port number"),
        ({"pgpool.conf": "include = 'a.conf'\n", "a.conf": "pcp_port = 1e9\n"}, "a.conf: pcp"),
    ],
)
def test_what_pgpool_refuses_is_a_config_error(
    tmp_path: Path, files: dict[str, str], match: str
) -> None:
    for name, text in files.items():
        conf(tmp_path, text, name)
    with pytest.raises(ConfigError, match=match) as error:
        read_pgpool_conf(str(tmp_path / "pgpool.conf"))
    assert str(tmp_path) in str(error.value) and len(str(error.value)) < 400


def test_includes_nest_ten_deep_not_eleven(tmp_path: Path) -> None:
    for depth in range(11):
        conf(tmp_path, f"include = 'f{depth + 1}.conf'\nport = {5000 + depth}\n", f"f{depth}.conf")
    conf(tmp_path, "port = 6000\n", "f11.conf")
    with pytest.raises(ConfigError, match="nested more than 10 deep"):
        read_pgpool_conf(str(tmp_path / "f0.conf"))
    assert read_pgpool_conf(str(tmp_path / "f1.conf")).port == 5001  # f11 is 10 deep from f1


def test_includes_fanning_out_are_bounded(tmp_path: Path) -> None:
    conf(tmp_path, "include = 'b.conf'\n" * 11, "pgpool.conf")
    conf(tmp_path, "include = 'c.conf'\n" * 11, "b.conf")
    conf(tmp_path, "port = 5433\n", "c.conf")
    with pytest.raises(ConfigError, match="more than 100 files"):
        read_pgpool_conf(str(tmp_path / "pgpool.conf"))


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pgpool.conf")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_pgpool_conf(str(tmp_path / "pgpool.conf"))
    os.mkfifo(tmp_path / "fifo.conf")
    with pytest.raises(ConfigError, match=r"fifo\.conf: cannot read: is not a regular file"):
        read_pgpool_conf(conf(tmp_path, "include = 'fifo.conf'\n", "main.conf"))


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        read_pgpool_conf(conf(tmp_path, "#" * (1 << 20) + "\nport = 5433\n"))


def test_integers_as_pgpool_reads_them(tmp_path: Path) -> None:
    settings = read_pgpool_conf(conf(tmp_path, "port = 0x1538\npcp_port = '011610'\n"))
    assert (settings.port, settings.pcp_port) == (5432, 5000)
    assert read_pgpool_conf(conf(tmp_path, "port = '  5433 '\n")).port == 5433


def test_backend_indexes_beyond_pgpool_are_ignored_with_a_note(tmp_path: Path) -> None:
    settings = read_pgpool_conf(
        conf(
            tmp_path,
            "backend_port0 = 5432\nbackend_port127 = 5432\nbackend_port128 = 5432\n"
            f"backend_port{'9' * 5000} = 5432\nbackend_port\u0663 = 5432\n"
            "backend_port5 = garbled\nbackend_port0006 = 5432\n",
        )
    )
    assert settings.num_backends == 128
    assert len(settings.notes) == 3  # 128, the 5000 digits, garbled; the Arabic digit is no key
    settings = read_pgpool_conf(conf(tmp_path, "backend_port0006 = 5432\nbackend_port9 = x\n"))
    assert settings.num_backends == 7


def test_a_value_ends_at_a_nul(tmp_path: Path) -> None:
    path = tmp_path / "pgpool.conf"
    path.write_bytes(b"logdir = '/var/log/x\0y'\nsocket_dir = /run/\0z\n\xff\xfe = 1\n")
    settings = read_pgpool_conf(str(path))
    assert settings.work_dir == "/var/log/x" and settings.socket_dir == "/run/"


@pytest.mark.parametrize(
    "listen, tcp",
    [
        ("*", ("127.0.0.1", 5433)),
        ("", ("127.0.0.1", 5433)),
        ("localhost", ("127.0.0.1", 5433)),
        ("0.0.0.0", ("127.0.0.1", 5433)),
        ("::", ("::1", 5433)),
        ("192.0.2.7, 192.0.2.8", ("192.0.2.7", 5433)),
        ("2001:db8::7", ("2001:db8::7", 5433)),
        ("db.example.com", None),
        ("localhost.", None),
        ("fe80::1%eth0", None),
        ("127.1", None),
    ],
)
def test_listen_addresses_are_never_resolved(
    tmp_path: Path, listen: str, tcp: tuple[str, int] | None
) -> None:
    settings = read_pgpool_conf(
        conf(tmp_path, f"port = 5433\nlisten_addresses = '{listen}'\nsocket_dir = '/run/p'\n")
    )
    found = endpoints(settings)
    assert found[0] == Endpoint(socket.AF_UNIX, "/run/p/.s.PGSQL.5433")
    assert [e.address for e in found[1:]] == ([tcp] if tcp else [])
    if tcp:
        assert found[1].family == (socket.AF_INET6 if ":" in tcp[0] else socket.AF_INET)
