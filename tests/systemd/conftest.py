"""Fixtures for tests under a real systemd: cached Debian roots, the .deb, booted containers.

Every test here gets a freshly booted systemd-nspawn container (about half a second)
of each Debian suite, with this checkout's .deb installed by dpkg. Nothing is mocked:
the container runs Debian's systemd, pgpool2 and PostgreSQL.

Needs root, debootstrap, systemd-container and zstd (scripts/setup-dev.sh installs them).
Roots are built on first use (about 2 minutes each) and cached; see testbed/rootfs.py.
Set PAH_DEB=/path/to/pgpool-anycast-hook_X_all.deb to test a given package instead of
building one from this checkout.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the testbed package lives at the top of the checkout

from testbed import rootfs  # noqa: E402
from testbed.container import Container  # noqa: E402

DIST = REPO / "dist"
BUILD_DEB = REPO / "packaging" / "build-deb.sh"
# What the .deb is built from: a newer file here means the .deb in dist/ is stale.
DEB_INPUTS = ("pyproject.toml", "README.md", "pgpool_anycast_hook", "packaging", "conf.d", "docs")
DEB_BUILD_TIMEOUT = 900.0
HOST_TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "zstd", "tar")
SUITES = ("bookworm", "trixie")
DEB_IN_CONTAINER = "/root/pgpool-anycast-hook_all.deb"

_names = itertools.count(1)
SELECTED_SUITES = pytest.StashKey[set[str]]()


@pytest.fixture(scope="session")
def host_ready() -> None:
    """Fail loudly, never skip, when the host cannot run these tests."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (systemd-nspawn, debootstrap)")
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"missing host tools {missing}: run scripts/setup-dev.sh")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def newest_input_mtime() -> float:
    newest = 0.0
    for name in DEB_INPUTS:
        path = REPO / name
        paths = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())
        for file in paths:
            if "__pycache__" not in file.parts:
                newest = max(newest, file.stat().st_mtime)
    return newest


def current_deb() -> Path | None:
    debs = sorted(DIST.glob("pgpool-anycast-hook_*_all.deb"), key=lambda p: p.stat().st_mtime)
    return debs[-1] if debs else None


@pytest.fixture(scope="session")
def deb_path(host_ready: None) -> Path:
    """This checkout's .deb: $PAH_DEB, or dist/'s if fresh, or built by build-deb.sh."""
    given = os.environ.get("PAH_DEB")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"PAH_DEB={given} is not a file", pytrace=False)
        return Path(given)
    deb = current_deb()
    if deb is not None and deb.stat().st_mtime >= newest_input_mtime():
        return deb
    print(f"[systemd tests] building the .deb with {BUILD_DEB}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        build = subprocess.run(
            ["bash", str(BUILD_DEB)],
            capture_output=True,
            text=True,
            timeout=DEB_BUILD_TIMEOUT,
            check=False,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{BUILD_DEB} took over {DEB_BUILD_TIMEOUT:.0f}s", pytrace=False)
    deb = current_deb()
    fresh = deb is not None and deb.stat().st_mtime >= started_wallclock(started)
    if build.returncode != 0 and not fresh:
        pytest.fail(
            f"{BUILD_DEB} failed (exit {build.returncode}):\n{build.stderr[-4000:]}", pytrace=False
        )
    if build.returncode != 0:
        # build-deb.sh still leaves the .deb when only lintian complains; lintian is
        # checked by .ci/run on its own, and these tests are about behaviour.
        warnings.warn(
            f"build-deb.sh exited {build.returncode} (lintian?); testing {deb}", stacklevel=1
        )
    assert deb is not None
    return deb


def started_wallclock(monotonic_start: float) -> float:
    """Wall-clock time of a monotonic instant (to compare with file mtimes)."""
    return time.time() - (time.monotonic() - monotonic_start) - 1.0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember which suites the selected tests need (after -k and -m deselection)."""
    config.stash[SELECTED_SUITES] = {
        item.callspec.params["suite_root"]
        for item in items
        if hasattr(item, "callspec") and "suite_root" in item.callspec.params
    }


@pytest.fixture(scope="session")
def root_builds(pytestconfig: pytest.Config, host_ready: None) -> Iterator[dict[str, Future[Path]]]:
    """Start every needed root at once: a cold build takes minutes per suite."""
    suites = sorted(pytestconfig.stash.get(SELECTED_SUITES, None) or SUITES)
    with ThreadPoolExecutor(max_workers=len(SUITES)) as pool:
        yield {suite: pool.submit(rootfs.ensure_root, suite) for suite in suites}


@pytest.fixture(scope="session", params=SUITES)
def suite_root(
    request: pytest.FixtureRequest, root_builds: dict[str, Future[Path]]
) -> tuple[str, Path]:
    """(suite, unpacked root); parametrizes every test over Debian 12 and 13."""
    suite: str = request.param
    build = root_builds.get(suite)
    root = build.result(timeout=rootfs.LOCK_TIMEOUT) if build else rootfs.ensure_root(suite)
    return suite, root


@pytest.fixture
def box(suite_root: tuple[str, Path], deb_path: Path) -> Iterator[Container]:
    """A freshly booted container of the suite with this checkout's .deb installed."""
    suite, root = suite_root
    name = f"pah-sd-{suite[:4]}-{os.getpid()}-{next(_names)}"
    with Container(name, root) as container:
        container.copy_in(deb_path, DEB_IN_CONTAINER, mode=0o644)
        container.run(["dpkg", "-i", DEB_IN_CONTAINER], timeout=120)
        yield container
