"""The NETLINK_ROUTE transport shared by addresses.py and serving_routes.py.

Messages are pyroute2's (`ifaddrmsg`, `rtmsg`); they travel over a plain socket.
The reason is start-up time, which is the client-visible failure window on a
crash: importing `pyroute2` runs its package `__init__`, which scans every
installed distribution's entry points and imports all of pyroute2 (about
130-370 ms on these machines), while one message module takes about 5-20 ms.
`pyroute2_message` imports that one module without running the package
`__init__`, and falls back to a normal import if pyroute2's layout changes.

Netlink errors become HookErrors in one place (`netlink_error`, and NetlinkError
for a kernel that does not answer as promised); each table says which errno means
"already done" (EEXIST on add, EADDRNOTAVAIL or ESRCH on delete), so adding and
removing never need a dump first.
"""

import contextlib
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
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND, NLM_F_DUMP = 0x200, 0x400, 0x800, 0x300
_HEADER = struct.Struct("=IHHII")
_RECV_SIZE = 1 << 16
_MAX_REPLY_MESSAGES = 100_000
_DUMP_ATTEMPTS = 3


def pyroute2_message(module: str, name: str) -> Any:
    """A pyroute2 message class, e.g. ("pyroute2.netlink.rtnl.ifaddrmsg", "ifaddrmsg").

    The fast way imports the message modules under a stand-in for the `pyroute2`
    package, then takes every pyroute2 module it loaded out of sys.modules again
    (the classes keep what they need), so a later `import pyroute2...` in the same
    process gets the real, complete package. Any failure on the fast way, of any
    kind, rolls sys.modules back the same way and imports the whole package.
    """
    if (module, name) not in _MESSAGE_CLASSES:
        wanted = dict.fromkeys([*MESSAGE_MODULES, (module, name)])
        _MESSAGE_CLASSES.update(_import_messages(list(wanted)))
    return _MESSAGE_CLASSES[(module, name)]


MESSAGE_MODULES = (
    ("pyroute2.netlink.rtnl.ifaddrmsg", "ifaddrmsg"),
    ("pyroute2.netlink.rtnl.rtmsg", "rtmsg"),
)
_MESSAGE_CLASSES: dict[tuple[str, str], Any] = {}


def _load(wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    return {(m, n): getattr(importlib.import_module(m), n) for m, n in wanted}


def _import_messages(wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    if "pyroute2" not in sys.modules:
        before = set(sys.modules)
        try:
            spec = importlib.util.find_spec("pyroute2")
            if spec is not None and spec.submodule_search_locations is not None:
                stub = types.ModuleType("pyroute2")
                stub.__path__ = list(spec.submodule_search_locations)
                stub.__spec__ = spec
                sys.modules["pyroute2"] = stub
                return _load(wanted)
        except Exception:  # any failure: the slow, complete way below
            pass
        finally:
            for loaded in set(sys.modules) - before:
                if loaded == "pyroute2" or loaded.startswith("pyroute2."):
                    del sys.modules[loaded]
    try:
        importlib.import_module("pyroute2")  # the full package: slow but complete
        return _load(wanted)
    except Exception as error:  # one line, never a traceback
        raise HookError(
            f"cannot load pyroute2's messages: {type(error).__name__}: {error}"
        ) from None


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


class NetlinkError(HookError):
    """The kernel did not answer as netlink promises: no ack, a broken dump, silence."""


class RouteSocket:
    """A NETLINK_ROUTE socket: send one pyroute2 message, read the replies to it.

    Fails closed: a change counts as done only when the kernel acked it, a dump
    only when it ended with NLMSG_DONE and was not interrupted, and silence past
    the timeout (bounded by what is left of the run's deadline) is an error.
    """

    def __init__(self, timeout: float = 2.0) -> None:
        from pgpool_anycast_hook.deadline import seconds_left

        self._timeout = max(0.05, min(timeout, seconds_left()))
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.settimeout(self._timeout)
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

    def replies(self, sequence: int) -> Iterator[tuple[int, int, bytes]]:
        """(type, flags, whole message) for each reply to `sequence`, up to DONE or ERROR."""
        seen = 0
        for _ in range(_MAX_REPLY_MESSAGES):  # datagrams; each holds one message or more
            if seen >= _MAX_REPLY_MESSAGES:
                break
            try:
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise NetlinkError(
                    f"netlink: no answer from the kernel within {self._timeout:g} s"
                ) from None
            for kind, flags, seq, chunk in split_messages(data):
                seen += 1
                if seq != sequence:
                    continue
                yield kind, flags, chunk
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    return
        raise NetlinkError("netlink: the kernel's reply did not end")

    def request(self, message: Any, kind: int, flags: int) -> int:
        """Send a change and wait for its ack: 0 on success, else the errno."""
        for reply, _flags, chunk in self.replies(self.send(message, kind, flags | NLM_F_ACK)):
            if reply == NLMSG_ERROR:
                return _error_code(chunk)
        raise NetlinkError("netlink: the kernel did not acknowledge the change")

    def dump(self, message: Any, kind: int, reply_kind: int) -> list[bytes]:
        """Every message of type `reply_kind` that a dump request returns.

        A dump the kernel marks interrupted (NLM_F_DUMP_INTR: the table changed
        while it was read) is read again, a bounded number of times.
        """
        for _ in range(_DUMP_ATTEMPTS):
            found: list[bytes] = []
            interrupted = False
            for reply, flags, chunk in self.replies(
                self.send(message, kind, NLM_F_REQUEST | NLM_F_DUMP)
            ):
                interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
                if reply in (NLMSG_ERROR, NLMSG_DONE) and _error_code(chunk):
                    code = _error_code(chunk)
                    raise NetlinkError(f"netlink: dump failed: {errno.errorcode.get(code, code)}")
                if reply == reply_kind:
                    found.append(chunk)
            if not interrupted:
                return found
        raise NetlinkError(f"netlink: the dump was interrupted {_DUMP_ATTEMPTS} times")


def split_messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, whole message) of each netlink message in one datagram."""
    messages = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, flags, seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            raise NetlinkError("netlink: a malformed reply from the kernel")
        messages.append((kind, flags, seq, data[offset : offset + length]))
        offset += (length + 3) & ~3
    return messages


def _error_code(chunk: bytes) -> int:
    """The errno in an NLMSG_ERROR (0: an ack) or NLMSG_DONE message."""
    if len(chunk) < _HEADER.size + 4:
        return 0
    return int(-struct.unpack_from("=i", chunk, _HEADER.size)[0])


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

    The kernel decides what is there already (its "exists" errno), so no dump is
    needed; a dry run dumps once to say what it would add. All or nothing: if one
    add fails, what this call added is removed again, so a node never announces
    half of its addresses.
    """
    if dry_run:
        have = table.current()
        return [item for item in wanted if item not in have]
    added: list[Item] = []
    for item in wanted:
        try:
            code = table.add(item)
        except HookError:
            _take_back(table, added)
            raise
        if code == table.already_present:
            continue
        if code:
            _take_back(table, added)
            raise table.error(code, "add", item)
        added.append(item)
    return added


def _take_back(table: KernelTable[Item], added: list[Item]) -> None:
    for done in reversed(added):
        with contextlib.suppress(HookError):
            table.remove(done)


def remove_present(table: KernelTable[Item], wanted: Iterable[Item], dry_run: bool) -> list[Item]:
    """Remove what is present; return what was (or would be) removed.

    Withdrawing is the safe direction, so a failure on one item does not stop the
    others from being removed; the first error is raised at the end, carrying what
    was removed. The kernel's "does not exist" errno means already done.
    """
    if dry_run:
        have = table.current()
        return [item for item in wanted if item in have]
    removed: list[Item] = []
    first_error: HookError | None = None
    for item in wanted:
        try:
            code = table.remove(item)
        except HookError as error:
            first_error = first_error or error
            continue
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
