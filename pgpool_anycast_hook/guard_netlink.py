"""The guard's kernel operations, one short function each, through pyroute2's IPRoute.

The guard pays its imports once, so it uses pyroute2's own API (the one-shot hook
keeps its lean transport in netlink_socket.py for start-up time). Addresses carry
a lease: valid_lft = preferred_lft = `lease` seconds, set on every renewal with
RTM_NEWADDR and NLM_F_REPLACE, so if the guard stops renewing (killed, stopped,
wedged, its host's systemd stuck) the kernel removes them and the routing daemon
withdraws the route. The messages are built as ifaddrmsg/rtmsg with explicit
attributes, because IPRoute.addr() of pyroute2 0.7 drops the lifetimes; they are
the same messages the hook sends (addresses.address_message,
serving_routes.serving_route_message).

Netlink errors become HookErrors in one place: netlink_socket.netlink_error.
"""

import errno
from collections.abc import Iterable
from typing import Any

from pgpool_anycast_hook.addresses import address_message
from pgpool_anycast_hook.config import Address
from pgpool_anycast_hook.netlink_socket import netlink_error
from pgpool_anycast_hook.serving_routes import serving_route_message


def open_route() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def interface_index(ipr: Any, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        from pgpool_anycast_hook.errors import InterfaceMissing

        raise InterfaceMissing(f"interface {name!r} does not exist")
    return int(found[0])


def _request(ipr: Any, message: Any, kind: int, flags: int) -> int:
    """Send one change; 0 when the kernel acked it, else the errno."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.nlm_request(message, msg_type=kind, msg_flags=NLM_F_REQUEST | NLM_F_ACK | flags)
    except NetlinkError as error:
        return int(error.code)
    return 0


def _address_message(index: int, address: Address, lease: float | None) -> Any:
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    return address_message(ifaddrmsg, index, address, lease)


def lease_address(ipr: Any, index: int, interface: str, address: Address, lease: float) -> None:
    """Add the address, or renew it, with a lease of `lease` seconds."""
    from pyroute2.netlink import NLM_F_CREATE, NLM_F_REPLACE
    from pyroute2.netlink.rtnl import RTM_NEWADDR

    message = _address_message(index, address, lease)
    code = _request(ipr, message, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE)
    if code:
        raise netlink_error(code, f"add {address}", interface)


def remove_address(ipr: Any, index: int, interface: str, address: Address) -> bool:
    """Remove the address; False if it was gone already."""
    from pyroute2.netlink.rtnl import RTM_DELADDR

    code = _request(ipr, _address_message(index, address, None), RTM_DELADDR, 0)
    if code == errno.EADDRNOTAVAIL:
        return False
    if code:
        raise netlink_error(code, f"remove {address}", interface)
    return True


def present_addresses(ipr: Any, index: int, wanted: Iterable[Address]) -> dict[Address, bool]:
    """Which of `wanted` the interface holds, with their exact prefix length (one dump)."""
    import ipaddress

    have = set()
    for message in ipr.get_addr(index=index):
        text = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
        if text:
            have.add(ipaddress.ip_interface(f"{text}/{message['prefixlen']}"))
    return {address: address in have for address in wanted}


def _serving_route(index: int, address: Address) -> Any:
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    return serving_route_message(rtmsg, index, address)


def add_serving_route(ipr: Any, index: int, interface: str, address: Address) -> bool:
    """Add the serving route (serving_routes.py says why); False if it was there."""
    from pyroute2.netlink import NLM_F_APPEND, NLM_F_CREATE
    from pyroute2.netlink.rtnl import RTM_NEWROUTE

    code = _request(ipr, _serving_route(index, address), RTM_NEWROUTE, NLM_F_CREATE | NLM_F_APPEND)
    if code == errno.EEXIST:
        return False
    if code:
        raise netlink_error(code, f"add the serving route of {address}", interface)
    return True


def remove_serving_route(ipr: Any, index: int, interface: str, address: Address) -> bool:
    """Remove the serving route; False if it was gone already."""
    from pyroute2.netlink.rtnl import RTM_DELROUTE

    code = _request(ipr, _serving_route(index, address), RTM_DELROUTE, 0)
    if code == errno.ESRCH:
        return False
    if code:
        raise netlink_error(code, f"remove the serving route of {address}", interface)
    return True
