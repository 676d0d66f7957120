"""The lab for end-to-end tests: one topology per session, put back to nominal per test.

Builds the article's topology (lab/): router, three balancer containers with real
systemd, pgpool2, FRR and this checkout's .deb, PostgreSQL primary and two replicas,
client. About 10 s warm; the first run also builds the Debian root (testbed/rootfs.py)
and the .deb. Needs root. A lab that was already up (`python3 -m lab up`) is reused and
left up; one built here is torn down at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # lab/ and testbed/ live at the top of the checkout

from lab import topology  # noqa: E402
from lab.balancers import Wiring  # noqa: E402
from lab.topology import Lab  # noqa: E402

HOST_TOOLS = (
    "ip",
    "systemd-nspawn",
    "nsenter",
    "debootstrap",
    "zstd",
    "/usr/lib/frr/zebra",
    "/usr/lib/postgresql/15/bin/pgbench",
    "/usr/sbin/pgpool",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this directory is a `lab` test (selected with -m lab)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab_session() -> Iterator[Lab]:
    """Fail loudly, never skip, when the host cannot run the lab."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (namespaces, systemd-nspawn)")
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"missing {missing}: run scripts/setup-dev.sh")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
    was_up = topology.attach_running() is not None
    lab = topology.up()
    try:
        yield lab
    finally:
        if not was_up:
            topology.down()


def nominal(lab_session: Lab, wiring: Wiring) -> Lab:
    if lab_session.wiring is not wiring:
        lab_session.rewire(wiring)
    if not lab_session.is_nominal():
        lab_session.restore()
    return lab_session


@pytest.fixture
def lab(lab_session: Lab) -> Lab:
    """The session's lab in the guarded wiring (the lab's default), back in its starting
    state: everything up, three next hops."""
    return nominal(lab_session, Wiring.GUARD)


@pytest.fixture
def standalone_lab(lab_session: Lab) -> Lab:
    """The same, in the standalone wiring (CAP_NET_ADMIN on pgpool2.service)."""
    return nominal(lab_session, Wiring.HOOK)


Report = Callable[[str, object], None]


@pytest.fixture
def report(record_property: Report, capsys: pytest.CaptureFixture[str]) -> Report:
    """Record a measured value and show it even without -s."""

    def emit(name: str, value: object) -> None:
        record_property(name, value)
        with capsys.disabled():
            print(f"\n    [lab] {name} = {value}", flush=True)

    return emit
