"""The lab for end-to-end tests: one topology per session, put back to nominal per test.

Builds the article's topology (lab/): router, three balancer containers with real
systemd, pgpool2, FRR and this checkout's .deb, PostgreSQL primary and two replicas,
client. About 10 s warm; the first run also builds the Debian root (testbed/rootfs.py)
and the .deb. Needs root. A lab that was already up (`python3 -m lab up`) is reused and
left up; one built here is torn down at the end of the session.

Every test that takes `lab` or `standalone_lab` runs once per routing profile
(lab/profiles.py: OSPF + BFD, then eBGP + BFD over IPv4 and IPv6 with BIRD on bal3). The
profile is a session parameter and the items are sorted so that all OSPF runs come
first: the lab switches its routing daemons once, in the same containers. A test that
holds for one profile only takes `ospf_lab` or `bgp_lab` and says why. The two-site
tests take `two_site_lab` (that profile only: it is about the second site) and run
between the OSPF and the BGP runs, since from OSPF only bal3 and router2 switch.
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
from lab.profiles import Profile  # noqa: E402
from lab.topology import Lab  # noqa: E402

PROFILES = (Profile.OSPF, Profile.BGP)  # what every lab test runs in
ORDER = (Profile.OSPF, Profile.TWO_SITE, Profile.BGP)  # the order the runs come in

HOST_TOOLS = (
    "ip",
    "systemd-nspawn",
    "nsenter",
    "nft",
    "debootstrap",
    "zstd",
    "/usr/lib/frr/zebra",
    "/usr/lib/postgresql/15/bin/pgbench",
    "/usr/sbin/pgpool",
)


def item_profile(item: pytest.Item) -> Profile | None:
    """The routing profile a lab test runs in (None: not a lab test of a profile)."""
    fixtures = getattr(item, "fixturenames", ())
    if "ospf_lab" in fixtures:
        return Profile.OSPF
    if "bgp_lab" in fixtures:
        return Profile.BGP
    if "two_site_lab" in fixtures:
        return Profile.TWO_SITE
    callspec = getattr(item, "callspec", None)
    if callspec is not None and isinstance(callspec.params.get("profile"), Profile):
        return callspec.params["profile"]
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this directory is a `lab` test (selected with -m lab); the lab's
    tests run profile by profile (a stable sort: within a profile, in file order)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)
    # Sort the lab's items among themselves, in the places they hold: the rest of the
    # session keeps its order.
    places = [index for index, item in enumerate(items) if item_profile(item) is not None]
    order = {profile: index for index, profile in enumerate(ORDER)}
    ordered = sorted((items[i] for i in places), key=lambda item: order[item_profile(item)])
    for place, item in zip(places, ordered, strict=True):
        items[place] = item


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


@pytest.fixture(scope="session", params=PROFILES, ids=[p.value for p in PROFILES])
def profile(request: pytest.FixtureRequest) -> Profile:
    """The routing profile of this run of a lab test."""
    assert isinstance(request.param, Profile)
    return request.param


def nominal(lab_session: Lab, wiring: Wiring, profile: Profile) -> Lab:
    if lab_session.profile is not profile:
        lab_session.set_profile(profile)
    if lab_session.wiring is not wiring:
        lab_session.rewire(wiring)
    if not lab_session.is_nominal():
        lab_session.restore()
    return lab_session


@pytest.fixture
def lab(lab_session: Lab, profile: Profile) -> Lab:
    """The session's lab in the guarded wiring (the lab's default) and the run's routing
    profile, back in its starting state: everything up, three next hops (for both
    anycast addresses in the BGP profile)."""
    return nominal(lab_session, Wiring.GUARD, profile)


@pytest.fixture
def standalone_lab(lab_session: Lab, profile: Profile) -> Lab:
    """The same, in the standalone wiring (CAP_NET_ADMIN on pgpool2.service)."""
    return nominal(lab_session, Wiring.HOOK, profile)


@pytest.fixture
def ospf_lab(lab_session: Lab) -> Lab:
    """The guarded lab in the OSPF profile only; a test that takes it says why."""
    return nominal(lab_session, Wiring.GUARD, Profile.OSPF)


@pytest.fixture
def bgp_lab(lab_session: Lab) -> Lab:
    """The guarded lab in the BGP profile only (IPv6, BGP and BIRD facts); a test that
    takes it says why."""
    return nominal(lab_session, Wiring.GUARD, Profile.BGP)


@pytest.fixture
def two_site_lab(lab_session: Lab) -> Lab:
    """The guarded lab in the two-site profile: site A's router with bal1 and bal2, site
    B's router2 with bal3, a client behind each."""
    return nominal(lab_session, Wiring.GUARD, Profile.TWO_SITE)


Report = Callable[[str, object], None]


@pytest.fixture
def report(record_property: Report, capsys: pytest.CaptureFixture[str]) -> Report:
    """Record a measured value and show it even without -s."""

    def emit(name: str, value: object) -> None:
        record_property(name, value)
        with capsys.disabled():
            print(f"\n    [lab] {name} = {value}", flush=True)

    return emit
