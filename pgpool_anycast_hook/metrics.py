"""The guard's state as a Prometheus textfile, for node_exporter's textfile collector.

An operator's monitoring must see what the guard sees: whether each address is up
and how much of its lease is left, what the policy wants and why, the phase, the
hold, the last probe, and pgpool's own view of its backends. The guard hands a
MetricsSnapshot to `write` every tick; node_exporter serves the file on its next
scrape, so the guard opens no port and needs no HTTP server of its own.

prometheus_client renders the text: a fresh CollectorRegistry per snapshot with one
collector that yields the families, so there is no global registry, no process
metrics and no `_created` series. Its `write_to_textfile` is not used: it writes a
temporary file with a predictable name and follows a link planted there; the file
goes through safe_files.replace_file instead (mkstemp, fchmod, rename).

prometheus_client is only a Recommends of the package, so it is imported when a
snapshot is rendered, not when this module is: the guard can build snapshots (and
run) without it. Label values come from pgpool (host names, statuses) and are
untrusted: prometheus_client escapes backslashes, quotes and newlines, and text that
is not valid UTF-8 is replaced here, so no value can break the file.
"""

import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from pgpool_anycast_hook.guard_state import Phase
from pgpool_anycast_hook.pool_nodes import BackendNode
from pgpool_anycast_hook.pool_view import ViewState
from pgpool_anycast_hook.role_view import RoleState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric

PREFIX = "pgpool_anycast_"
MODE = 0o644  # node_exporter runs as its own user (prometheus)
VIEW_STATES = tuple(state.value for state in ViewState)  # pgpool's view: SHOW POOL_NODES
ROLE_STATES = tuple(state.value for state in RoleState)  # serve = "postgresql": role_view.py
T = TypeVar("T")
BACKEND_LABELS = ("node_id", "hostname", "port", "status", "role", "pg_status", "pg_role")


class AddressMetric(NamedTuple):
    address: str  # "198.18.2.0/32"
    announced: bool  # present on the interface now
    lease_left: float  # seconds until its lease runs out (0 when absent)


class MetricsSnapshot(NamedTuple):
    heartbeat: float  # time.time() when the guard wrote this
    phase: str  # guard_state.Phase value: ANNOUNCED, WITHDRAWN, HOLDING_DOWN, ADOPTING
    desired: bool  # policy.verdict(...).present
    reason_code: str  # short code of the verdict's reason: "serves", "primary-down", ...
    hold: bool  # the operator's maintenance hold (`disable`) is set
    hold_down_left: float  # seconds of flap damping left (0 when none runs)
    addresses: tuple[AddressMetric, ...]
    transitions: Mapping[str, int]  # phase changes since the guard started, by reason_code
    probe_ok: bool | None  # the last SSLRequest probe of pgpool; None before the first
    probe_latency: float | None  # its latency, seconds
    view_state: str  # pgpool's view (SHOW POOL_NODES): INIT, KNOWN, STALE, LOST, OFF
    query_latency: float | None  # the last SHOW POOL_NODES round trip, seconds
    backends: tuple[BackendNode, ...]  # from pool_nodes.py, as pgpool reported them last
    primary_node_id: int | None  # the primary pgpool reports (None: none)
    role_state: str = RoleState.OFF.value  # serve = "postgresql": the local server's role
    postgresql_primary: bool | None = None  # its last answer in force (None: none)
    role_latency: float | None = None  # the last SELECT pg_is_in_recovery() round trip


def _text(value: str) -> str:
    """A label value that encodes as UTF-8 (a lone surrogate becomes "?")."""
    return value.encode("utf-8", "replace").decode("utf-8")


def replication_delay(text: str | None) -> tuple[str, float] | None:
    """pgpool's replication_delay as (unit, value): ("bytes", n) for a plain number,
    ("seconds", s) for "0.100000 second(s)" (delay_threshold_by_time); else None."""
    if text is None:
        return None
    number, _, unit = text.strip().partition(" ")
    try:
        value = float(number)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    if unit == "":
        return "bytes", value
    if unit in ("second", "seconds"):
        return "seconds", value
    return None


def _unique(items: Iterable[T], key: Callable[[T], Hashable]) -> Iterator[T]:
    """The first item of each key. Two series with the same labels are a gathering error
    node_exporter logs at every scrape (it serves the first); pgpool's rows, and text
    that _text makes equal, are not trusted to be unique."""
    seen: set[Hashable] = set()
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            yield item


def _gauge(
    name: str, help_text: str, labels: tuple[str, ...] = (), value: float | None = None
) -> "GaugeMetricFamily":
    """A gauge family: with `value`, its one series without labels; else add_metric later."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(PREFIX + name, help_text, labels=labels)
    if value is not None:
        family.add_metric([], value)
    return family


def families(snapshot: MetricsSnapshot) -> Iterator["Metric"]:
    """Every metric family of one snapshot, in the order the file lists them."""
    yield from _guard_families(snapshot)
    yield from _probe_families(snapshot)
    yield from _pool_nodes_families(snapshot)
    yield from _role_families(snapshot)


def _guard_families(snapshot: MetricsSnapshot) -> Iterator["Metric"]:
    from prometheus_client.core import CounterMetricFamily

    announced = _gauge(
        "announced",
        "1 if the anycast address is on the interface now (the routing daemon announces it).",
        ("address",),
    )
    lease = _gauge(
        "lease_seconds_left",
        "Seconds until the address's lease runs out and the kernel removes it, unless the "
        "guard renews it (every tick while announced); 0 when absent.",
        ("address",),
    )
    for address in _unique(snapshot.addresses, lambda a: _text(a.address)):
        announced.add_metric([_text(address.address)], float(address.announced))
        lease.add_metric([_text(address.address)], address.lease_left)
    yield announced
    yield lease

    desired = _gauge(
        "desired",
        "1 if the guard's policy wants the addresses announced, 0 if it wants them withdrawn; "
        "reason is the policy's reason (serves, primary-down, hold, ...).",
        ("reason",),
    )
    desired.add_metric([_text(snapshot.reason_code)], float(snapshot.desired))
    yield desired

    phase = _gauge(
        "phase",
        "1 for the guard's current phase: ANNOUNCED, WITHDRAWN, HOLDING_DOWN (pgpool serves, "
        "flap damping runs) or ADOPTING (addresses kept, waiting for the first probe).",
        ("phase",),
    )
    for known in Phase:
        phase.add_metric([known.value], float(snapshot.phase == known.value))
    yield phase

    yield _gauge(
        "hold",
        "1 while an operator's maintenance hold is set (`pgpool-anycast-hook disable`; "
        "`enable` lifts it): the addresses stay withdrawn.",
        value=float(snapshot.hold),
    )
    yield _gauge(
        "hold_down_seconds_left",
        "Seconds of flap damping left before the guard announces again (0 when none runs).",
        value=snapshot.hold_down_left,
    )
    yield _gauge(
        "heartbeat_timestamp_seconds",
        "Unix time at which the guard wrote this file (every tick): an old one means the "
        "guard stopped or hangs.",
        value=snapshot.heartbeat,
    )
    transitions = CounterMetricFamily(
        PREFIX + "transitions",
        "Phase changes since the guard started, by the policy's reason at the time.",
        labels=("reason",),
    )
    counts: dict[str, float] = {}
    for reason, count in snapshot.transitions.items():
        counts[_text(reason)] = counts.get(_text(reason), 0.0) + count  # one series per label
    for label, total in sorted(counts.items()):
        transitions.add_metric([label], total)
    yield transitions


def _probe_families(snapshot: MetricsSnapshot) -> Iterator["Metric"]:
    """The last SSLRequest probe of pgpool; nothing before the first one."""
    if snapshot.probe_ok is None:
        return
    yield _gauge(
        "probe_up",
        "1 if pgpool answered the guard's last SSLRequest probe on its socket or port.",
        value=float(snapshot.probe_ok),
    )
    if snapshot.probe_latency is not None:
        yield _gauge(
            "probe_latency_seconds",
            "How long pgpool took to answer (or fail) the last probe.",
            value=snapshot.probe_latency,
        )


def _pool_nodes_families(snapshot: MetricsSnapshot) -> Iterator["Metric"]:
    """pgpool's own view of its backends, as SHOW POOL_NODES reported it last."""
    state = _gauge(
        "pool_nodes_state",
        "1 for the state of the guard's view of pgpool's backends (SHOW POOL_NODES): INIT "
        "(not asked yet), KNOWN (fresh), STALE (last answer is old), LOST (no answer), "
        "OFF (not configured).",
        ("state",),
    )
    for known in VIEW_STATES:
        state.add_metric([known], float(snapshot.view_state == known))
    yield state
    if snapshot.query_latency is not None:
        yield _gauge(
            "pool_nodes_latency_seconds",
            "Round trip of the last SHOW POOL_NODES query to pgpool.",
            value=snapshot.query_latency,
        )

    backend = _gauge(
        "backend",
        "1 per backend pgpool knows, with pgpool's status and role for it (pg_status and "
        "pg_role: what PostgreSQL itself reports, pgpool 4.3 and later; empty if unknown).",
        BACKEND_LABELS,
    )
    delay_bytes = _gauge(
        "backend_replication_delay_bytes",
        "Bytes of WAL the standby is behind the primary, as pgpool measures it.",
        ("node_id",),
    )
    delay_seconds = _gauge(
        "backend_replication_delay_seconds",
        "Seconds the standby is behind the primary, as pgpool measures it when "
        "delay_threshold_by_time is set (pgpool 4.4 and later).",
        ("node_id",),
    )
    for node in _unique(snapshot.backends, lambda n: n.node_id):
        node_id = str(node.node_id)
        values = (node.hostname, node.port, node.status, node.role, node.pg_status, node.pg_role)
        backend.add_metric([node_id, *(_text(v or "") for v in values)], 1.0)
        delay = replication_delay(node.replication_delay)
        if delay is not None:
            unit, value = delay
            (delay_bytes if unit == "bytes" else delay_seconds).add_metric([node_id], value)
    yield backend
    yield delay_bytes
    yield delay_seconds

    primary = -1 if snapshot.primary_node_id is None else snapshot.primary_node_id
    yield _gauge(
        "primary_node_id",
        "The node id pgpool reports as its primary (-1: none).",
        value=float(primary),
    )


def _role_families(snapshot: MetricsSnapshot) -> Iterator["Metric"]:
    """serve = "postgresql": the local PostgreSQL's role; nothing on a balancer."""
    if snapshot.role_state == RoleState.OFF.value:
        return
    state = _gauge(
        "postgresql_state",
        "1 for the state of the guard's view of the local PostgreSQL's role (serve = "
        "postgresql): INIT (no answer yet), KNOWN, STALE (last answer kept), LOST.",
        ("state",),
    )
    for known in ROLE_STATES:
        if known != RoleState.OFF.value:
            state.add_metric([known], float(snapshot.role_state == known))
    yield state
    if snapshot.postgresql_primary is not None:
        yield _gauge(
            "postgresql_primary",
            "1 if the local PostgreSQL's last answer in force said primary "
            "(pg_is_in_recovery() false), 0 if standby.",
            value=float(snapshot.postgresql_primary),
        )
    if snapshot.role_latency is not None:
        yield _gauge(
            "postgresql_latency_seconds",
            "Round trip of the last SELECT pg_is_in_recovery() to the local PostgreSQL.",
            value=snapshot.role_latency,
        )


def render(snapshot: MetricsSnapshot) -> bytes:
    """The snapshot in Prometheus' text exposition format (version 0.0.4)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    class SnapshotCollector(Collector):
        def collect(self) -> Iterator["Metric"]:
            return families(snapshot)

    registry = CollectorRegistry()
    registry.register(SnapshotCollector())
    return generate_latest(registry)


def write(path: str, snapshot: MetricsSnapshot) -> None:
    """Replace the file at `path` at once (a scrape sees the old file or the new one).

    OSError if it cannot be written; ImportError without prometheus_client.
    """
    from pgpool_anycast_hook.safe_files import replace_file

    replace_file(path, render(snapshot), MODE)
