"""The kernel-table logic and the reply parser of netlink_socket.py, without a kernel.

The real kernel is in tests/netns; here a table that records its calls shows that
add and del never dump, that a failed add takes back what it added, and that a
failed removal does not stop the others. The parser fails closed on bytes no kernel
would send.
"""

import errno
import struct
import subprocess
import sys
import textwrap

import pytest

from pgpool_anycast_hook.errors import HookError
from pgpool_anycast_hook.netlink_socket import (
    NLMSG_ERROR,
    NetlinkError,
    add_missing,
    remove_present,
    split_messages,
)


class RecordingTable:
    already_present = errno.EEXIST
    already_absent = errno.EADDRNOTAVAIL

    def __init__(self, have: set[str], fail: dict[str, int] | None = None) -> None:
        self.have = set(have)
        self.fail = fail or {}
        self.calls: list[str] = []

    def current(self) -> set[str]:
        self.calls.append("dump")
        return set(self.have)

    def add(self, item: str) -> int:
        self.calls.append(f"+{item}")
        if item in self.fail:
            return self.fail[item]
        if item in self.have:
            return errno.EEXIST
        self.have.add(item)
        return 0

    def remove(self, item: str) -> int:
        self.calls.append(f"-{item}")
        if item in self.fail:
            return self.fail[item]
        if item not in self.have:
            return errno.EADDRNOTAVAIL
        self.have.discard(item)
        return 0

    def error(self, code: int, action: str, item: str) -> HookError:
        return HookError(f"{action} {item}: {errno.errorcode[code]}")


def test_add_and_remove_never_dump() -> None:
    table = RecordingTable({"a"})
    assert add_missing(table, ["a", "b"], dry_run=False) == ["b"]
    assert remove_present(table, ["a", "b", "c"], dry_run=False) == ["a", "b"]
    assert "dump" not in table.calls and table.have == set()


def test_a_dry_run_dumps_once_and_changes_nothing() -> None:
    table = RecordingTable({"a"})
    assert add_missing(table, ["a", "b", "c"], dry_run=True) == ["b", "c"]
    assert remove_present(table, ["a", "b"], dry_run=True) == ["a"]
    assert table.calls == ["dump", "dump"] and table.have == {"a"}


def test_a_failed_add_takes_back_what_it_added() -> None:
    table = RecordingTable(set(), fail={"c": errno.EPERM})
    with pytest.raises(HookError, match="add c: EPERM"):
        add_missing(table, ["a", "b", "c"], dry_run=False)
    assert table.have == set()
    assert table.calls == ["+a", "+b", "+c", "-b", "-a"]


def test_a_failed_removal_does_not_stop_the_others() -> None:
    table = RecordingTable({"a", "b", "c"}, fail={"b": errno.EPERM})
    with pytest.raises(HookError, match="remove b") as raised:
        remove_present(table, ["a", "b", "c"], dry_run=False)
    assert table.have == {"b"} and raised.value.changed == ("a", "c")


def _message(kind: int, seq: int, payload: bytes = b"", length: int | None = None) -> bytes:
    size = 16 + len(payload) if length is None else length
    return struct.pack("=IHHII", size, kind, 0, seq, 0) + payload


def test_split_messages_reads_each_message() -> None:
    ack = _message(NLMSG_ERROR, 7, struct.pack("=i", 0) + b"\0" * 16)
    nack = _message(NLMSG_ERROR, 8, struct.pack("=i", -errno.EEXIST) + b"\0" * 16)
    assert [(kind, seq) for kind, _f, seq, _c in split_messages(ack + nack)] == [
        (NLMSG_ERROR, 7),
        (NLMSG_ERROR, 8),
    ]


@pytest.mark.parametrize("length", [0, 8, 15, 4096])
def test_a_malformed_reply_fails_closed(length: int) -> None:
    with pytest.raises(NetlinkError, match="malformed"):
        split_messages(_message(NLMSG_ERROR, 1, b"\0" * 20, length=length))


FALLBACK = textwrap.dedent(
    """
    import importlib, sys
    real = importlib.import_module
    calls = []
    def failing_once(name, package=None):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("a pyroute2 whose layout moved")
        return real(name, package)
    importlib.import_module = failing_once
    from pgpool_anycast_hook.netlink_socket import pyroute2_message
    cls = pyroute2_message("pyroute2.netlink.rtnl.ifaddrmsg", "ifaddrmsg")
    importlib.import_module = real
    import pyroute2, pyroute2.netlink
    assert "pyroute2" in calls, calls  # the full package was imported
    assert cls is pyroute2.netlink.rtnl.ifaddrmsg.ifaddrmsg
    from pyroute2 import IPRoute
    print("fallback ok")
    """
)

FAST = textwrap.dedent(
    """
    import sys
    from pgpool_anycast_hook.netlink_socket import pyroute2_message
    cls = pyroute2_message("pyroute2.netlink.rtnl.ifaddrmsg", "ifaddrmsg")
    assert not [m for m in sys.modules if m.startswith("pyroute2")], "half-imported package left"
    import pyroute2.netlink
    assert pyroute2.netlink.nlmsg and pyroute2.netlink.rtnl.ifaddrmsg
    from pyroute2 import IPRoute
    print("fast ok")
    """
)


@pytest.mark.parametrize("script", [FAST, FALLBACK], ids=["fast", "forced-fallback"])
def test_the_fast_import_leaves_a_consistent_pyroute2(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
