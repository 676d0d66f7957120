"""pgpool's own view of its backends: the rows of `SHOW POOL_NODES`, parsed. Pure.

The guard asks pgpool itself which backend is the primary and which are up, instead
of trusting a fixed node id: after a promotion pgpool knows the new primary, and
pgpool_status never records roles. Columns are found by name, because every pgpool
version from 4.1 to 4.7 has its own set (tests/data/pool_nodes records real ones and
its README lists the sets, values and sources).

The answer comes from another process over a socket, so it is checked, and bounded, before
anything believes it: a table this module cannot read raises PoolNodesError (and nothing
else), naming the column or row, rather than yield a half-right answer.
"""

import re
from collections.abc import Sequence
from typing import NamedTuple

MAX_ROWS = 128  # pgpool's MAX_NUM_BACKENDS: node ids are 0..127
MAX_COLUMNS = 64  # pgpool 4.3-4.7 print 14
MAX_CELL = 256  # the longest real cell is a hostname: at most 254 characters
REQUIRED = ("node_id", "status", "role")
OPTIONAL = ("hostname", "port", "lb_weight", "pg_status", "pg_role", "replication_delay")
NODE_ID = re.compile(r"[0-9]{1,3}")
# "%f" of the normalised weight: "0.500000". 0/0 (every weight 0) prints "nan" or "-nan".
WEIGHT = re.compile(r"[0-9]{1,20}(\.[0-9]{0,20})?")
NOT_A_NUMBER = ("nan", "-nan")


class PoolNodesError(ValueError):
    """The answer is not a POOL_NODES table this module can read."""


class BackendNode(NamedTuple):
    node_id: int
    hostname: str
    port: str
    status: str  # pgpool's view, lower case: up, waiting, down, unused, quarantine, unknown
    role: str  # lower case: primary, standby (other clustering modes: main, replica)
    lb_weight: float | None = None
    pg_status: str | None = None  # 4.3+: what PostgreSQL itself reports
    pg_role: str | None = None  # 4.3+
    replication_delay: str | None = None  # as pgpool prints it (bytes, or seconds in 4.4+)


def parse_pool_nodes(
    columns: Sequence[str], rows: Sequence[Sequence[str | None]]
) -> tuple[BackendNode, ...]:
    """The rows as BackendNodes, in pgpool's order; PoolNodesError if unreadable."""
    index = column_index(columns)
    if not isinstance(rows, list | tuple):
        raise PoolNodesError(f"rows are a {type(rows).__name__}, not a list")
    if len(rows) > MAX_ROWS:
        raise PoolNodesError(f"{len(rows)} rows; pgpool has at most {MAX_ROWS} backends")
    nodes: list[BackendNode] = []
    seen: set[int] = set()
    for number, row in enumerate(rows):
        node = parse_row(index, len(columns), row, number)
        if node.node_id in seen:
            raise PoolNodesError(f"row {number}: node_id {node.node_id} appears twice")
        seen.add(node.node_id)
        nodes.append(node)
    return tuple(nodes)


def column_index(columns: Sequence[str]) -> dict[str, int]:
    """Lower-cased column name -> position; the required ones must be there, once each."""
    if not isinstance(columns, list | tuple):
        raise PoolNodesError(f"columns are a {type(columns).__name__}, not a list")
    if len(columns) > MAX_COLUMNS:
        raise PoolNodesError(f"{len(columns)} columns; expected at most {MAX_COLUMNS}")
    index: dict[str, int] = {}
    twice: set[str] = set()
    for position, name in enumerate(columns):
        if not isinstance(name, str) or len(name) > MAX_CELL:
            raise PoolNodesError(f"column {position}: name is not a short string")
        key = name.strip().lower()
        if key in index:
            twice.add(key)
        index.setdefault(key, position)
    for name in REQUIRED:
        if name not in index:
            raise PoolNodesError(f"no column {name!r} in {short(columns)}")
    used = twice & {*REQUIRED, *OPTIONAL}
    if used:
        raise PoolNodesError(f"column {sorted(used)[0]!r} appears twice")
    return index


def parse_row(
    index: dict[str, int], width: int, row: Sequence[str | None], number: int
) -> BackendNode:
    if not isinstance(row, list | tuple):
        raise PoolNodesError(f"row {number}: a {type(row).__name__}, not a list")
    if len(row) != width:
        raise PoolNodesError(f"row {number}: {len(row)} cells for {width} columns")
    for position, value in enumerate(row):
        if value is not None and (not isinstance(value, str) or len(value) > MAX_CELL):
            raise PoolNodesError(
                f"row {number}, column {position}: not a string of at most {MAX_CELL}"
            )
    node_id = required(index, row, "node_id", number)
    if not NODE_ID.fullmatch(node_id) or int(node_id) >= MAX_ROWS:
        raise PoolNodesError(f"row {number}: node_id {node_id!r} is not 0..{MAX_ROWS - 1}")
    return BackendNode(
        node_id=int(node_id),
        hostname=cell(index, row, "hostname") or "",
        port=cell(index, row, "port") or "",
        status=required(index, row, "status", number).lower(),
        role=required(index, row, "role", number).lower(),
        lb_weight=weight(cell(index, row, "lb_weight"), number),
        pg_status=lower(cell(index, row, "pg_status")),
        pg_role=lower(cell(index, row, "pg_role")),
        replication_delay=cell(index, row, "replication_delay"),
    )


def cell(index: dict[str, int], row: Sequence[str | None], name: str) -> str | None:
    """The stripped cell of column `name`; None if NULL or the version lacks the column."""
    position = index.get(name)
    value = None if position is None else row[position]
    return None if value is None else value.strip()


def required(index: dict[str, int], row: Sequence[str | None], name: str, number: int) -> str:
    value = cell(index, row, name)
    if value is None:
        raise PoolNodesError(f"row {number}: {name} is NULL")
    return value


def lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


def weight(value: str | None, number: int) -> float | None:
    """lb_weight as a number; None when absent. pgpool prints the node's share of the total."""
    if value is None or value == "":
        return None
    if value.lower() in NOT_A_NUMBER:
        return 0.0  # every backend_weight is 0: no node gets a share
    if not WEIGHT.fullmatch(value):
        raise PoolNodesError(f"row {number}: lb_weight {value!r} is not a number")
    return float(value)


def short(columns: Sequence[object]) -> str:
    text = ", ".join(str(c) for c in columns[:20])
    return f"[{text[:300]}{', ...' if len(columns) > 20 or len(text) > 300 else ''}]"


def usable(node: BackendNode) -> bool:
    """Can pgpool send queries to it? (up, or waiting for its first connection)"""
    return node.status in ("up", "waiting")


def reported_primary(nodes: Sequence[BackendNode]) -> int | None:
    """The id of the node pgpool calls primary, if it is usable; else None.

    In streaming replication mode pgpool prints "primary" for exactly the node whose id
    is its primary_node_id (every version 4.1-4.7), and "standby" for all others, even
    when it found no primary at all. Other clustering modes print main/replica and have
    no primary here. Two "primary" rows cannot come from one pgpool; if they ever do,
    its view is inconsistent and this refuses to guess: None.
    """
    primaries = [node for node in nodes if node.role == "primary"]
    if len(primaries) != 1 or not usable(primaries[0]):
        return None
    return primaries[0].node_id


def balanced_up(nodes: Sequence[BackendNode]) -> int:
    """How many usable nodes pgpool may load-balance reads to.

    A node counts when it is usable and its lb_weight is above 0, or unknown. Every
    version prints lb_weight as "%f" of the node's normalised share (weight / total
    weight), e.g. "0.500000" for two nodes of weight 1; "0.000000" for weight 0. This
    cannot see load_balance_mode itself.
    """
    return sum(
        1 for node in nodes if usable(node) and (node.lb_weight is None or node.lb_weight > 0)
    )
