"""The lab's resilient-hashing mirror (lab/resilient.py), on a real kernel in a namespace.

bench/drain_orders --resilient trusts it to keep a resilient nexthop group with exactly
the next hops of the main table's route, looked up first, and to leave nothing behind;
this checks that without FRR: the main table's route is changed by hand.
"""

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.hosts import ANYCAST

REPO = Path(__file__).resolve().parent.parent.parent
GATEWAYS = ("10.9.0.2", "10.9.0.3", "10.9.0.4")


def ip_json(netns: str, *argv: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["ip", "-j", "-n", netns, *argv], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    return json.loads(out or "[]")  # type: ignore[no-any-return]


def set_main_route(netns: str, gateways: tuple[str, ...]) -> None:
    hops = [w for g in gateways for w in ("nexthop", "via", g, "dev", "pah0")]
    subprocess.run(
        ["ip", "-n", netns, "route", "replace", f"{ANYCAST}/32", *hops], check=True, timeout=10
    )


def mirrored_hops(netns: str) -> list[str] | None:
    """The gateways of the mirror's group, or None while it has none."""
    groups = [n for n in ip_json(netns, "nexthop", "show") if n.get("type") == "resilient"]
    if not groups:
        return None
    assert len(groups) == 1, groups
    members = {m["id"] for m in groups[0]["group"]}  # type: ignore[attr-defined]
    return sorted(
        str(n["gateway"]) for n in ip_json(netns, "nexthop", "show") if n.get("id") in members
    )


def wait_for(what: str, predicate: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s: {what}")


@pytest.fixture
def routed(netns: str) -> Iterator[str]:
    subprocess.run(["ip", "-n", netns, "addr", "add", "10.9.0.1/24", "dev", "pah0"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "pah1", "up"], check=True)
    set_main_route(netns, GATEWAYS)
    yield netns


def test_the_mirror_follows_the_main_route_in_a_resilient_group_and_cleans_up(
    routed: str,
) -> None:
    netns = routed
    mirror = subprocess.Popen(
        ["ip", "netns", "exec", netns, "/usr/bin/python3", "-m", "lab.resilient"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert mirror.stdout is not None
        first = json.loads(mirror.stdout.readline())
        assert first["hops"] == sorted(GATEWAYS)
        wait_for("all three in the group", lambda: mirrored_hops(netns) == sorted(GATEWAYS))
        group = next(n for n in ip_json(netns, "nexthop", "show") if n.get("type") == "resilient")
        assert group["resilient_args"]["buckets"] == 128, group  # type: ignore[index]
        rules = [r for r in ip_json(netns, "rule", "show") if r.get("table") == "4242"]
        assert [r["dst"] for r in rules] == [ANYCAST], rules
        table = ip_json(netns, "route", "show", "table", "4242")
        assert [r["dst"] for r in table] == [ANYCAST] and table[0]["nhid"] == group["id"]

        set_main_route(netns, GATEWAYS[1:])  # a next hop leaves
        wait_for("two in the group", lambda: mirrored_hops(netns) == sorted(GATEWAYS[1:]))
        subprocess.run(["ip", "-n", netns, "route", "del", f"{ANYCAST}/32"], check=True)
        wait_for(
            "no route in table 4242",
            lambda: not ip_json(netns, "route", "show", "table", "4242"),
        )
        set_main_route(netns, GATEWAYS)  # back
        wait_for("three again", lambda: mirrored_hops(netns) == sorted(GATEWAYS))
    finally:
        mirror.terminate()
        mirror.communicate(timeout=20)
    assert mirror.returncode == 0
    assert not [r for r in ip_json(netns, "rule", "show") if r.get("table") == "4242"]
    assert not ip_json(netns, "route", "show", "table", "4242")
    assert mirrored_hops(netns) is None
