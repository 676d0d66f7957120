"""The shipped routing examples parse in the daemons they are for, so they cannot rot.

FRR's vtysh (`--dryrun -f`) and BIRD 2 (`bird -p -c`) from the Debian packages read
each file the way the daemon would at start and exit non-zero on any line they
reject; neither starts a daemon or touches an interface. A deliberately broken copy
must fail too, or a checker that accepts anything would pass these tests.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
FRR_FILES = ["frr.conf", "frr-fallback.conf"]
BIRD_FILES = ["bird.conf", "bird-fallback.conf"]


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(f"{name} is missing: run scripts/setup-dev.sh (installs frr and bird2)")
    return found


def vtysh_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("vtysh"), "--dryrun", "-f", str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def bird_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("bird"), "-p", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize("name", FRR_FILES)
def test_frr_examples_parse(name: str) -> None:
    done = vtysh_check(EXAMPLES / name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unknown command" not in done.stdout + done.stderr


@pytest.mark.parametrize("name", BIRD_FILES)
def test_bird_examples_parse(name: str) -> None:
    done = bird_check(EXAMPLES / name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_frr_file_is_refused(tmp_path: Path) -> None:
    text = (EXAMPLES / "frr-fallback.conf").read_text()
    broken = tmp_path / "frr.conf"
    broken.write_text(text.replace("set metric-type type-2", "set metric-type type-9"))
    done = vtysh_check(broken)
    assert done.returncode != 0 and "type-9" in done.stdout + done.stderr


def test_a_broken_bird_file_is_refused(tmp_path: Path) -> None:
    text = (EXAMPLES / "bird-fallback.conf").read_text()
    broken = tmp_path / "bird.conf"
    broken.write_text(text.replace("ospf_metric2 = 100000;", "ospf_metric9 = 100000;"))
    done = bird_check(broken)
    assert done.returncode != 0, done.stdout + done.stderr


def test_the_fallback_metrics_are_worse_than_the_balancers() -> None:
    """FRR's balancers announce type 2, metric 20, BIRD's type 2, metric 10000 (their
    defaults; frr.conf and bird.conf set none): the fallback's must be above both."""
    frr = (EXAMPLES / "frr-fallback.conf").read_text()
    bird = (EXAMPLES / "bird-fallback.conf").read_text()
    assert " set metric 100000\n set metric-type type-2\n" in frr
    settings = [line for line in bird.splitlines() if not line.lstrip().startswith("#")]
    assert "\t\tospf_metric2 = 100000;" in settings
    assert not any("ospf_metric1" in line for line in settings)  # type 1 would always win
    for balancer in ("frr.conf", "bird.conf"):
        assert "metric" not in (EXAMPLES / balancer).read_text()
