"""`status --routing` against real FRR 8.4 and BIRD 2 daemons in namespaces of our own.

Each test starts its daemons by hand in a fresh pair of namespaces (rt-<pid>-<n>-a/b,
routing_daemons.py), with every socket and file in a private directory that the hook
is pointed at through frr_vty_socket or bird_socket: never the host's FRR, BIRD or
/run/frr. The anycast addresses go on lo of namespace a, where the hook runs. What is
checked, for ospfd, bgpd and BIRD each: an address on lo that the daemon exports is
announced; one that its export policy rejects, or whose protocol is down, is "present
but not announced" (drift, exit 1); one the daemon exports without the address is
"announced but absent" (drift); an absent address that nothing exports is consistent.
A user without the daemon's group gets "unknown (permission denied ...)", and a hung
daemon "unknown" after routing_timeout; neither changes the exit code. Every wait is
bounded.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgpool_anycast_hook.routing_parse import bird_protocols
from tests.netns.conftest import HookSetup, require_root
from tests.netns.routing_daemons import (
    ANYCAST4,
    ANYCAST6,
    LINK4,
    LINK6,
    OTHER4,
    Bird,
    Frr,
    Pair,
    wait_until,
)
from tests.netns.stand_ins import ANSWERING_PGPOOL

AS_POSTGRES = ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups")


def as_postgres_in(group: str) -> tuple[str, ...]:
    return ("setpriv", "--reuid", "postgres", "--regid", "postgres", "--groups", group)


PYTHON = "/usr/bin/python3"  # the fake pgpool's interpreter, runnable by postgres
ALL = [ANYCAST4, OTHER4, ANYCAST6]


class FakePgpool:
    """A stand-in pgpool (stand_ins.py) in namespace a, so that the desired state is
    "present" and the exit code says only what the announcement adds."""

    def __init__(self, hook: HookSetup, pair: Pair) -> None:
        run_dir = hook.root / "run"
        run_dir.mkdir()
        os.chmod(run_dir, 0o777)
        self.conf = hook.root / "pgpool.conf"
        self.conf.write_text(
            f"port = 9999\nsocket_dir = '{run_dir}'\nunix_socket_directories = '{run_dir}'\n"
            f"pid_file_name = '{run_dir}/pgpool.pid'\n"
        )
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", pair.a, *AS_POSTGRES, PYTHON, "-c", ANSWERING_PGPOOL,
             str(run_dir / "pgpool.pid"), str(run_dir / ".s.PGSQL.9999")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 10.0)
        line = self.process.stdout.readline().strip() if ready else ""
        if line != "ready":
            self.stop()
            pytest.fail(f"the fake pgpool did not come up: {line!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def pgpool(hook: HookSetup, pair: Pair) -> Iterator[FakePgpool]:
    fake = FakePgpool(hook, pair)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def pair() -> Iterator[Pair]:
    require_root()
    made = Pair()
    try:
        yield made
    finally:
        made.close()


def status(hook: HookSetup, pair: Pair, *prefix: str) -> tuple[int, dict[str, Any], str]:
    done = hook.run(pair.a, "status", "--routing", "--json", prefix=prefix)
    assert done.stdout, done.stderr
    table = hook.run(pair.a, "status", "--routing", prefix=prefix)
    assert table.returncode == done.returncode, (table.stdout, done.stdout)
    return done.returncode, json.loads(done.stdout), table.stdout


def wait_status(
    hook: HookSetup, pair: Pair, predicate: Callable[[dict[str, Any]], bool], what: str
) -> tuple[int, dict[str, Any], str]:
    seen: list[tuple[int, dict[str, Any], str]] = []

    def check() -> bool:
        seen[:] = [status(hook, pair)]
        return predicate(seen[0][1])

    try:
        wait_until(check, 30.0, what)
    except TimeoutError:
        pytest.fail(f"{what}: last status {json.dumps(seen[0][1] if seen else None)}")
    return seen[0]


def by_address(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["address"]: item for item in data["addresses"]}


def drift(data: dict[str, Any]) -> set[tuple[str, str]]:
    return {(d["address"], d["problem"]) for d in data["routing"]["drift"]}


def test_frr_ospf(hook: HookSetup, pair: Pair, pgpool: FakePgpool) -> None:
    frr = Frr(pair, "a", ("ospfd", "ospf6d"))
    hook.write(addresses=ALL, routing_daemon="auto", frr_vty_socket=str(frr.directory),
               pgpool_conf=str(pgpool.conf))  # fmt: skip
    for address in ALL:
        pair.add_address(address)

    # OTHER4 is on lo, but the route-map's prefix-list does not let it out.
    code, data, table = wait_status(
        hook, pair,
        lambda d: d["routing"]["state"] == "ok"
        and by_address(d)[ANYCAST4]["announced_by"] == ["ospf"]
        and by_address(d)[ANYCAST6]["announced_by"] == ["ospf6"],
        "ospfd and ospf6d to originate their AS-external LSAs",
    )  # fmt: skip
    assert data["routing"]["daemon"] == "frr"
    assert data["desired"] == "present" and data["matches"] is True  # only routing drifts
    assert drift(data) == {(OTHER4, "present but not announced")}
    assert by_address(data)[OTHER4]["announced"] is False
    assert data["routing"]["matches"] is False and code == 1
    assert "announced (ospf)" in table and f"DRIFT: {OTHER4} present but not announced" in table

    # A user without group frrvty cannot ask: unknown, and the exit code is the addresses'.
    code, data, table = status(hook, pair, *AS_POSTGRES)
    assert data["routing"]["state"] == "unknown"
    assert "permission denied" in data["routing"]["detail"]
    assert "frrvty" in data["routing"]["detail"]
    assert by_address(data)[ANYCAST4]["announced"] is None
    assert data["routing"]["matches"] is None
    assert data["matches"] is True and code == 0
    assert "unknown (permission denied" in table
    # ... and with group frrvty, as documented, it can.
    code, data, _ = status(hook, pair, *as_postgres_in("frrvty"))
    assert data["routing"]["state"] == "ok", data["routing"]
    assert drift(data) == {(OTHER4, "present but not announced")} and code == 1

    # A hung ospfd (stopped): vtysh waits; routing_timeout ends it, and that is unknown.
    hook.write(addresses=ALL, routing_daemon="frr", frr_vty_socket=str(frr.directory),
               pgpool_conf=str(pgpool.conf), routing_timeout=1.0)  # fmt: skip
    os.kill(frr.pids["ospfd"], signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, data, table = status(hook, pair)
        took = time.monotonic() - started  # two runs: --json and the table
    finally:
        os.kill(frr.pids["ospfd"], signal.SIGCONT)
    assert data["routing"]["state"] == "unknown", data["routing"]
    assert "did not answer within routing_timeout" in data["routing"]["detail"]
    assert data["matches"] is True and code == 0 and took < 2 * (1.0 + 3.0)
    hook.write(addresses=ALL, routing_daemon="frr", frr_vty_socket=str(frr.directory),
               pgpool_conf=str(pgpool.conf))  # fmt: skip

    # ospfd dies: its address is still on lo, and nobody announces it.
    frr.kill("ospfd")
    code, data, _ = wait_status(
        hook, pair, lambda d: by_address(d)[ANYCAST4]["announced"] is False, "ospfd gone"
    )
    assert drift(data) == {
        (ANYCAST4, "present but not announced"),
        (OTHER4, "present but not announced"),
    }
    assert by_address(data)[ANYCAST6]["announced_by"] == ["ospf6"]
    assert code == 1

    # Withdrawn: ospf6d keeps the flushed LSA at MaxAge for a while; that is not announced.
    pgpool.stop()
    for address in ALL:
        pair.del_address(address)
    code, data, _ = wait_status(
        hook, pair, lambda d: by_address(d)[ANYCAST6]["announced"] is False, "ospf6d to flush"
    )
    assert drift(data) == set() and data["routing"]["matches"] is True
    assert data["actual"] == "absent" and data["desired"] == "absent" and code == 0


def _established(frr: Frr, peer: str) -> bool:
    data = json.loads(frr.vtysh(f"show bgp neighbors {peer} json", daemon="bgpd") or "{}")
    return bool(data.get(peer, {}).get("bgpState") == "Established")


def test_frr_bgp(hook: HookSetup, pair: Pair, pgpool: FakePgpool) -> None:
    a = Frr(pair, "a", ("bgpd",))
    Frr(pair, "b", ("bgpd",))
    hook.write(addresses=ALL, routing_daemon="frr", frr_vty_socket=str(a.directory),
               pgpool_conf=str(pgpool.conf))  # fmt: skip
    for address in ALL:
        pair.add_address(address)
    for peer in (LINK4[1], LINK6[1]):
        wait_until(lambda p=peer: _established(a, p), 30.0, f"BGP session to {peer}")  # type: ignore[misc]

    code, data, table = wait_status(
        hook, pair,
        lambda d: by_address(d)[ANYCAST4]["announced_by"] == [f"bgp to {LINK4[1]}"]
        and by_address(d)[ANYCAST6]["announced_by"] == [f"bgp to {LINK6[1]}"],
        "bgpd to advertise both prefixes",
    )  # fmt: skip
    assert drift(data) == {(OTHER4, "present but not announced")} and code == 1
    assert f"announced (bgp to {LINK4[1]})" in table

    # The IPv4 peer is shut down: bgpd still has its path, but advertises it to nobody.
    a.vtysh("configure terminal", "router bgp 65001", f"neighbor {LINK4[1]} shutdown")
    code, data, _ = wait_status(
        hook, pair, lambda d: by_address(d)[ANYCAST4]["announced"] is False, "the shutdown"
    )
    assert (ANYCAST4, "present but not announced") in drift(data) and code == 1
    assert by_address(data)[ANYCAST6]["announced"] is True

    # Addresses gone; a `network` statement keeps announcing the IPv6 prefix regardless.
    pgpool.stop()
    for address in ALL:
        pair.del_address(address)
    a.vtysh(
        "configure terminal", "router bgp 65001", "address-family ipv6 unicast",
        f"network {ANYCAST6}",
    )  # fmt: skip
    code, data, table = wait_status(
        hook, pair,
        lambda d: (ANYCAST6, "announced but absent") in drift(d),
        "the network statement's announcement",
    )  # fmt: skip
    assert drift(data) == {(ANYCAST6, "announced but absent")}
    assert data["matches"] is True and code == 1
    assert f"DRIFT: {ANYCAST6} announced but absent" in table

    a.vtysh(
        "configure terminal", "router bgp 65001", "address-family ipv6 unicast",
        f"no network {ANYCAST6}",
    )  # fmt: skip
    code, data, _ = wait_status(
        hook, pair, lambda d: d["routing"]["matches"] is True, "the network's withdrawal"
    )
    assert code == 0


def _bird_state(bird: Bird, protocol: str) -> str:
    states = {p.name: p.state for p in bird_protocols(bird.birdc("show protocols"))}
    return states.get(protocol, "missing")


def test_bird(hook: HookSetup, pair: Pair, pgpool: FakePgpool) -> None:
    a = Bird(pair, "a")
    Bird(pair, "b")
    hook.write(addresses=ALL, routing_daemon="auto", frr_vty_socket=str(pair.root / "no-frr"),
               bird_socket=str(a.socket), pgpool_conf=str(pgpool.conf))  # fmt: skip
    for address in ALL:
        pair.add_address(address)
    wait_until(lambda: _bird_state(a, "anycast_bgp") == "up", 30.0, "BIRD's BGP session")

    code, data, table = wait_status(
        hook, pair,
        lambda d: by_address(d)[ANYCAST4]["announced_by"] == ["anycast_ospf", "anycast_bgp"]
        and by_address(d)[ANYCAST6]["announced_by"] == ["anycast_ospf6"],
        "BIRD to export the anycast routes",
    )  # fmt: skip
    assert data["routing"]["daemon"] == "bird"
    assert drift(data) == {(OTHER4, "present but not announced")} and code == 1  # the filter
    assert "announced (anycast_ospf, anycast_bgp)" in table

    code, data, table = status(hook, pair, *AS_POSTGRES)
    assert data["routing"]["state"] == "unknown" and "permission denied" in table
    assert "group bird" in data["routing"]["detail"]
    assert data["matches"] is True and code == 0
    code, data, _ = status(hook, pair, *as_postgres_in("bird"))
    assert data["routing"]["state"] == "ok", data["routing"]
    assert drift(data) == {(OTHER4, "present but not announced")} and code == 1

    # Both IPv4 protocols down: the address stays on lo, BIRD announces it nowhere.
    a.birdc("disable anycast_ospf")
    a.birdc("disable anycast_bgp")
    code, data, _ = wait_status(
        hook, pair, lambda d: by_address(d)[ANYCAST4]["announced"] is False, "protocols down"
    )
    assert (ANYCAST4, "present but not announced") in drift(data) and code == 1
    assert "anycast_ospf down" in data["routing"]["detail"]

    # The address goes, a static route to it comes: OSPF exports that one.
    pgpool.stop()
    for address in ALL:
        pair.del_address(address)
    a.birdc("enable anycast_ospf")
    a.birdc("enable stray")
    code, data, table = wait_status(
        hook, pair, lambda d: (ANYCAST4, "announced but absent") in drift(d), "the stray route"
    )
    assert drift(data) == {(ANYCAST4, "announced but absent")} and code == 1

    a.birdc("disable stray")
    code, data, _ = wait_status(
        hook, pair, lambda d: d["routing"]["matches"] is True, "the stray route's withdrawal"
    )
    assert code == 0 and by_address(data)[ANYCAST4]["announced"] is False
