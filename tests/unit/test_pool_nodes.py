"""SHOW POOL_NODES parsing, against what real pgpool versions printed.

The JSON files in tests/data/pool_nodes/ were recorded from real pgpool 4.3.5 (Debian 12)
and 4.6.1 (Debian 13) by scripts/record_pool_nodes.py; tables for 4.1/4.2 are written
by hand from the source survey in tests/data/pool_nodes/README.md, since no Debian
release ships those versions. Hypothesis then checks that nothing but a tuple or
PoolNodesError ever comes out, and that column order and letter case do not matter.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.pool_nodes import (
    MAX_CELL,
    MAX_ROWS,
    BackendNode,
    PoolNodesError,
    balanced_up,
    parse_pool_nodes,
    reported_primary,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "pool_nodes"
RECORDINGS = sorted(DATA.glob("pgpool-*.json"))

# situation (the file name after the version) -> (reported_primary, balanced_up)
EXPECTED_TABLES = {
    "all-up": (0, 2),
    "standby-down": (0, 1),
    "standby-attach-pending": (0, 1),  # pcp_attach_node returned; failback not done yet
    "standby-reattached": (0, 2),
    "primary-down-no-promotion": (None, 1),  # every row says "standby"
    "standby-promoted": (1, 1),
}
# situations where pgpool gave no table: a text that the error must contain
EXPECTED_ERRORS = {
    "during-primary-search": "timeout expired",
    "all-down-first-attempt": "executing failover on backend",
    "all-down": "all backend nodes are down, pgpool requires at least one valid node",
    "primary-down-socket-gone": "No such file or directory",
    "all-down-socket-gone": "No such file or directory",
    "promoted-socket-gone": "No such file or directory",
}
# the same query over TCP when the unix socket file had vanished
EXPECTED_OVER_TCP = {"primary-down-socket-gone": (None, 1)}

COLUMNS_41 = ["node_id", "hostname", "port", "status", "lb_weight", "role", "select_cnt",
              "load_balance_node", "replication_delay", "replication_state",
              "replication_sync_state", "last_status_change"]  # fmt: skip
COLUMNS_43 = ["node_id", "hostname", "port", "status", "pg_status", "lb_weight", "role",
              "pg_role", "select_cnt", "load_balance_node", "replication_delay",
              "replication_state", "replication_sync_state", "last_status_change"]  # fmt: skip


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def situation(path: Path) -> str:
    """pgpool-4.3.5-all-up.json -> all-up"""
    return path.stem.split("-", 2)[2]


def parse(data: dict[str, Any]) -> tuple[BackendNode, ...]:
    return parse_pool_nodes(data["columns"], data["rows"])


# -- the recordings ----------------------------------------------------------------


def test_recordings_cover_both_debian_versions() -> None:
    versions = {load(p)["pgpool"] for p in RECORDINGS}
    assert {"4.3.5", "4.6.1"} <= versions
    for version in versions:
        names = {situation(p) for p in RECORDINGS if load(p)["pgpool"] == version}
        assert {"all-up", "standby-down"} <= names, version


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recording_has_an_expectation(path: Path) -> None:
    data = load(path)
    assert path.name.startswith(f"pgpool-{data['pgpool']}-")
    assert situation(path) in EXPECTED_TABLES.keys() | EXPECTED_ERRORS.keys()
    assert ("columns" in data) == (situation(path) in EXPECTED_TABLES)


@pytest.mark.parametrize(
    "path", [p for p in RECORDINGS if situation(p) in EXPECTED_TABLES], ids=lambda p: p.stem
)
def test_recorded_table(path: Path) -> None:
    data = load(path)
    nodes = parse(data)
    assert [n.node_id for n in nodes] == [0, 1]
    assert data["columns"] == COLUMNS_43  # 4.3 to 4.7 print the same 14 columns
    assert all(n.lb_weight == 0.5 for n in nodes)
    assert all(n.pg_status in ("up", "down") and n.pg_role is not None for n in nodes)
    assert (reported_primary(nodes), balanced_up(nodes)) == EXPECTED_TABLES[situation(path)]


@pytest.mark.parametrize(
    "path", [p for p in RECORDINGS if situation(p) in EXPECTED_ERRORS], ids=lambda p: p.stem
)
def test_recorded_error(path: Path) -> None:
    data = load(path)
    assert data["error_class"].startswith("psycopg.")
    assert EXPECTED_ERRORS[situation(path)] in data["message"]
    if "over_tcp" in data:  # the unix socket file was gone: pgpool still answered over TCP
        nodes = parse(data["over_tcp"])
        assert (reported_primary(nodes), balanced_up(nodes)) == EXPECTED_OVER_TCP[situation(path)]


def test_recorded_values_in_detail() -> None:
    nodes = parse(load(DATA / "pgpool-4.3.5-standby-down.json"))
    assert nodes[1] == BackendNode(
        node_id=1, hostname="127.0.0.1", port="56131", status="down", role="standby",
        lb_weight=0.5, pg_status="down", pg_role="unknown", replication_delay="0",
    )  # fmt: skip


# -- other versions and modes, from the source survey --------------------------------


def test_pgpool_41_and_42_columns() -> None:
    """No pg_status/pg_role before 4.3; replication_delay in bytes."""
    rows = [
        ["0", "/var/run/postgresql", "5432", "up", "0.333333", "primary", "12", "false", "0",
         "", "", "2024-01-02 03:04:05"],
        ["1", "db-b", "5432", "waiting", "0.666667", "standby", "3", "true", "4096",
         "streaming", "async", "2024-01-02 03:04:05"],
        ["2", "db-c", "5432", "quarantine", "0.000000", "standby", "0", "false", "0",
         "", "", "2024-01-02 03:04:05"],
    ]  # fmt: skip
    nodes = parse_pool_nodes(COLUMNS_41, rows)
    assert nodes[1] == BackendNode(
        node_id=1, hostname="db-b", port="5432", status="waiting", role="standby",
        lb_weight=0.666667, pg_status=None, pg_role=None, replication_delay="4096",
    )  # fmt: skip
    assert reported_primary(nodes) == 0
    assert balanced_up(nodes) == 2  # the quarantined node is not usable


def test_time_based_replication_delay_is_kept_as_printed() -> None:
    """4.4+ with delay_threshold_by_time: "%.6f second(s)"."""
    rows = [
        ["0", "a", "5432", "up", "up", "0.500000", "primary", "primary", "0", "false", "0",
         "", "", "x"],
        ["1", "b", "5432", "up", "up", "0.500000", "standby", "standby", "0", "true",
         "2.500000 seconds", "streaming", "async", "x"],
    ]  # fmt: skip
    nodes = parse_pool_nodes(COLUMNS_43, rows)
    assert nodes[1].replication_delay == "2.500000 seconds"


@pytest.mark.parametrize("roles", [("master", "slave"), ("main", "replica")])
def test_other_clustering_modes_have_no_primary(roles: tuple[str, str]) -> None:
    """4.1 prints master/slave, 4.2+ main/replica outside streaming replication."""
    rows = [
        ["0", "a", "5432", "up", "1.000000", roles[0], "0", "true", "0", "", "", "x"],
        ["1", "b", "5432", "up", "0.000000", roles[1], "0", "false", "0", "", "", "x"],
    ]
    nodes = parse_pool_nodes(COLUMNS_41, rows)
    assert reported_primary(nodes) is None
    assert balanced_up(nodes) == 1


# -- decisions on hand-made nodes -----------------------------------------------------


def node(node_id: int, status: str, role: str, weight: float | None = 0.5) -> BackendNode:
    return BackendNode(node_id, "h", "5432", status, role, lb_weight=weight)


def test_primary_must_be_usable() -> None:
    assert reported_primary([node(0, "waiting", "primary"), node(1, "up", "standby")]) == 0
    assert reported_primary([node(0, "down", "primary"), node(1, "up", "standby")]) is None
    assert reported_primary([node(0, "quarantine", "primary")]) is None
    assert reported_primary([]) is None


def test_two_primaries_are_refused() -> None:
    assert reported_primary([node(0, "up", "primary"), node(1, "up", "primary")]) is None
    assert reported_primary([node(0, "down", "primary"), node(1, "up", "primary")]) is None


def test_balanced_up_counts_weight_and_status() -> None:
    nodes = [node(0, "up", "primary", 0.0), node(1, "up", "standby", None),
             node(2, "waiting", "standby"), node(3, "down", "standby"),
             node(4, "unused", "standby", 0.0)]  # fmt: skip
    assert balanced_up(nodes) == 2


# -- what the parser accepts and refuses ---------------------------------------------


def row43(node_id: str | None = "0", **cells: str | None) -> list[str | None]:
    values: dict[str, str | None] = {name: "" for name in COLUMNS_43}
    values.update(node_id=node_id, status="up", role="primary", lb_weight="0.500000",
                  pg_status="up", pg_role="primary", replication_delay="0")  # fmt: skip
    values.update(cells)
    return [values[name] for name in COLUMNS_43]


def test_values_are_stripped_and_lower_cased() -> None:
    [parsed] = parse_pool_nodes(
        COLUMNS_43, [row43(" 7 ", status=" UP ", role="Primary", pg_role="PRIMARY ")]
    )
    assert (parsed.node_id, parsed.status, parsed.role, parsed.pg_role) == (
        7,
        "up",
        "primary",
        "primary",
    )


def test_null_optional_cells() -> None:
    [parsed] = parse_pool_nodes(
        COLUMNS_43,
        [row43(hostname=None, port=None, lb_weight=None, pg_status=None, replication_delay=None)],
    )
    assert (parsed.hostname, parsed.port, parsed.lb_weight, parsed.pg_status) == (
        "",
        "",
        None,
        None,
    )
    assert parsed.replication_delay is None


def test_minimal_columns() -> None:
    nodes = parse_pool_nodes(["ROLE", "Status", "node_id"], [["standby", "up", "3"]])
    assert nodes == (BackendNode(3, "", "", "up", "standby"),)


def test_weight_of_all_zero_weights_is_zero() -> None:
    """Every backend_weight 0: pgpool divides 0 by 0 and prints nan."""
    for text in ("nan", "-nan", "NaN"):
        [parsed] = parse_pool_nodes(COLUMNS_43, [row43(lb_weight=text)])
        assert parsed.lb_weight == 0.0


@pytest.mark.parametrize(
    ("columns", "rows", "message"),
    [
        (COLUMNS_43[1:], [row43()[1:]], "no column 'node_id'"),
        (["node_id", "status"], [["0", "up"]], "no column 'role'"),
        (
            ["node_id", "status", "role", "ROLE"],
            [["0", "up", "primary", "x"]],
            "'role' appears twice",
        ),
        (COLUMNS_43, [row43("x")], "row 0: node_id 'x'"),
        (COLUMNS_43, [row43("-1")], "node_id '-1'"),
        (COLUMNS_43, [row43("128")], "node_id '128'"),
        (COLUMNS_43, [row43("\u0661")], "node_id"),  # an Arabic-Indic digit one
        (COLUMNS_43, [row43(None)], "row 0: node_id is NULL"),
        (COLUMNS_43, [row43(status=None)], "row 0: status is NULL"),
        (COLUMNS_43, [row43("1"), row43("1")], "row 1: node_id 1 appears twice"),
        (COLUMNS_43, [row43(str(i)) for i in range(MAX_ROWS + 1)], "129 rows"),
        (COLUMNS_43, [row43(hostname="h" * (MAX_CELL + 1))], "row 0, column 1"),
        (COLUMNS_43, [row43(port=5432)], "row 0, column 2: not a string"),  # type: ignore[arg-type]
        (COLUMNS_43, [row43()[:-1]], "row 0: 13 cells for 14 columns"),
        (COLUMNS_43, [row43(lb_weight="1_0")], "lb_weight '1_0'"),
        (COLUMNS_43, [row43(lb_weight="inf")], "lb_weight 'inf'"),
        (COLUMNS_43, ["0 up primary"], "row 0: a str"),
        ([*COLUMNS_43[:-1], 5], [row43()], "column 13: name"),
        ("node_id", [], "columns are a str"),
    ],
)
def test_refused(columns: Any, rows: Any, message: str) -> None:
    with pytest.raises(PoolNodesError, match=message.replace("(", r"\(")):
        parse_pool_nodes(columns, rows)


def test_all_128_nodes_are_fine() -> None:
    nodes = parse_pool_nodes(COLUMNS_43, [row43(str(i), role="standby") for i in range(MAX_ROWS)])
    assert len(nodes) == MAX_ROWS and reported_primary(nodes) is None


# -- hypothesis ------------------------------------------------------------------------

NAMES = st.sampled_from([*COLUMNS_43, "NODE_ID", "Role", " status "])
WORDS = st.sampled_from(["0", "1", "127", "128", "up", "down", "waiting", "primary", "standby",
                         "0.500000", "nan", "", " ", "1e5", "٣"])  # fmt: skip
CELLS = st.one_of(st.none(), WORDS, st.text(max_size=12), st.text(min_size=250, max_size=260),
                  st.integers(), st.floats(), st.binary(max_size=4))  # fmt: skip


@st.composite
def tables(draw: st.DrawFn) -> tuple[Any, Any]:
    """Mostly table-shaped input, with every kind of wrong thing mixed in."""
    columns = draw(st.one_of(
        st.lists(st.one_of(NAMES, st.text(max_size=10), st.integers()), max_size=16),
        st.permutations(COLUMNS_43),
        st.text(max_size=5),
        st.none(),
    ))  # fmt: skip
    width = len(columns) if isinstance(columns, list) else 3
    row = st.one_of(
        st.lists(CELLS, min_size=width, max_size=width),
        st.lists(CELLS, max_size=16),
        st.tuples(CELLS, CELLS, CELLS),
        CELLS,
    )
    rows = draw(st.one_of(st.lists(row, max_size=8), st.tuples(row), CELLS))
    return columns, rows


GOOD = {
    "node_id": st.sampled_from(["0", "1", "2", " 3 "]),
    "status": st.sampled_from(["up", "waiting", "down", "unused", "quarantine", "UP"]),
    "role": st.sampled_from(["primary", "standby", "main", "replica", "Primary"]),
    "lb_weight": st.sampled_from(["0.500000", "0.000000", "1.000000", "nan", None]),
    "pg_status": st.sampled_from(["up", "down", "unknown", None]),
    "pg_role": st.sampled_from(["primary", "standby", "unknown", None]),
}


@st.composite
def near_tables(draw: st.DrawFn) -> tuple[Any, Any]:
    """Real column sets in any order, rows mostly right, some with one wrong cell."""
    columns = draw(st.permutations(draw(st.sampled_from([COLUMNS_41, COLUMNS_43]))))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = [draw(GOOD.get(name, WORDS)) for name in columns]
        if draw(st.booleans()):
            row[draw(st.integers(0, len(row) - 1))] = draw(CELLS)
        rows.append(row)
    return columns, rows


@given(st.one_of(near_tables(), tables()))
def test_any_input_gives_nodes_or_pool_nodes_error(table: tuple[Any, Any]) -> None:
    columns, rows = table
    try:
        nodes = parse_pool_nodes(columns, rows)
    except PoolNodesError as error:
        assert str(error)
        return
    assert isinstance(nodes, tuple)
    assert all(isinstance(n, BackendNode) and 0 <= n.node_id < MAX_ROWS for n in nodes)
    assert len({n.node_id for n in nodes}) == len(nodes)
    assert reported_primary(nodes) in (None, *(n.node_id for n in nodes))
    assert 0 <= balanced_up(nodes) <= len(nodes)


LOWER_CASED = ("status", "role", "pg_status", "pg_role")
TABLE_RECORDINGS = [load(p) for p in RECORDINGS if situation(p) in EXPECTED_TABLES]


@given(st.sampled_from(TABLE_RECORDINGS), st.randoms(use_true_random=False))
def test_column_order_and_case_do_not_matter(data: dict[str, Any], rnd: Any) -> None:
    order = list(range(len(data["columns"])))
    rnd.shuffle(order)
    columns = [data["columns"][i].upper() for i in order]
    shouting = {n for n, name in enumerate(data["columns"]) if name in LOWER_CASED}
    rows = [
        [row[i].upper() if i in shouting and row[i] is not None else row[i] for i in order]
        for row in data["rows"]
    ]
    assert parse_pool_nodes(columns, rows) == parse(data)
