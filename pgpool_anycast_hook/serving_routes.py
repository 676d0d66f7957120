"""Local routes that keep the node accepting an anycast address after it was withdrawn.

With FRR's `redistribute connected`, the address on `lo` is the announcement: remove
it and the route goes away, but so does the kernel's local route for it, and
packets of connections still in flight are then dropped. A second, independent
route of type `local` in the kernel's `local` table (what `ip route add local
ADDR dev lo table local` makes) keeps the kernel accepting and binding the address.
FRR's zebra ignores routes of type local, so this route is never announced.

Ours are recognised exactly: table local, type local, protocol SERVING_PROTOCOL, the
configured interface, the address with its prefix length. The kernel's own local
route for an address on `lo` has protocol kernel and is never touched; deleting the
address does not delete ours (checked in tests/netns). Ours is appended
(NLM_F_APPEND, as the kernel adds its own), so it can join an address already on
`lo`; a plain create would be refused with EEXIST because of the kernel's route.

The messages are pyroute2's `rtmsg`, sent through netlink_socket.py.
"""

import errno
import ipaddress
import socket
from typing import Any

from pgpool_anycast_hook.addresses import Address
from pgpool_anycast_hook.errors import HookError
from pgpool_anycast_hook.netlink_socket import (
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    RouteSocket,
    interface_index,
    netlink_error,
    pyroute2_message,
)

SERVING_PROTOCOL = 177  # unassigned in /etc/iproute2/rt_protos; shown as "proto 177"
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTN_LOCAL = 2
RT_TABLE_LOCAL = 255
RT_SCOPE_HOST = 254


class ServingRoutes:
    """Our local routes on one interface, read and changed with pyroute2's rtmsg."""

    already_present = errno.EEXIST
    already_absent = errno.ESRCH

    def __init__(self, route: RouteSocket, interface: str) -> None:
        self._route = route
        self._interface = interface
        self._index = interface_index(interface)
        self._rtmsg = pyroute2_message("pyroute2.netlink.rtnl.rtmsg", "rtmsg")

    def current(self) -> set[Address]:
        """Every serving route (protocol SERVING_PROTOCOL, type local) on the interface."""
        found: set[Address] = set()
        for chunk in self._route.dump(self._rtmsg(), RTM_GETROUTE, RTM_NEWROUTE):
            message = self._rtmsg(chunk)
            message.decode()
            if message["type"] != RTN_LOCAL or message["proto"] != SERVING_PROTOCOL:
                continue
            table = message.get_attr("RTA_TABLE") or message["table"]
            destination = message.get_attr("RTA_DST")
            if table != RT_TABLE_LOCAL or message.get_attr("RTA_OIF") != self._index:
                continue
            if destination:
                found.add(ipaddress.ip_interface(f"{destination}/{message['dst_len']}"))
        return found

    def add(self, address: Address) -> int:
        return self._change(RTM_NEWROUTE, address)

    def remove(self, address: Address) -> int:
        return self._change(RTM_DELROUTE, address)

    def error(self, code: int, action: str, address: Address) -> HookError:
        return netlink_error(code, f"{action} the serving route of {address}", self._interface)

    def _change(self, kind: int, address: Address) -> int:
        """RTM_NEWROUTE (appended) or RTM_DELROUTE for exactly this route; the errno."""
        message = serving_route_message(self._rtmsg, self._index, address)
        flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_APPEND if kind == RTM_NEWROUTE else 0)
        return self._route.request(message, kind, flags)


def serving_route_message(rtmsg: Any, index: int, address: Address) -> Any:
    """The rtmsg for exactly our serving route of `address` (the hook's and the guard's)."""
    message = rtmsg()
    message["family"] = socket.AF_INET if address.version == 4 else socket.AF_INET6
    message["dst_len"] = address.network.prefixlen
    message["table"] = RT_TABLE_LOCAL
    message["proto"] = SERVING_PROTOCOL
    message["scope"] = RT_SCOPE_HOST
    message["type"] = RTN_LOCAL
    message["attrs"] = [
        ("RTA_DST", str(address.ip)),
        ("RTA_OIF", index),
        ("RTA_TABLE", RT_TABLE_LOCAL),
    ]
    return message
