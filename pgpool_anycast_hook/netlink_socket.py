"""The NETLINK_ROUTE transport shared by addresses.py and serving_routes.py.

Messages are pyroute2's (`ifaddrmsg`, `rtmsg`); they travel over a plain socket.
The reason is start-up time, which is the client-visible failure window on a
crash: importing `pyroute2` runs its package `__init__`, which scans every
installed distribution's entry points and imports all of pyroute2 (about
130-370 ms on these machines), while one message module takes about 5-20 ms.
`pyroute2_message` imports that one module without running the package
`__init__`, and falls back to a normal import if pyroute2's layout changes.

Netlink errors become HookErrors in one place (`netlink_error`); each caller
first decides which errno means "already done" (EEXIST on add, EADDRNOTAVAIL or
ESRCH on delete).
"""

import errno
import importlib
import importlib.util
import socket
import struct
import sys
import types
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from pgpool_anycast_hook.errors import HookError, InterfaceMissing, PermissionDenied

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND, NLM_F_DUMP = 0x200, 0x400, 0x800, 0x300
_HEADER = struct.Struct("=IHHII")
_RECV_SIZE = 1 << 16
_MAX_REPLY_MESSAGES = 100_000


def pyroute2_message(module: str, name: str) -> Any:
    """A pyroute2 message class, e.g. ("pyroute2.netlink.rtnl.ifaddrmsg", "ifaddrmsg")."""
    stub = None
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            stub = types.ModuleType("pyroute2")
            stub.__path__ = list(spec.submodule_search_locations)
            stub.__spec__ = spec
            sys.modules["pyroute2"] = stub
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        for loaded in [n for n in sys.modules if n == "pyroute2" or n.startswith("pyroute2.")]:
            del sys.modules[loaded]
        stub = None
        importlib.import_module("pyroute2")  # the full package: slow but complete
        return getattr(importlib.import_module(module), name)
    finally:
        # Leave no stub behind: a later `import pyroute2` must get the real package.
        if stub is not None and sys.modules.get("pyroute2") is stub:
            del sys.modules["pyroute2"]


def interface_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise InterfaceMissing(f"interface {name!r} does not exist") from None


def netlink_error(code: int, action: str, interface: str) -> HookError:
    """The operator's message and exit code for a netlink errno."""
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(
            f"cannot {action} on {interface}: permission denied (CAP_NET_ADMIN is required)"
        )
    if code in (errno.ENODEV, errno.ENXIO):
        return InterfaceMissing(f"interface {interface!r} does not exist")
    return HookError(f"cannot {action} on {interface}: {errno.errorcode.get(code, code)}")


class RouteSocket:
    """A NETLINK_ROUTE socket: send one pyroute2 message, read the replies to it."""

    def __init__(self, timeout: float = 2.0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.settimeout(timeout)
        self._sock.bind((0, 0))
        self._sequence = 0

    def __enter__(self) -> "RouteSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def send(self, message: Any, kind: int, flags: int) -> int:
        """Encode and send `message` (a pyroute2 nlmsg); return its sequence number."""
        self._sequence += 1
        message["header"]["type"] = kind
        message["header"]["flags"] = flags
        message["header"]["sequence_number"] = self._sequence
        message["header"]["pid"] = 0
        message.encode()
        self._sock.sendto(bytes(message.data), (0, 0))
        return self._sequence

    def replies(self, sequence: int) -> Iterator[tuple[int, bytes]]:
        """(type, whole message) for each reply to `sequence`, until DONE or an ack."""
        seen = 0
        while seen < _MAX_REPLY_MESSAGES:
            data = self._sock.recv(_RECV_SIZE)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, flags, seq, _pid = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    return
                chunk = data[offset : offset + length]
                offset += (length + 3) & ~3
                seen += 1
                if seq != sequence:
                    continue
                yield kind, chunk
                if kind in (NLMSG_DONE, NLMSG_ERROR) or not flags & NLM_F_MULTI:
                    return

    def request(self, message: Any, kind: int, flags: int) -> int:
        """Send a change and wait for its ack: 0 on success, else the errno."""
        for reply, chunk in self.replies(self.send(message, kind, flags | NLM_F_ACK)):
            if reply == NLMSG_ERROR:
                return int(-struct.unpack_from("=i", chunk, _HEADER.size)[0])
        return 0

    def dump(self, message: Any, kind: int, reply_kind: int) -> Iterator[bytes]:
        """Each message of type `reply_kind` that a dump request returns."""
        for reply, chunk in self.replies(self.send(message, kind, NLM_F_REQUEST | NLM_F_DUMP)):
            if reply == reply_kind:
                yield chunk


Item = TypeVar("Item", bound=Hashable)


class KernelTable(Protocol[Item]):
    """Kernel objects of one kind on one interface (addresses, serving routes)."""

    already_present: int  # the errno that means "it is there already"
    already_absent: int  # the errno that means "it is gone already"

    def current(self) -> set[Item]: ...
    def add(self, item: Item) -> int: ...
    def remove(self, item: Item) -> int: ...
    def error(self, code: int, action: str, item: Item) -> HookError: ...


def add_missing(table: KernelTable[Item], wanted: Iterable[Item], dry_run: bool) -> list[Item]:
    """Add what is missing; return what was (or would be) added.

    All or nothing: if one add fails, what this call added is removed again, so a
    node never announces half of its addresses.
    """
    missing = [item for item in wanted if item not in table.current()]
    if dry_run:
        return missing
    added: list[Item] = []
    for item in missing:
        code = table.add(item)
        if code == table.already_present:
            continue
        if code:
            for done in reversed(added):
                table.remove(done)
            raise table.error(code, "add", item)
        added.append(item)
    return added


def remove_present(table: KernelTable[Item], wanted: Iterable[Item], dry_run: bool) -> list[Item]:
    """Remove what is present; return what was (or would be) removed.

    Withdrawing is the safe direction, so a failure on one item does not stop the
    others from being removed; the first error is raised at the end, carrying what
    was removed.
    """
    present_now = [item for item in wanted if item in table.current()]
    if dry_run:
        return present_now
    removed: list[Item] = []
    first_error: HookError | None = None
    for item in present_now:
        code = table.remove(item)
        if code == table.already_absent:
            continue
        if code:
            first_error = first_error or table.error(code, "remove", item)
            continue
        removed.append(item)
    if first_error is not None:
        first_error.changed = tuple(str(item) for item in removed)
        raise first_error
    return removed


TableFactory = Callable[[RouteSocket, str], KernelTable[Item]]


def held(table: TableFactory[Item], interface: str, wanted: Iterable[Item]) -> dict[Item, bool]:
    """Which of the wanted items the interface holds now."""
    with RouteSocket() as route:
        have = table(route, interface).current()
    return {item: item in have for item in wanted}


def ensure_present(
    table: TableFactory[Item], interface: str, wanted: Iterable[Item], dry_run: bool = False
) -> list[Item]:
    """Add what is missing, all or nothing; return what was (or would be) added."""
    with RouteSocket() as route:
        return add_missing(table(route, interface), wanted, dry_run)


def ensure_absent(
    table: TableFactory[Item], interface: str, wanted: Iterable[Item], dry_run: bool = False
) -> list[Item]:
    """Remove what is present; return what was (or would be) removed."""
    with RouteSocket() as route:
        return remove_present(table(route, interface), wanted, dry_run)
