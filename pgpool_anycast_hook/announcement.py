"""Announce or withdraw the configured addresses, with the optional serving routes.

Order matters for clients. Announcing: serving routes first, then the addresses,
so the node accepts packets before any router sends them. Withdrawing: the
addresses first (FRR withdraws the route), then the serving routes, unless the
caller keeps them to go on serving while the routers converge (`drain`).

Changes are reported as "+ADDR" / "-ADDR" for addresses and "+route:ADDR" /
"-route:ADDR" for serving routes, the form the log line uses.
"""

from typing import NamedTuple

from pgpool_anycast_hook import addresses
from pgpool_anycast_hook.addresses import AddressTable
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.netlink_socket import ensure_absent, ensure_present, held


class Presence(NamedTuple):
    addresses: dict[addresses.Address, bool]
    serving_routes: dict[addresses.Address, bool] | None  # None: serving_route is off

    def state(self) -> str:
        """'present' (everything), 'absent' (nothing) or 'partial'."""
        flags = list(self.addresses.values())
        if self.serving_routes is not None:
            flags += list(self.serving_routes.values())
        if flags and all(flags):
            return "present"
        if not any(flags):
            return "absent"
        return "partial"


def actual(config: Config) -> Presence:
    on_interface = held(AddressTable, config.interface, config.addresses)
    routes = None
    if config.serving_route:
        from pgpool_anycast_hook import serving_routes

        routes = held(serving_routes.ServingRoutes, config.interface, config.addresses)
    return Presence(on_interface, routes)


def announce(config: Config, dry_run: bool) -> list[str]:
    changed: list[str] = []
    if config.serving_route:
        from pgpool_anycast_hook import serving_routes

        added = ensure_present(
            serving_routes.ServingRoutes, config.interface, config.addresses, dry_run
        )
        changed += [f"+route:{a}" for a in added]
    changed += [
        f"+{a}" for a in ensure_present(AddressTable, config.interface, config.addresses, dry_run)
    ]
    return changed


def withdraw(config: Config, dry_run: bool, keep_serving: bool = False) -> list[str]:
    changed = [
        f"-{a}" for a in ensure_absent(AddressTable, config.interface, config.addresses, dry_run)
    ]
    if config.serving_route and not keep_serving:
        from pgpool_anycast_hook import serving_routes

        removed = ensure_absent(
            serving_routes.ServingRoutes, config.interface, config.addresses, dry_run
        )
        changed += [f"-route:{a}" for a in removed]
    return changed


def follow(config: Config, present: bool, dry_run: bool) -> list[str]:
    """Announce or withdraw, as the desired state says."""
    return announce(config, dry_run) if present else withdraw(config, dry_run)


def changed_field(changed: list[str]) -> str:
    return ",".join(changed) or "none"
