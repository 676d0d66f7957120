"""metrics.render: the guard's snapshot as Prometheus text, read back with a parser.

Every test parses the rendered text with prometheus_client's own parser and checks
values, so a test fails on a file node_exporter could not read as much as on a wrong
number. Label values are untrusted (pgpool's host names): hostile ones must come
back intact and never add a line or a series. tests/netns/test_metrics_textfile.py
reads the same files through the real node_exporter.
"""

import math
import os
import stat
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pgpool_anycast_hook.guard_state import Phase
from pgpool_anycast_hook.metrics import (
    VIEW_STATES,
    AddressMetric,
    MetricsSnapshot,
    render,
    replication_delay,
    write,
)
from pgpool_anycast_hook.pool_nodes import BackendNode

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
P = "pgpool_anycast_"
ADDRESS = "198.18.2.0/32"
OTHER = "198.18.2.7/32"
PRIMARY = BackendNode(0, "pg0", "5432", "up", "primary", 0.5, "up", "primary", "0")
STANDBY = BackendNode(1, "pg1", "5432", "up", "standby", 0.5, "up", "standby", "1024")

ANNOUNCED = MetricsSnapshot(
    heartbeat=1700000000.25,
    phase=Phase.ANNOUNCED.value,
    desired=True,
    reason_code="serves",
    hold=False,
    hold_down_left=0.0,
    addresses=(AddressMetric(ADDRESS, True, 9.5), AddressMetric(OTHER, True, 9.0)),
    transitions={"serves": 2, "primary-down": 1},
    probe_ok=True,
    probe_latency=0.0015,
    view_state="KNOWN",
    query_latency=0.004,
    backends=(PRIMARY, STANDBY),
    primary_node_id=0,
)
STARTING = MetricsSnapshot(
    heartbeat=1700000001.0,
    phase=Phase.WITHDRAWN.value,
    desired=False,
    reason_code="view-lost",
    hold=True,
    hold_down_left=3.5,
    addresses=(AddressMetric(ADDRESS, False, 0.0),),
    transitions={},
    probe_ok=None,
    probe_latency=None,
    view_state="INIT",
    query_latency=None,
    backends=(),
    primary_node_id=None,
)


def parse(text: bytes) -> tuple[Series, dict[str, str]]:
    """(every sample by name and labels, every family's type by name)."""
    series: Series = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in series, f"duplicate series {key}"
            series[key] = sample.value
    return series, types


def one(series: Series, name: str, **labels: str) -> float:
    return series[(P + name, frozenset(labels.items()))]


def names(series: Series) -> set[str]:
    return {name for name, _labels in series}


def test_an_announced_guard() -> None:
    series, types = parse(render(ANNOUNCED))
    assert one(series, "announced", address=ADDRESS) == 1.0
    assert one(series, "announced", address=OTHER) == 1.0
    assert one(series, "lease_seconds_left", address=ADDRESS) == 9.5
    assert one(series, "desired", reason="serves") == 1.0
    assert [k for k in series if k[0] == P + "desired"] == [
        (P + "desired", frozenset({("reason", "serves")}))
    ]
    assert one(series, "phase", phase="ANNOUNCED") == 1.0
    assert one(series, "hold") == 0.0
    assert one(series, "hold_down_seconds_left") == 0.0
    assert one(series, "heartbeat_timestamp_seconds") == 1700000000.25  # no precision lost
    assert one(series, "transitions_total", reason="serves") == 2.0
    assert one(series, "transitions_total", reason="primary-down") == 1.0
    assert types[P + "transitions"] == "counter"
    assert one(series, "probe_up") == 1.0
    assert one(series, "probe_latency_seconds") == 0.0015
    assert one(series, "pool_nodes_state", state="KNOWN") == 1.0
    assert one(series, "pool_nodes_latency_seconds") == 0.004
    labels = {"node_id": "1", "hostname": "pg1", "port": "5432", "status": "up"}
    labels |= {"role": "standby", "pg_status": "up", "pg_role": "standby"}
    assert one(series, "backend", **labels) == 1.0
    assert one(series, "backend_replication_delay_bytes", node_id="1") == 1024.0
    assert one(series, "backend_replication_delay_bytes", node_id="0") == 0.0
    assert one(series, "primary_node_id") == 0.0
    assert not [name for name in names(series) if name.endswith("_created")]
    assert all(name.startswith(P) for name in names(series))


def test_a_withdrawn_guard_before_its_first_probe() -> None:
    series, _types = parse(render(STARTING))
    assert one(series, "announced", address=ADDRESS) == 0.0
    assert one(series, "lease_seconds_left", address=ADDRESS) == 0.0
    assert one(series, "desired", reason="view-lost") == 0.0
    assert one(series, "hold") == 1.0
    assert one(series, "hold_down_seconds_left") == 3.5
    assert one(series, "pool_nodes_state", state="INIT") == 1.0
    assert one(series, "primary_node_id") == -1.0
    absent = {"probe_up", "probe_latency_seconds", "pool_nodes_latency_seconds", "backend",
              "backend_replication_delay_bytes", "transitions_total"}  # fmt: skip
    assert not names(series) & {P + name for name in absent}


def test_phase_and_view_state_are_one_hot() -> None:
    for phase in Phase:
        for view in VIEW_STATES:
            series, _types = parse(render(ANNOUNCED._replace(phase=phase.value, view_state=view)))
            phases = {p.value: one(series, "phase", phase=p.value) for p in Phase}
            assert phases == {p.value: float(p is phase) for p in Phase}
            views = {v: one(series, "pool_nodes_state", state=v) for v in VIEW_STATES}
            assert views == {v: float(v == view) for v in VIEW_STATES}


def test_a_failed_probe_without_latency() -> None:
    series, _types = parse(render(ANNOUNCED._replace(probe_ok=False, probe_latency=None)))
    assert one(series, "probe_up") == 0.0
    assert P + "probe_latency_seconds" not in names(series)


def test_hostile_label_values_come_back_intact_and_add_nothing() -> None:
    hostile = [
        'a"b',
        "back\\slash\\",
        "new\nline",
        '"} 1\npgpool_anycast_hold 1\n# TYPE x counter\nx{a="',
        "cr\rnul\0tab\t",
        "\\n not a newline",
        "ünïcødé \u2028 \x85 \ufeff",
        "",
    ]
    nodes = tuple(PRIMARY._replace(node_id=i, hostname=h, status=h) for i, h in enumerate(hostile))
    snapshot = ANNOUNCED._replace(
        backends=nodes, reason_code=hostile[3], transitions={h: 1 for h in hostile}
    )
    series, _types = parse(render(snapshot))
    hosts = {dict(labels)["hostname"] for name, labels in series if name == P + "backend"}
    assert hosts == set(hostile)
    assert one(series, "desired", reason=hostile[3]) == 1.0
    assert one(series, "hold") == 0.0  # the injected `hold 1` is only text in a label
    assert {dict(labels)["reason"] for name, labels in series if "transitions" in name} == set(
        hostile
    )
    assert "x" not in names(series)


def test_text_that_is_not_utf8_is_replaced() -> None:
    lone_surrogate = "pg\udcff0"  # what os.fsdecode makes of a stray byte
    snapshot = ANNOUNCED._replace(
        backends=(PRIMARY._replace(hostname=lone_surrogate),),
        addresses=(AddressMetric("a\udcff", True, 1.0), AddressMetric("a\udcfe", True, 2.0)),
        transitions={"r" + chr(0xDCFF): 1, "r" + chr(0xDCFE): 2, "r?": 4},
    )
    series, _types = parse(render(snapshot))  # two texts that both become "a?": one series
    assert one(series, "lease_seconds_left", address="a?") == 1.0  # the first
    assert one(series, "transitions_total", reason="r?") == 7.0  # a counter adds them up
    assert {dict(labels)["hostname"] for name, labels in series if name == P + "backend"} == {
        "pg?0"
    }


def test_every_backend_series_has_the_same_label_set() -> None:
    unknown = BackendNode(2, "pg2", "5432", "down", "standby")  # pgpool 4.2: no pg_* columns
    series, _types = parse(render(ANNOUNCED._replace(backends=(PRIMARY, unknown))))
    label_sets = {frozenset(dict(labels)) for name, labels in series if name == P + "backend"}
    assert label_sets == {
        frozenset({"node_id", "hostname", "port", "status", "role", "pg_status", "pg_role"})
    }
    assert one(series, "backend", node_id="2", hostname="pg2", port="5432", status="down",
               role="standby", pg_status="", pg_role="") == 1.0  # fmt: skip


def test_a_node_id_twice_gives_one_series() -> None:
    twice = (STANDBY, STANDBY._replace(hostname="other", replication_delay="5"))
    series, _types = parse(render(ANNOUNCED._replace(backends=twice)))
    backends = [labels for name, labels in series if name == P + "backend"]
    assert [dict(labels)["hostname"] for labels in backends] == ["pg1"]  # the first one
    assert one(series, "backend_replication_delay_bytes", node_id="1") == 1024.0


def test_replication_delay_in_bytes_or_seconds() -> None:
    assert replication_delay("0") == ("bytes", 0.0)
    assert replication_delay("123456") == ("bytes", 123456.0)
    assert replication_delay("0.100000 second") == ("seconds", 0.1)
    assert replication_delay("2.500000 seconds") == ("seconds", 2.5)
    for text in (None, "", "unknown", "-1", "nan", "inf", "12 parsecs", "0x10", "1 2"):
        assert replication_delay(text) is None, text
    seconds = STANDBY._replace(replication_delay="3.000000 seconds")
    unknown = PRIMARY._replace(replication_delay="unknown")
    series, _types = parse(render(ANNOUNCED._replace(backends=(unknown, seconds))))
    assert one(series, "backend_replication_delay_seconds", node_id="1") == 3.0
    delays = {name for name in names(series) if "replication_delay" in name}
    assert delays == {P + "backend_replication_delay_seconds"}


def test_write_replaces_the_file_with_mode_0644_and_never_follows_a_link() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "metrics.prom")
        victim = Path(directory, "victim")
        victim.write_bytes(b"untouched\n")
        os.symlink(victim, path)  # planted at the name: replaced, not written through
        write(path, ANNOUNCED)
        assert victim.read_bytes() == b"untouched\n"
        assert not os.path.islink(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        assert Path(path).read_bytes() == render(ANNOUNCED)
        write(path, STARTING)
        assert Path(path).read_bytes() == render(STARTING)
        assert sorted(os.listdir(directory)) == ["metrics.prom", "victim"]  # no leftovers


any_text = st.text(st.characters(blacklist_categories=()), max_size=40)  # surrogates too
any_number = st.floats(allow_nan=True, allow_infinity=True)
maybe_number = st.none() | any_number
backends = st.builds(
    BackendNode,
    node_id=st.integers(-(2**63), 2**63),
    hostname=any_text,
    port=any_text,
    status=any_text,
    role=any_text,
    lb_weight=st.none() | any_number,
    pg_status=st.none() | any_text,
    pg_role=st.none() | any_text,
    replication_delay=st.none() | any_text | st.floats().map(str),
)
snapshots = st.builds(
    MetricsSnapshot,
    heartbeat=any_number,
    phase=any_text | st.sampled_from([p.value for p in Phase]),
    desired=st.booleans(),
    reason_code=any_text,
    hold=st.booleans(),
    hold_down_left=any_number,
    addresses=st.lists(st.builds(AddressMetric, any_text, st.booleans(), any_number)).map(tuple),
    transitions=st.dictionaries(any_text, st.integers(0, 2**53)),
    probe_ok=st.none() | st.booleans(),
    probe_latency=maybe_number,
    view_state=any_text | st.sampled_from(VIEW_STATES),
    query_latency=maybe_number,
    backends=st.lists(backends, max_size=6).map(tuple),
    primary_node_id=st.none() | st.integers(-(2**31), 2**31),
)


@given(snapshot=snapshots)
def test_any_snapshot_renders_to_text_that_parses(snapshot: MetricsSnapshot) -> None:
    text = render(snapshot)
    series, _types = parse(text)  # asserts that no series comes twice
    assert one(series, "hold") == float(snapshot.hold)
    assert sum(one(series, "phase", phase=p.value) for p in Phase) <= 1.0
    backends = [dict(labels) for name, labels in series if name == P + "backend"]
    assert len(backends) == len({node.node_id for node in snapshot.backends})
    for labels in backends:
        first = next(n for n in snapshot.backends if str(n.node_id) == labels["node_id"])
        want = first.hostname.encode("utf-8", "replace").decode("utf-8")
        assert labels["hostname"] == want
    heartbeat = one(series, "heartbeat_timestamp_seconds")
    assert heartbeat == snapshot.heartbeat or (
        math.isnan(heartbeat) and math.isnan(snapshot.heartbeat)
    )


def test_the_postgresql_hosts_role() -> None:
    """serve = "postgresql": the role's state, primary or not, the query's latency."""
    snapshot = ANNOUNCED._replace(probe_ok=None, view_state="OFF", backends=(),
                                  primary_node_id=None, role_state="STALE",
                                  postgresql_primary=True, role_latency=0.002)  # fmt: skip
    series, _ = parse(render(snapshot))
    assert one(series, "postgresql_state", state="STALE") == 1.0
    assert one(series, "postgresql_state", state="KNOWN") == 0.0
    assert (P + "postgresql_state", frozenset({("state", "OFF")})) not in series
    assert one(series, "postgresql_primary") == 1.0
    assert one(series, "postgresql_latency_seconds") == 0.002
    lost, _ = parse(render(snapshot._replace(role_state="LOST", postgresql_primary=None)))
    assert one(lost, "postgresql_state", state="LOST") == 1.0
    assert P + "postgresql_primary" not in names(lost)  # no answer in force: no claim


def test_a_balancer_has_no_postgresql_series() -> None:
    series, _ = parse(render(ANNOUNCED))
    assert not [name for name in names(series) if name.startswith(P + "postgresql")]
