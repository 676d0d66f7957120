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
        ("bal1", Profile.TWO_SITE): "frr-ospf-bfd.conf",
        ("bal2", Profile.TWO_SITE): "frr-ospf-bfd.conf",
        ("bal3", Profile.TWO_SITE): "frr-ospf-bfd.conf",
    }
    interfaces = {
        (host.name, profile): profiles.routing_interface(host, profile)
        for host in BALANCERS
        for profile in Profile
    }
    assert {key for key, interface in interfaces.items() if interface != "eth1"} == {
        ("bal3", Profile.TWO_SITE)  # site B's balancer, on router2's LAN
    }
    assert interfaces["bal3", Profile.TWO_SITE] == "eth2"
    assert len({host.asn for host in BALANCERS}) == len(BALANCERS)  # one private ASN each
    assert all(64512 <= host.asn <= 65534 for host in BALANCERS)


def test_site_b_rendering_changes_only_the_interface(tmp_path: Path) -> None:
    """bal3 in two-site: the OSPF example on eth2, its router-id the same as in `ospf`."""
    bal3 = BALANCERS[2]
    example = profiles.FRR_OSPF_BFD
    rendered = example.render(bal3, "eth2")
    check_syntax(example, rendered, tmp_path)
    one_site = example.render(bal3).splitlines()
    changed = [
        line for line in difflib.ndiff(one_site, rendered.splitlines()) if line[:2] in ("- ", "+ ")
    ]
    assert changed == ["- interface eth1", "+ interface eth2"]


def test_fallback_host_configuration_is_the_example_up_to_its_bgp_part() -> None:
    """pg1's ospfd in the lab (lab/fallback.py): the shipped file's OSPF part, pg1's address."""
    from lab import fallback
    from lab.hosts import PRIMARY

    text = fallback.ospfd_conf()
    shipped = fallback.EXAMPLE.read_text()
    assert "router bgp" not in text and "router ospf" in text
    assert text == shipped.split(fallback.BGP_MARKER)[0].replace(
        fallback.EXAMPLE_ADDRESS, PRIMARY.base_ip
    )
    assert f"ospf router-id {PRIMARY.base_ip}" in text


def test_router_configurations_parse(tmp_path: Path) -> None:
    """The routers' own bgpd, ospfd and bfdd files (lab templates) for FRR's checker:
    the router's and router2's, and pg1's fallback ospfd."""
    from lab import fallback

    configs = [*frr.router_configs().items(), *frr.router2_configs().items()]
    configs.append(("ospfd", fallback.ospfd_conf()))
    for daemon, text in configs:
        conf = tmp_path / f"{daemon}.conf"
        conf.write_text(text)
        proc = subprocess.run(
            ["vtysh", "--dryrun", "-f", str(conf)],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
        )
        assert proc.returncode == 0, (daemon, proc.stdout + proc.stderr, text)


def test_only_site_b_switches_between_ospf_and_two_site() -> None:
    """A switch between ospf and two-site restarts bal3's routing daemon only; to or from
    bgp, every balancer's."""
    changed = {
        (old, new): {h.name for h in BALANCERS if profiles.differs(h, old, new)}
        for old in Profile
        for new in Profile
    }
    assert changed[Profile.OSPF, Profile.TWO_SITE] == {"bal3"}
    assert changed[Profile.TWO_SITE, Profile.OSPF] == {"bal3"}
    assert changed[Profile.OSPF, Profile.BGP] == {"bal1", "bal2", "bal3"}
    assert changed[Profile.TWO_SITE, Profile.BGP] == {"bal1", "bal2", "bal3"}
    assert all(not changed[p, p] for p in Profile)
