"""File errors become the documented exit codes; replaced files are never seen half-written."""

import os
from pathlib import Path

import pytest

from pgpool_anycast_hook.errors import ExitCode, HookError, PermissionDenied, file_errors
from pgpool_anycast_hook.safe_files import replace_file


def test_permission_error_is_the_permission_code() -> None:
    with pytest.raises(PermissionDenied) as raised, file_errors("write the hold"):
        raise PermissionError(13, "Permission denied", "/var/lib/x/hold")
    assert raised.value.exit_code == ExitCode.NOPERM
    assert str(raised.value) == "cannot write the hold: /var/lib/x/hold: Permission denied"


def test_other_os_errors_are_failures() -> None:
    with pytest.raises(HookError) as raised, file_errors("move /x aside"):
        raise OSError(28, "No space left on device")
    assert not isinstance(raised.value, PermissionDenied)
    assert raised.value.exit_code == ExitCode.FAILURE
    assert str(raised.value) == "cannot move /x aside: No space left on device"


def test_replace_file_sets_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    old_umask = os.umask(0o077)
    try:
        replace_file(str(target), b"new\n", 0o664)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_mode & 0o777 == 0o664
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_replace_file_cleans_up_when_it_fails(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        replace_file(str(tmp_path / "dir"), b"x", 0o644)  # cannot rename a file over a directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
