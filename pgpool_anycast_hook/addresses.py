"""Make the configured addresses present or absent on one interface, over netlink.

Addresses match exactly on interface index, family, address and prefix length: a
/24 holding the same address, or a look-alike address, is never ours. EEXIST on
add and EADDRNOTAVAIL on delete mean "already done", so neither dumps the table;
only an IPv6 EEXIST is checked with a dump, since IPv6 refuses an address that the
interface holds with any prefix length. The messages are pyroute2's
`ifaddrmsg`; netlink_socket.py says why only that module of pyroute2 is loaded.
"""

import errno
import ipaddress
import socket
from typing import Any

from pgpool_anycast_hook.errors import HookError
from pgpool_anycast_hook.netlink_socket import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    RouteSocket,
    interface_index,
    netlink_error,
    pyroute2_message,
)

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE, RT_SCOPE_HOST = 0, 254
OTHER_PREFIX = -1  # not an errno: the address is there, but not with our prefix length


class AddressTable:
    """The addresses of one interface, read and changed with pyroute2's ifaddrmsg."""

    already_present = errno.EEXIST
    already_absent = errno.EADDRNOTAVAIL

    def __init__(self, route: RouteSocket, interface: str) -> None:
        self._route = route
        self._interface = interface
        self._index = interface_index(interface)
        self._ifaddrmsg = pyroute2_message("pyroute2.netlink.rtnl.ifaddrmsg", "ifaddrmsg")

    def current(self) -> set[Address]:
        """Every address on the interface, with its prefix length."""
        request = self._ifaddrmsg()
        request["family"] = 0
        found: set[Address] = set()
        for chunk in self._route.dump(request, RTM_GETADDR, RTM_NEWADDR):
            message = self._ifaddrmsg(chunk)
            message.decode()
            if message["index"] != self._index:
                continue
            text = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
            if text:
                found.add(ipaddress.ip_interface(f"{text}/{message['prefixlen']}"))
        return found

    def add(self, address: Address) -> int:
        code = self._change(RTM_NEWADDR, address)
        if code == errno.EEXIST and address.version == 6 and address not in self.current():
            # IPv6 refuses an address the interface holds with another prefix length.
            return OTHER_PREFIX
        return code

    def remove(self, address: Address) -> int:
        return self._change(RTM_DELADDR, address)

    def error(self, code: int, action: str, address: Address) -> HookError:
        if code == OTHER_PREFIX:
            return HookError(
                f"cannot {action} {address} on {self._interface}: the interface holds "
                f"{address.ip} with another prefix length"
            )
        if code == errno.EACCES and address.version == 6:
            return HookError(
                f"cannot {action} {address} on {self._interface}: IPv6 is disabled there"
            )
        return netlink_error(code, f"{action} {address}", self._interface)

    def _change(self, kind: int, address: Address) -> int:
        """RTM_NEWADDR or RTM_DELADDR for exactly this address; the errno (0: done)."""
        message = address_message(self._ifaddrmsg, self._index, address)
        flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_EXCL if kind == RTM_NEWADDR else 0)
        return self._route.request(message, kind, flags)


def address_message(
    ifaddrmsg: Any, index: int, address: Address, lease: float | None = None
) -> Any:
    """The ifaddrmsg for exactly this address on interface `index` (the hook's and the
    guard's); with `lease`, valid_lft = preferred_lft = lease seconds."""
    ip = str(address.ip)
    v4 = address.version == 4
    message = ifaddrmsg()
    message["family"] = socket.AF_INET if v4 else socket.AF_INET6
    message["prefixlen"] = address.network.prefixlen
    message["flags"] = 0 if v4 else IFA_F_NODAD
    message["scope"] = RT_SCOPE_HOST if address.ip.is_loopback else RT_SCOPE_UNIVERSE
    message["index"] = index
    attrs: list[tuple[str, Any]] = (
        [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)] if v4 else [("IFA_ADDRESS", ip)]
    )
    if lease is not None:
        seconds = max(1, int(lease))
        info = {"ifa_preferred": seconds, "ifa_valid": seconds, "cstamp": 0, "tstamp": 0}
        attrs.append(("IFA_CACHEINFO", info))
    message["attrs"] = attrs
    return message
