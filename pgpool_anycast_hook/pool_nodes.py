"""pgpool's own view of its backends: the rows of `SHOW POOL_NODES`, parsed. Pure.

The guard asks pgpool itself which backend is the primary and which are up, instead
of trusting a fixed node id: after a promotion pgpool knows the new primary, and
pgpool_status never records roles. Columns are found by name, because every pgpool
version from 4.1 to 4.7 has its own set (tests/data/pool_nodes records real ones).
"""

from collections.abc import Sequence
from typing import NamedTuple


class PoolNodesError(ValueError):
    """The answer is not a POOL_NODES table this module can read."""


class BackendNode(NamedTuple):
    node_id: int
    hostname: str
    port: str
    status: str  # pgpool's view, lower case: up, waiting, down, unused, quarantine
    role: str  # lower case: primary, standby (other clustering modes: main, replica)
    lb_weight: float | None = None
    pg_status: str | None = None  # 4.3+: what PostgreSQL itself reports
    pg_role: str | None = None  # 4.3+
    replication_delay: str | None = None  # as pgpool prints it (bytes, or seconds in 4.5+)


def parse_pool_nodes(
    columns: Sequence[str], rows: Sequence[Sequence[str | None]]
) -> tuple[BackendNode, ...]:
    raise NotImplementedError


def usable(node: BackendNode) -> bool:
    """Can pgpool send queries to it? (up, or waiting for its first connection)"""
    return node.status in ("up", "waiting")


def reported_primary(nodes: Sequence[BackendNode]) -> int | None:
    raise NotImplementedError


def balanced_up(nodes: Sequence[BackendNode]) -> int:
    raise NotImplementedError
