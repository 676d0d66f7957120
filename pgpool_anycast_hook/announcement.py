"""Announce or withdraw the configured addresses, with the optional serving routes.

Order matters for clients. Announcing: serving routes first, then the addresses,
so the node accepts packets before any router sends them. Withdrawing: the
addresses first (FRR withdraws the route), then the serving routes, unless the
caller keeps them to go on serving while the routers converge (`drain`).

Every withdrawal first writes the withdrawal mark, and an announcement that a
withdrawal overlapped is taken back (run_lock.py says why).

Changes are reported as "+ADDR" / "-ADDR" for addresses and "+route:ADDR" /
"-route:ADDR" for serving routes, the form the log line uses.
"""

from typing import NamedTuple

from pgpool_anycast_hook import addresses
from pgpool_anycast_hook.addresses import AddressTable
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.netlink_socket import ensure_absent, ensure_present, held
from pgpool_anycast_hook.run_lock import mark_withdrawal, withdrawal_mark
from pgpool_anycast_hook.run_log import RunLog


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


def announce(config: Config, dry_run: bool, mark: bytes, log: RunLog) -> list[str]:
    """Add what is missing; take it back if a withdrawal overlapped (run_lock.py).

    `mark` is the withdrawal mark read before this run observed anything.
    """
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
    if not dry_run and withdrawal_mark(config.state_dir) != mark:
        log.set(overlap="a withdrawal ran meanwhile; taken back")
        changed += _remove(config, dry_run, keep_serving=False)
    return changed


def withdraw(config: Config, dry_run: bool, keep_serving: bool = False) -> list[str]:
    """Mark the withdrawal (so that no overlapping announcement survives it), then remove."""
    if not dry_run:
        mark_withdrawal(config.state_dir)
    return _remove(config, dry_run, keep_serving)


def _remove(config: Config, dry_run: bool, keep_serving: bool) -> list[str]:
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


def follow(config: Config, present: bool, dry_run: bool, mark: bytes, log: RunLog) -> list[str]:
    """Announce or withdraw, as the desired state says."""
    return announce(config, dry_run, mark, log) if present else withdraw(config, dry_run)


def changed_field(changed: list[str]) -> str:
    return ",".join(changed) or "none"
