"""Files in directories others can write: nothing planted is followed, blocks or is replaced."""

import os
from pathlib import Path

import pytest

from pgpool_anycast_hook import safe_files
from pgpool_anycast_hook.safe_files import UnsafeFile


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(b"secret\n")
    os.chmod(path, 0o600)
    return path


def test_a_symbolic_link_is_refused_not_followed(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "hold"
    link.symlink_to(victim)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        safe_files.read_regular(str(link), 100)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        safe_files.open_lock_file(str(link))
    assert victim.read_bytes() == b"secret\n"


def test_a_dangling_link_is_never_created_through(tmp_path: Path) -> None:
    target = tmp_path / "created-through-the-link"
    (tmp_path / "lock").symlink_to(target)
    with pytest.raises(UnsafeFile):
        safe_files.open_lock_file(str(tmp_path / "lock"))
    assert not target.exists()


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "check.json"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        safe_files.read_regular(str(fifo), 100)  # would block forever without O_NONBLOCK
    with pytest.raises(UnsafeFile, match="not a regular file"):
        safe_files.open_lock_file(str(fifo))


def test_replace_file_replaces_a_planted_link_and_leaves_its_target(
    tmp_path: Path, victim: Path
) -> None:
    link = tmp_path / "hold"
    link.symlink_to(victim)
    safe_files.replace_file(str(link), b"new\n", 0o640)
    assert not link.is_symlink() and link.read_bytes() == b"new\n"
    assert link.stat().st_mode & 0o777 == 0o640
    assert victim.read_bytes() == b"secret\n" and victim.stat().st_mode & 0o777 == 0o600


def test_move_aside_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "pgpool_status"
    source.write_bytes(b"down\nup\n")
    taken = tmp_path / "pgpool_status.set-aside-x"
    taken.write_bytes(b"earlier\n")
    with pytest.raises(FileExistsError):
        safe_files.move_aside(str(source), str(taken))
    assert taken.read_bytes() == b"earlier\n" and source.read_bytes() == b"down\nup\n"
    safe_files.move_aside(str(source), str(tmp_path / "pgpool_status.set-aside-y"))
    assert not source.exists()
    assert (tmp_path / "pgpool_status.set-aside-y").read_bytes() == b"down\nup\n"
