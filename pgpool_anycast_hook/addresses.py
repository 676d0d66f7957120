"""Make the configured addresses present or absent on one interface, over netlink.

Messages are built and parsed by pyroute2's `ifaddrmsg`; they travel over a plain
NETLINK_ROUTE socket. The reason is start-up time, which is the client-visible
failure window on a crash: importing `pyroute2` runs its package `__init__`, which
scans every installed distribution's entry points and imports all of pyroute2
(about 130-370 ms on these machines), while `pyroute2.netlink.rtnl.ifaddrmsg` alone
takes about 20 ms. `_load_ifaddrmsg` imports that one module without running the
package `__init__`, and falls back to a normal import if pyroute2's layout changes.

Addresses match exactly on interface index, family, address and prefix length: a
/24 holding the same address, or a look-alike address, is never ours. Netlink
errors are translated in one place (`_translate`); EEXIST on add and EADDRNOTAVAIL
on delete mean "already done".
"""

import errno
import importlib.util
import ipaddress
import socket
import struct
import sys
import types
from collections.abc import Iterable, Iterator
from typing import Any

from pgpool_anycast_hook.errors import HookError, InterfaceMissing, PermissionDenied

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x200, 0x400, 0x300
IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE, RT_SCOPE_HOST = 0, 254
_HEADER = struct.Struct("=IHHII")
_RECV_SIZE = 1 << 16
_MAX_REPLY_MESSAGES = 100_000


def _load_ifaddrmsg() -> Any:
    """pyroute2's ifaddrmsg class, without paying for the whole package."""
    stub = None
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            stub = types.ModuleType("pyroute2")
            stub.__path__ = list(spec.submodule_search_locations)
            stub.__spec__ = spec
            sys.modules["pyroute2"] = stub
    try:
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    except ImportError:
        for name in [n for n in sys.modules if n == "pyroute2" or n.startswith("pyroute2.")]:
            del sys.modules[name]
        stub = None
        import pyroute2  # noqa: F401  (the full package, slow but complete)
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    finally:
        # Leave no stub behind: a later `import pyroute2` must get the real package.
        if stub is not None and sys.modules.get("pyroute2") is stub:
            del sys.modules["pyroute2"]
    return ifaddrmsg


def interface_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise InterfaceMissing(f"interface {name!r} does not exist") from None


def _translate(code: int, action: str, address: Address, interface: str) -> HookError:
    """One place that turns a netlink error into the operator's message and exit code."""
    if code == errno.EACCES and address.version == 6:
        return HookError(f"cannot {action} {address} on {interface}: IPv6 is disabled there")
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(
            f"cannot {action} {address} on {interface}: permission denied "
            "(CAP_NET_ADMIN is required)"
        )
    if code in (errno.ENODEV, errno.ENXIO):
        return InterfaceMissing(f"interface {interface!r} does not exist")
    return HookError(f"cannot {action} {address} on {interface}: {errno.errorcode.get(code, code)}")


class RouteSocket:
    """A NETLINK_ROUTE socket that speaks just the address messages the hook needs."""

    def __init__(self, timeout: float = 2.0) -> None:
        self._ifaddrmsg = _load_ifaddrmsg()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.settimeout(timeout)
        self._sock.bind((0, 0))
        self._sequence = 0

    def __enter__(self) -> "RouteSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def _send(self, kind: int, flags: int, fields: dict[str, int], attrs: list[Any]) -> int:
        message = self._ifaddrmsg()
        for key, value in fields.items():
            message[key] = value
        message["attrs"] = attrs
        self._sequence += 1
        message["header"]["type"] = kind
        message["header"]["flags"] = flags
        message["header"]["sequence_number"] = self._sequence
        message["header"]["pid"] = 0
        message.encode()
        self._sock.sendto(bytes(message.data), (0, 0))
        return self._sequence

    def _replies(self, sequence: int) -> Iterator[tuple[int, bytes]]:
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

    def _ack_error(self, sequence: int) -> int:
        """0 on success, else the positive errno the kernel answered with."""
        for kind, chunk in self._replies(sequence):
            if kind == NLMSG_ERROR:
                return -struct.unpack_from("=i", chunk, _HEADER.size)[0]
        return 0

    def addresses(self, index: int) -> set[Address]:
        """Every address on interface `index`, with its prefix length."""
        sequence = self._send(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, {"family": 0}, [])
        found: set[Address] = set()
        for kind, chunk in self._replies(sequence):
            if kind != RTM_NEWADDR:
                continue
            message = self._ifaddrmsg(chunk)
            message.decode()
            if message["index"] != index:
                continue
            text = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
            if text:
                found.add(ipaddress.ip_interface(f"{text}/{message['prefixlen']}"))
        return found

    def change(self, kind: int, index: int, address: Address) -> int:
        """Send RTM_NEWADDR or RTM_DELADDR for exactly this address; return the errno (0: ok)."""
        ip = str(address.ip)
        v4 = address.version == 4
        attrs = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)] if v4 else [("IFA_ADDRESS", ip)]
        fields = {
            "family": socket.AF_INET if v4 else socket.AF_INET6,
            "prefixlen": address.network.prefixlen,
            "flags": 0 if v4 else IFA_F_NODAD,
            "scope": RT_SCOPE_HOST if address.ip.is_loopback else RT_SCOPE_UNIVERSE,
            "index": index,
        }
        flags = NLM_F_REQUEST | NLM_F_ACK
        if kind == RTM_NEWADDR:
            flags |= NLM_F_CREATE | NLM_F_EXCL
        return self._ack_error(self._send(kind, flags, fields, attrs))


def present(interface: str, wanted: Iterable[Address]) -> dict[Address, bool]:
    """Which of the wanted addresses the interface holds now."""
    index = interface_index(interface)
    with RouteSocket() as route:
        have = route.addresses(index)
    return {address: address in have for address in wanted}


def ensure_present(
    interface: str, wanted: Iterable[Address], dry_run: bool = False
) -> list[Address]:
    """Add the missing addresses; return what was (or would be) added.

    All or nothing: if one add fails, the ones this call added are removed again,
    so the node never announces half of its addresses.
    """
    index = interface_index(interface)
    with RouteSocket() as route:
        missing = [a for a in wanted if a not in route.addresses(index)]
        if dry_run:
            return missing
        added: list[Address] = []
        for address in missing:
            code = route.change(RTM_NEWADDR, index, address)
            if code == errno.EEXIST:
                continue
            if code:
                for done in reversed(added):
                    route.change(RTM_DELADDR, index, done)
                raise _translate(code, "add", address, interface)
            added.append(address)
    return added


def ensure_absent(
    interface: str, wanted: Iterable[Address], dry_run: bool = False
) -> list[Address]:
    """Remove the configured addresses that are present; return what was (or would be) removed.

    Withdrawing is the safe direction, so a failure on one address does not stop
    the others from being removed; the first error is raised at the end.
    """
    index = interface_index(interface)
    with RouteSocket() as route:
        present_now = [a for a in wanted if a in route.addresses(index)]
        if dry_run:
            return present_now
        removed: list[Address] = []
        first_error: HookError | None = None
        for address in present_now:
            code = route.change(RTM_DELADDR, index, address)
            if code == errno.EADDRNOTAVAIL:
                continue
            if code:
                first_error = first_error or _translate(code, "remove", address, interface)
                continue
            removed.append(address)
    if first_error is not None:
        first_error.changed = tuple(str(a) for a in removed)
        raise first_error
    return removed
