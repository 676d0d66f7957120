"""The guard's metrics file, read by Debian's real prometheus-node-exporter.

metrics.write puts a snapshot where node_exporter's textfile collector reads it;
each test starts its own node_exporter (tests/netns/node_exporter.py: 127.0.0.1, a
free port, only the textfile collector, stopped by its PID) and scrapes it over
HTTP, as Prometheus would. node_exporter reads the files at every scrape, so a
replaced file shows in the next scrape, with no waiting.

The package's layout is tested as shipped: a link in node_exporter's directory
(packaging/debian/pgpool-anycast-hook.links) to the file in the guard's runtime
directory, which packaging/debian/pgpool-anycast-hook.tmpfiles creates empty at
boot, because a dangling link is a read error on every scrape.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgpool_anycast_hook.guard_state import Phase
from pgpool_anycast_hook.metrics import AddressMetric, MetricsSnapshot, write
from pgpool_anycast_hook.pool_nodes import BackendNode
from tests.netns.conftest import require_root
from tests.netns.node_exporter import BINARY, Series, running_node_exporter

pytestmark = pytest.mark.netns

P = "pgpool_anycast_"
ADDRESS = "198.18.2.0/32"
EXPORTER_USER = "prometheus"  # Debian's node_exporter runs as this user
PACKAGING = Path(__file__).resolve().parents[2] / "packaging" / "debian"
ERROR: tuple[str, frozenset[tuple[str, str]]] = ("node_textfile_scrape_error", frozenset())

WITHDRAWN = MetricsSnapshot(
    heartbeat=1700000000.5,
    phase=Phase.WITHDRAWN.value,
    desired=False,
    reason_code="primary-down",
    hold=False,
    hold_down_left=0.0,
    addresses=(AddressMetric(ADDRESS, False, 0.0),),
    transitions={"primary-down": 1},
    probe_ok=True,
    probe_latency=0.002,
    view_state="KNOWN",
    query_latency=0.003,
    backends=(
        BackendNode(0, "pg0", "5432", "down", "standby", 0.5, "down", "unknown", "0"),
        BackendNode(1, "pg1", "5432", "up", "standby", 0.5, "up", "standby", "0"),
    ),
    primary_node_id=None,
)
ANNOUNCED = WITHDRAWN._replace(
    heartbeat=1700000030.5,
    phase=Phase.ANNOUNCED.value,
    desired=True,
    reason_code="serves",
    addresses=(AddressMetric(ADDRESS, True, 9.5),),
    transitions={"primary-down": 1, "serves": 1},
    backends=(
        BackendNode(0, "pg0", "5432", "down", "standby", 0.5, "down", "unknown", "0"),
        BackendNode(1, "pg1", "5432", "up", "primary", 0.5, "up", "primary", "0"),
    ),
    primary_node_id=1,
)


def one(series: Series, name: str, **labels: str) -> float:
    return series[(P + name, frozenset(labels.items()))]


def ours(series: Series) -> set[str]:
    return {name for name, _labels in series if name.startswith(P)}


def mtimes(series: Series) -> dict[str, float]:
    return {
        dict(labels)["file"]: value
        for (name, labels), value in series.items()
        if name == "node_textfile_mtime_seconds"
    }


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory node_exporter's user can traverse (mkdtemp makes 0700)."""
    require_root()
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"{BINARY} is missing: install prometheus-node-exporter (scripts/setup-dev.sh)")
    try:
        pwd.getpwnam(EXPORTER_USER)
    except KeyError:
        pytest.fail(f"no user {EXPORTER_USER}: install prometheus-node-exporter")
    path = Path(tempfile.mkdtemp(prefix="pah-metrics-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def directory(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


def test_withdrawn_then_announced_as_node_exporter_serves_it(root: Path) -> None:
    textfile = directory(root / "textfile")
    path = str(textfile / "pgpool-anycast-hook.prom")
    write(path, WITHDRAWN)
    with running_node_exporter(str(textfile), EXPORTER_USER) as scrape:
        before = scrape()
        assert before[ERROR] == 0.0, scrape.log()
        assert one(before, "announced", address=ADDRESS) == 0.0
        assert one(before, "desired", reason="primary-down") == 0.0
        assert one(before, "phase", phase="WITHDRAWN") == 1.0
        assert one(before, "phase", phase="ANNOUNCED") == 0.0
        assert one(before, "primary_node_id") == -1.0
        assert one(before, "heartbeat_timestamp_seconds") == 1700000000.5
        assert one(before, "transitions_total", reason="primary-down") == 1.0
        assert one(before, "pool_nodes_state", state="KNOWN") == 1.0
        assert one(before, "backend_replication_delay_bytes", node_id="1") == 0.0
        backend = {"node_id": "0", "hostname": "pg0", "port": "5432", "status": "down"}
        backend |= {"role": "standby", "pg_status": "down", "pg_role": "unknown"}
        assert one(before, "backend", **backend) == 1.0

        write(path, ANNOUNCED)
        after = scrape()
        assert after[ERROR] == 0.0, scrape.log()
        assert one(after, "announced", address=ADDRESS) == 1.0
        assert one(after, "lease_seconds_left", address=ADDRESS) == 9.5
        assert one(after, "desired", reason="serves") == 1.0
        assert (P + "desired", frozenset({("reason", "primary-down")})) not in after
        assert one(after, "phase", phase="ANNOUNCED") == 1.0
        assert one(after, "phase", phase="WITHDRAWN") == 0.0
        assert one(after, "primary_node_id") == 1.0
        assert one(after, "heartbeat_timestamp_seconds") == 1700000030.5
        assert one(after, "transitions_total", reason="serves") == 1.0
        assert ours(after) == ours(before)


def test_hostile_label_values_survive_node_exporter(root: Path) -> None:
    textfile = directory(root / "textfile")
    hostile = [
        'quo"te',
        "back\\slash\\",
        "new\nline",
        '"} 1\npgpool_anycast_hold 1\n# TYPE x counter\nx{a="',
        "cr\rnul\0tab\t",
        "\\n not a newline",
        "ünïcødé \u2028\x85",
        "",
    ]
    backends = tuple(
        BackendNode(i, host, "5432", host, "standby", None, None, None, None)
        for i, host in enumerate(hostile)
    )
    snapshot = ANNOUNCED._replace(
        backends=backends, reason_code=hostile[3], transitions={h: 1 for h in hostile}
    )
    write(str(textfile / "pgpool-anycast-hook.prom"), snapshot)
    with running_node_exporter(str(textfile), EXPORTER_USER) as scrape:
        series = scrape()
        assert series[ERROR] == 0.0, scrape.log()
    hosts = {dict(labels)["hostname"] for name, labels in series if name == P + "backend"}
    assert hosts == set(hostile)
    assert {dict(labels)["status"] for name, labels in series if name == P + "backend"} == set(
        hostile
    )
    assert one(series, "desired", reason=hostile[3]) == 1.0
    assert one(series, "hold") == 0.0  # the `hold 1` in a host name is only text
    reasons = {dict(labels)["reason"] for name, labels in series if name == P + "transitions_total"}
    assert reasons == set(hostile)
    assert "x" not in {name for name, _labels in series}


def test_a_link_is_followed_and_reports_its_target_s_mtime(root: Path) -> None:
    textfile = directory(root / "textfile")
    runtime = directory(root / "run")
    target = str(runtime / "metrics.prom")
    link = str(textfile / "pgpool-anycast-hook.prom")
    os.symlink(target, link)
    write(target, WITHDRAWN)
    os.utime(target, (1600000000.75, 1600000000.75))
    os.utime(link, (1500000000, 1500000000), follow_symlinks=False)
    with running_node_exporter(str(textfile), EXPORTER_USER) as scrape:
        before = scrape()
        assert before[ERROR] == 0.0, scrape.log()
        assert one(before, "phase", phase="WITHDRAWN") == 1.0
        # The link's path names the file; the time is the target's, in whole seconds.
        assert mtimes(before) == {link: 1600000000.0}

        write(target, ANNOUNCED)  # a rename over the target: the link follows it
        os.utime(target, (1600000100.0, 1600000100.0))
        after = scrape()
        assert after[ERROR] == 0.0, scrape.log()
        assert one(after, "phase", phase="ANNOUNCED") == 1.0
        assert mtimes(after) == {link: 1600000100.0}
        assert os.path.islink(link)


def test_a_dangling_link_is_a_scrape_error_and_an_empty_file_is_not(root: Path) -> None:
    textfile = directory(root / "textfile")
    runtime = directory(root / "run")
    target = runtime / "metrics.prom"
    link = str(textfile / "pgpool-anycast-hook.prom")
    os.symlink(target, link)
    with running_node_exporter(str(textfile), EXPORTER_USER) as scrape:
        dangling = scrape()
        assert dangling[ERROR] == 1.0
        assert mtimes(dangling) == {}
        assert "no such file or directory" in scrape.log()

        target.touch(mode=0o644)  # what the package's tmpfiles.d line creates at boot
        os.utime(target, (1600000000, 1600000000))
        empty = scrape()
        assert empty[ERROR] == 0.0, scrape.log()
        assert mtimes(empty) == {link: 1600000000.0}
        assert ours(empty) == set()


def packaged_link() -> tuple[str, str]:
    """(target, link) of the one line of packaging/debian/pgpool-anycast-hook.links."""
    lines = (PACKAGING / "pgpool-anycast-hook.links").read_text().split("\n")
    entries = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    assert len(entries) == 1 and len(entries[0]) == 2, entries
    target, link = entries[0]
    return target.strip("/"), link.strip("/")


def test_the_packaged_layout_from_boot_to_the_first_snapshot(root: Path) -> None:
    """The shipped link and tmpfiles.d lines in a scratch root (systemd-tmpfiles --root)."""
    target, link = packaged_link()
    assert link.startswith("var/lib/prometheus/node-exporter/")  # Debian's default directory
    directory(root / "etc")
    guard = "pgpool-anycast-guard:x:64990:64990::/nonexistent:/usr/sbin/nologin\n"
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n" + guard)
    (root / "etc" / "group").write_text("root:x:0:\npgpool-anycast-guard:x:64990:\n")
    tmpfiles = str(PACKAGING / "pgpool-anycast-hook.tmpfiles")
    command = ["systemd-tmpfiles", f"--root={root}", "--create", tmpfiles]
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    placeholder = root / target
    assert placeholder.is_file() and placeholder.stat().st_size == 0
    assert (placeholder.stat().st_uid, oct(placeholder.stat().st_mode & 0o777)) == (64990, "0o644")
    assert (root / target).parent.stat().st_mode & 0o777 == 0o755
    textfile = directory(root / os.path.dirname(link))
    os.symlink(root / target, root / link)  # the shipped link is absolute: into the root
    with running_node_exporter(str(textfile), EXPORTER_USER) as scrape:
        boot = scrape()
        assert boot[ERROR] == 0.0, scrape.log()
        assert ours(boot) == set()

        write(str(root / target), ANNOUNCED)  # the guard's first tick
        first = scrape()
        assert first[ERROR] == 0.0, scrape.log()
        assert one(first, "announced", address=ADDRESS) == 1.0
        assert str(root / link) in mtimes(first)
    # A second boot's tmpfiles run leaves the guard's file as it is.
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    assert placeholder.stat().st_size > 0
