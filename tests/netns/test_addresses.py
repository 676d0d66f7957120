"""add/del on real interfaces in a namespace the test created."""

import subprocess

from tests.netns.conftest import HookSetup, addresses_in

ANYCAST = "198.18.2.0/32"


def test_add_del_and_idempotency(netns: str, hook: HookSetup) -> None:
    first = hook.run(netns, "add", "0")
    assert first.returncode == 0, first.stderr
    assert ANYCAST in addresses_in(netns)
    assert "changed=+198.18.2.0/32" in first.stderr
    again = hook.run(netns, "add", " 0")  # pgpool >= 4.4 passes " 0"
    assert again.returncode == 0 and "changed=none" in again.stderr
    assert ANYCAST in addresses_in(netns)
    gone = hook.run(netns, "del", "0")
    assert gone.returncode == 0 and "changed=-198.18.2.0/32" in gone.stderr
    assert ANYCAST not in addresses_in(netns)
    twice = hook.run(netns, "del", "0")
    assert twice.returncode == 0 and "changed=none" in twice.stderr


def test_dual_stack_and_several_addresses_on_a_veth(netns: str, hook: HookSetup) -> None:
    wanted = {"198.18.2.0/32", "198.18.2.1/32", "2001:db8:2::1/128", "2001:db8:2::2/64"}
    hook.write(interface="pah0", addresses=sorted(wanted), allow_wide_prefixes=True)
    assert hook.run(netns, "add", "0").returncode == 0
    assert wanted <= addresses_in(netns, "pah0")
    assert not wanted & addresses_in(netns, "lo")
    assert hook.run(netns, "del", "0").returncode == 0
    assert not wanted & addresses_in(netns, "pah0")


def test_only_exact_addresses_are_touched(netns: str, hook: HookSetup) -> None:
    """A /24 of the same address and a look-alike address belong to someone else."""
    for other in ("198.18.2.0/24", "198.18.2.10/32", "98.18.2.0/32"):
        subprocess.run(["ip", "-n", netns, "addr", "add", other, "dev", "lo"], check=True)
    assert hook.run(netns, "add", "0").returncode == 0
    assert hook.run(netns, "del", "0").returncode == 0
    held = addresses_in(netns)
    assert {"198.18.2.0/24", "198.18.2.10/32", "98.18.2.0/32"} <= held
    assert ANYCAST not in held
    # and a present look-alike never makes `add` think ours is already there
    assert hook.run(netns, "add", "0").returncode == 0
    assert ANYCAST in addresses_in(netns)


def test_an_ipv6_address_held_with_another_prefix_is_not_ours(netns: str, hook: HookSetup) -> None:
    """IPv6 answers EEXIST for the same address with any prefix; add must not take it as ours."""
    subprocess.run(
        ["ip", "-n", netns, "addr", "add", "2001:db8:2::1/64", "dev", "lo", "nodad"], check=True
    )
    hook.write(addresses=["2001:db8:2::1/128"])
    result = hook.run(netns, "add", "0")
    assert result.returncode == 70 and "another prefix length" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert hook.run(netns, "del", "0").returncode == 0
    held = addresses_in(netns)
    assert "2001:db8:2::1/64" in held and "2001:db8:2::1/128" not in held


def test_standby_node_and_old_primary(netns: str, hook: HookSetup) -> None:
    assert hook.run(netns, "add", "1").returncode == 0
    assert ANYCAST not in addresses_in(netns)
    assert hook.run(netns, "add", "0").returncode == 0
    standby = hook.run(netns, "del", "1")
    assert standby.returncode == 0 and "not the primary" in standby.stderr
    assert ANYCAST in addresses_in(netns)
    assert hook.run(netns, "del", " 1", "2").returncode == 0  # %d=1, %P=2: a standby failed
    assert ANYCAST in addresses_in(netns)
    assert hook.run(netns, "del", " 1", "1").returncode == 0  # the old primary 1 failed
    assert ANYCAST not in addresses_in(netns)


def test_add_respects_pgpool_status(netns: str, hook: HookSetup) -> None:
    hook.status_file.write_text("down\nup\n")
    refused = hook.run(netns, "add", "0")
    assert refused.returncode == 0 and "marks primary node 0 down" in refused.stderr
    assert ANYCAST not in addresses_in(netns)


def test_missing_interface_changes_nothing(netns: str, hook: HookSetup) -> None:
    hook.write(interface="nosuch0", addresses=[ANYCAST])
    before = addresses_in(netns)
    result = hook.run(netns, "add", "0")
    assert result.returncode == 69
    assert "interface 'nosuch0' does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert addresses_in(netns) == before


def test_add_is_all_or_nothing(netns: str, hook: HookSetup) -> None:
    """IPv6 disabled on the interface: the IPv4 address added first is taken back."""
    subprocess.run(
        ["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.pah0.disable_ipv6=1"],
        check=True,
    )
    hook.write(interface="pah0", addresses=["198.18.2.0/32", "2001:db8:2::1/128"])
    result = hook.run(netns, "add", "0")
    assert result.returncode == 70, result.stderr
    assert "IPv6 is disabled" in result.stderr
    assert not {"198.18.2.0/32", "2001:db8:2::1/128"} & addresses_in(netns, "pah0")


def test_dry_run_changes_nothing(netns: str, hook: HookSetup) -> None:
    result = hook.run(netns, "--dry-run", "add", "0")
    assert result.returncode == 0 and "result=dry-run" in result.stderr
    assert "changed=+198.18.2.0/32" in result.stderr
    assert ANYCAST not in addresses_in(netns)


def test_no_addresses_configured_is_a_no_op(netns: str, hook: HookSetup) -> None:
    hook.write()
    hook.status_file.write_text("down\nup\n")
    for verb in ("add", "del", "clean"):
        result = hook.run(netns, verb, "0")
        assert result.returncode == 0 and "no addresses configured" in result.stderr
    assert hook.status_file.read_text() == "down\nup\n"
    assert not (hook.state_dir / "lock").exists()
