"""The routing examples the lab loads (lab/profiles.py): valid as shipped, rendered per host.

docs/examples/frr-ospf-bfd.conf, frr-bgp.conf and bird-bgp.conf are what users copy and
what the lab runs. Each must parse with the real daemon's own checker (FRR's
`vtysh --dryrun`, BIRD's `bird -p`) as shipped and as rendered for every balancer, and a
rendering may change only the values of the one balancer the file was written for.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import frr, profiles
from lab.hosts import ANYCAST6_PREFIX, ANYCAST_PREFIX, BALANCERS
from lab.profiles import Profile

EXAMPLES = (profiles.FRR_OSPF_BFD, profiles.FRR_BGP, profiles.BIRD_BGP)
CHECK_TIMEOUT = 30


def check_syntax(example: profiles.Example, text: str, tmp_path: Path) -> None:
    """The daemon's own configuration check; fails loudly when the tool is missing."""
    conf = tmp_path / example.name
    conf.write_text(text)
    if example.name.startswith("bird"):
        tool = shutil.which("bird") or "/usr/sbin/bird"
        argv = [tool, "-p", "-c", str(conf)]
    else:
        tool = shutil.which("vtysh") or "/usr/bin/vtysh"
        argv = [tool, "--dryrun", "-f", str(conf)]
    if not Path(tool).exists():
        pytest.fail(f"{tool} missing: run scripts/setup-dev.sh (frr, bird2)", pytrace=False)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    assert proc.returncode == 0, (example.name, proc.stdout + proc.stderr)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_is_valid_as_shipped_and_for_every_balancer(
    example: profiles.Example, tmp_path: Path
) -> None:
    shipped = example.path.read_text()
    check_syntax(example, shipped, tmp_path)
    assert example.render(example.written_for) == shipped  # its own values: unchanged
    for host in BALANCERS:
        rendered = example.render(host)
        check_syntax(example, rendered, tmp_path)
        changed = [
            line
            for line in difflib.ndiff(shipped.splitlines(), rendered.splitlines())
            if line[:2] in ("- ", "+ ")
        ]
        if host == example.written_for:
            assert changed == []
            continue
        # Only lines holding one of the replaced values differ.
        olds = [old.strip() for old, _ in example.substitutions(host)]
        assert changed and all(any(o in line for o in olds) for line in changed if line[0] == "-")
        assert host.ospf_ip in rendered and example.written_for.ospf_ip not in rendered
        if example.has_asn:
            assert str(host.asn) in rendered and str(example.written_for.asn) not in rendered


@pytest.mark.parametrize("example", EXAMPLES[1:], ids=[e.name for e in EXAMPLES[1:]])
def test_bgp_examples_announce_both_anycast_addresses_and_nothing_else(
    example: profiles.Example,
) -> None:
    text = example.path.read_text()
    assert ANYCAST_PREFIX in text and ANYCAST6_PREFIX in text
    assert "bfd" in text


def test_each_balancer_runs_the_planned_daemon_in_each_profile() -> None:
    chosen = {
        (host.name, profile): profiles.example_for(host, profile).name
        for host in BALANCERS
        for profile in Profile
    }
    assert chosen == {
        ("bal1", Profile.OSPF): "frr-ospf-bfd.conf",
        ("bal2", Profile.OSPF): "frr-ospf-bfd.conf",
        ("bal3", Profile.OSPF): "frr-ospf-bfd.conf",
        ("bal1", Profile.BGP): "frr-bgp.conf",
        ("bal2", Profile.BGP): "frr-bgp.conf",
        ("bal3", Profile.BGP): "bird-bgp.conf",
    }
    assert len({host.asn for host in BALANCERS}) == len(BALANCERS)  # one private ASN each
    assert all(64512 <= host.asn <= 65534 for host in BALANCERS)


def test_router_configurations_parse(tmp_path: Path) -> None:
    """The router's own bgpd, ospfd and bfdd files (lab templates) for FRR's checker."""
    for daemon, text in frr.router_configs().items():
        conf = tmp_path / f"{daemon}.conf"
        conf.write_text(text)
        proc = subprocess.run(
            ["vtysh", "--dryrun", "-f", str(conf)],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
        )
        assert proc.returncode == 0, (daemon, proc.stdout + proc.stderr, text)
