"""Record what the local FRR (vtysh) and BIRD 2 (birdc) really answer, situation by situation.

Why: `status --routing` decides from these answers whether an address is announced, and
every FRR and BIRD version shapes them its own way. tests/unit/test_routing_parse.py
replays the recordings in tests/data/routing/<daemon>-<version>/, so the readers are
checked against the daemons themselves, not against what we believe they print.

Run it as root from the checkout (it creates namespaces rt-<pid>-*, never touches the
host's interfaces, FRR or BIRD):

    /usr/bin/python3 scripts/record_routing.py tests/data/routing

and for another release's FRR, from a Debian tree of it (the test bed's Debian 13 root
has FRR 10.3; the script runs it with chroot on a throw-away overlay of the tree, in a
mount namespace of its own, so the tree itself is never written):

    /usr/bin/python3 scripts/record_routing.py tests/data/routing --only frr \
        --root /var/lib/pgpool-anycast-hook-testbed/roots/trixie-<hash>
    /usr/bin/python3 scripts/record_routing.py tests/data/routing --only bird \
        --root /var/lib/pgpool-anycast-hook-testbed/roots/trixie-<hash> --overlay-install bird2

Each file holds one answer; index.json beside them says which command gave it, in which
situation, and what it means (the prefixes announced), written from the situation the
script set up, not from the parser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgpool_anycast_hook.routing_parse import bird_protocols
from tests.netns.routing_daemons import (
    ANYCAST4,
    ANYCAST6,
    LINK4,
    LINK6,
    OTHER4,
    Bird,
    Frr,
    Pair,
    run,
    wait_until,
)

OSPF = "show ip ospf database external self-originate json"
OSPF6 = "show ipv6 ospf6 database as-external self-originated json"


def bgp(prefix: str) -> str:
    family = "ipv6" if ":" in prefix else "ipv4"
    return f"show bgp {family} unicast {prefix} json"


class Recorder:
    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.index: dict[str, Any] = {}

    def save(self, name: str, text: str, command: str, situation: str, **meaning: Any) -> None:
        (self.out / name).write_text(text)
        self.index[name] = {"command": command, "situation": situation, **meaning}
        print(f"  {self.out.name}/{name}: {situation}", file=sys.stderr)

    def close(self, version: str) -> None:
        self.index["_source"] = {"version": version, "made_by": "scripts/record_routing.py"}
        text = json.dumps(self.index, indent=2, sort_keys=True) + "\n"
        (self.out / "index.json").write_text(text)


def _established(frr: Frr, peer: str) -> bool:
    data = json.loads(frr.vtysh(f"show bgp neighbors {peer} json", daemon="bgpd") or "{}")
    return data.get(peer, {}).get("bgpState") == "Established"


def _ospf_ages(frr: Frr) -> list[int]:
    data = json.loads(frr.vtysh(OSPF, daemon="ospfd") or "{}")
    lsas = data.get("AS External Link States", data.get("asExternalLinkStates", {}))
    values = lsas.values() if isinstance(lsas, dict) else lsas
    return [lsa.get("lsaAge", 0) for lsa in values if isinstance(lsa, dict) and lsa]


def record_frr(root: Path, tree: Path | None = None) -> None:
    chroot = ["chroot", str(tree)] if tree else []
    zebra = run([*chroot, "/usr/lib/frr/zebra", "--version"])
    version = re.search(r"zebra version (\S+)", zebra)
    name = f"frr-{version.group(1) if version else 'unknown'}"
    rec = Recorder(root / name)
    pair = Pair()
    try:
        a = Frr(pair, "a", ("ospfd", "ospf6d", "bgpd"), root=tree)
        b = Frr(pair, "b", ("ospfd", "bgpd"), root=tree)
        for address in (ANYCAST4, OTHER4, ANYCAST6):
            pair.add_address(address)
        for peer in LINK4[1], LINK6[1]:
            wait_until(lambda p=peer: _established(a, p), 30.0, f"BGP session to {peer}")  # type: ignore[misc]
        ours = [ANYCAST4]

        def ospf_has(prefixes: list[str]) -> bool:
            text = a.vtysh(OSPF, daemon="ospfd")
            return all(p.split("/")[0] in text for p in prefixes)

        wait_until(lambda: ospf_has(ours), 10.0, "ospfd's external LSA")
        wait_until(lambda: "advertisedTo" in a.vtysh(bgp(ANYCAST4), daemon="bgpd"), 10.0, "adj-out")
        wait_until(
            lambda: "advertisedTo" in a.vtysh(bgp(ANYCAST6), daemon="bgpd"), 10.0, "adj-out6"
        )
        wait_until(lambda: "ASE" in a.vtysh(OSPF6, daemon="ospf6d"), 10.0, "ospf6d's LSA")
        situation = (
            f"{ANYCAST4}, {OTHER4}, {ANYCAST6} on lo; only {ANYCAST4} and {ANYCAST6} "
            "pass the route-maps; BGP peers established"
        )
        rec.save(
            "ospf-announced.json",
            a.vtysh(OSPF, daemon="ospfd"),
            OSPF,
            situation,
            announced=[ANYCAST4],
        )
        rec.save(
            "ospf6-announced.json",
            a.vtysh(OSPF6, daemon="ospf6d"),
            OSPF6,
            situation,
            announced=[ANYCAST6],
        )
        for prefix, file in (
            (ANYCAST4, "bgp4-announced.json"),
            (OTHER4, "bgp4-filtered.json"),
            (ANYCAST6, "bgp6-announced.json"),
        ):
            peers = [] if prefix == OTHER4 else [LINK4[1] if ":" not in prefix else LINK6[1]]
            rec.save(
                file,
                a.vtysh(bgp(prefix), daemon="bgpd"),
                bgp(prefix),
                situation,
                prefix=prefix,
                advertised_to=peers,
            )
        rec.save(
            "ospf-none.json",
            b.vtysh(OSPF, daemon="ospfd"),
            OSPF,
            "the peer's ospfd: router ospf, no redistribute",
            announced=[],
        )
        rec.save(
            "bgp4-peer-side.json",
            b.vtysh(bgp(ANYCAST4), daemon="bgpd"),
            bgp(ANYCAST4),
            "the peer's bgpd: the prefix learnt from a, not its own",
            prefix=ANYCAST4,
            advertised_to=[],
        )

        a.vtysh(
            "configure terminal", "router bgp 65001", f"neighbor {LINK4[1]} shutdown", daemon="bgpd"
        )
        wait_until(
            lambda: "advertisedTo" not in a.vtysh(bgp(ANYCAST4), daemon="bgpd"), 10.0, "shutdown"
        )
        rec.save(
            "bgp4-peer-shutdown.json",
            a.vtysh(bgp(ANYCAST4), daemon="bgpd"),
            bgp(ANYCAST4),
            f"{ANYCAST4} on lo, neighbor {LINK4[1]} shutdown",
            prefix=ANYCAST4,
            advertised_to=[],
        )

        for address in (ANYCAST4, OTHER4, ANYCAST6):
            pair.del_address(address)
        wait_until(lambda: _ospf_ages(a) and min(_ospf_ages(a)) >= 3600, 10.0, "MaxAge")  # type: ignore[arg-type, return-value]
        situation = "every address deleted from lo a moment ago: ospfd flushes its LSA at MaxAge"
        rec.save(
            "ospf-withdrawn.json", a.vtysh(OSPF, daemon="ospfd"), OSPF, situation, announced=[]
        )
        rec.save(
            "ospf6-withdrawn.json", a.vtysh(OSPF6, daemon="ospf6d"), OSPF6, situation, announced=[]
        )
        rec.save(
            "bgp6-withdrawn.json",
            a.vtysh(bgp(ANYCAST6), daemon="bgpd"),
            bgp(ANYCAST6),
            situation,
            prefix=ANYCAST6,
            advertised_to=[],
        )
        wrong = "show ip ospf database external self-originate jsonx"
        text = run(a.vtysh_argv(wrong, daemon="ospfd"), check=False)  # exit 1, says why
        rec.save("error-unknown-command.txt", text, wrong, "a command ospfd does not know")
    finally:
        pair.close()
    pair = Pair()
    try:
        bare = {d: "hostname rt-bare\n" for d in ("zebra", "ospfd", "ospf6d", "bgpd")}
        c = Frr(pair, "a", ("ospfd", "ospf6d", "bgpd"), configs=bare, root=tree)
        pair.add_address(ANYCAST4)
        situation = "daemons running without router ospf / router ospf6 / router bgp"
        for file, daemon, command in (
            ("ospf-no-instance.txt", "ospfd", OSPF),
            ("ospf6-no-instance.txt", "ospf6d", OSPF6),
        ):
            text = c.vtysh(command, daemon=daemon)
            rec.save(file, text, command, situation, announced=[])
        rec.save(
            "bgp4-no-instance.json",
            c.vtysh(bgp(ANYCAST4), daemon="bgpd"),
            bgp(ANYCAST4),
            situation,
            prefix=ANYCAST4,
            advertised_to=[],
        )
        rec.close(name)
    finally:
        pair.close()


def private_tree(tree: Path) -> Path:
    """A writable overlay of `tree` (upper layer on a tmpfs), for chroot; call it only in
    a mount namespace of our own, so that neither the overlay nor the tree's users see it."""
    scratch = Path(tempfile.mkdtemp(prefix="rt-tree-", dir="/tmp"))
    run(["mount", "-t", "tmpfs", "tmpfs", str(scratch)])
    for sub in ("upper", "work", "merged"):
        (scratch / sub).mkdir()
    options = f"lowerdir={tree},upperdir={scratch / 'upper'},workdir={scratch / 'work'}"
    merged = scratch / "merged"
    run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)])
    for system in ("/proc", "/dev"):
        run(["mount", "--rbind", system, str(merged / system.lstrip("/"))])
    return merged


def install(merged: Path, packages: list[str]) -> None:
    """apt-get install into the overlay, with a policy-rc.d there that starts nothing."""
    resolv = merged / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text(Path("/etc/resolv.conf").read_text())
    policy = merged / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = ["env", "DEBIAN_FRONTEND=noninteractive", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    chroot = ["chroot", str(merged), *env]
    run([*chroot, "apt-get", "update", "-qq"], timeout=300.0)
    run([*chroot, "apt-get", "install", "-y", "-qq", *packages], timeout=300.0)


def _bird_up(bird: Bird, protocol: str) -> bool:
    states = {p.name: p.state for p in bird_protocols(bird.birdc("show protocols"))}
    return states.get(protocol) == "up"


def record_bird(root: Path, tree: Path | None = None) -> None:
    pair = Pair()
    try:
        a = Bird(pair, "a", root=tree)
        Bird(pair, "b", root=tree)
        banner = re.search(r"BIRD (\S+) ready", a.birdc("show status"))
        name = f"bird-{banner.group(1) if banner else 'unknown'}"
        rec = Recorder(root / name)
        for address in (ANYCAST4, OTHER4, ANYCAST6):
            pair.add_address(address)
        for protocol in ("anycast_ospf", "anycast_ospf6", "anycast_bgp"):
            wait_until(lambda p=protocol: _bird_up(a, p), 30.0, f"BIRD protocol {protocol} up")  # type: ignore[misc]

        def route(prefix: str, protocol: str) -> str:
            return f"show route {prefix.split('/')[0]}/{prefix.split('/')[1]} exported {protocol}"

        wait_until(lambda: ANYCAST4 in a.birdc(route(ANYCAST4, "anycast_ospf")), 10.0, "export")
        wait_until(lambda: ANYCAST4 in a.birdc(route(ANYCAST4, "anycast_bgp")), 10.0, "bgp export")
        situation = (
            f"{ANYCAST4}, {OTHER4}, {ANYCAST6} on lo; the filters pass {ANYCAST4} and {ANYCAST6}"
        )
        rec.save(
            "show-protocols.txt",
            a.birdc("show protocols"),
            "show protocols",
            situation,
            protocols={"anycast_ospf": "up", "anycast_ospf6": "up", "anycast_bgp": "up"},
        )
        for prefix, protocol, exported, file in (
            (ANYCAST4, "anycast_ospf", True, "route-ospf-exported.txt"),
            (OTHER4, "anycast_ospf", False, "route-ospf-filtered.txt"),
            (ANYCAST6, "anycast_ospf6", True, "route-ospf6-exported.txt"),
            (ANYCAST6, "anycast_ospf", False, "route-ospf-other-family.txt"),
            (ANYCAST4, "anycast_bgp", True, "route-bgp-exported.txt"),
        ):
            rec.save(
                file,
                a.birdc(route(prefix, protocol)),
                route(prefix, protocol),
                situation,
                prefix=prefix,
                exported=exported,
            )
        rec.save(
            "route-no-such-protocol.txt",
            a.birdc(route(ANYCAST4, "nosuch")),
            route(ANYCAST4, "nosuch"),
            "a protocol name BIRD does not know",
            error=True,
        )

        a.birdc("disable anycast_ospf")
        wait_until(lambda: not _bird_up(a, "anycast_ospf"), 10.0, "anycast_ospf down")
        situation = f"{ANYCAST4} on lo, `disable anycast_ospf`"
        rec.save(
            "show-protocols-disabled.txt",
            a.birdc("show protocols"),
            "show protocols",
            situation,
            protocols={"anycast_ospf": "down", "anycast_ospf6": "up", "anycast_bgp": "up"},
        )
        rec.save(
            "route-ospf-disabled.txt",
            a.birdc(route(ANYCAST4, "anycast_ospf")),
            route(ANYCAST4, "anycast_ospf"),
            situation,
            prefix=ANYCAST4,
            exported=False,
        )
        a.birdc("enable anycast_ospf")

        for address in (ANYCAST4, OTHER4, ANYCAST6):
            pair.del_address(address)
        wait_until(lambda: "8001" in a.birdc(route(ANYCAST4, "anycast_bgp")), 10.0, "withdrawal")
        situation = "every address deleted from lo"
        rec.save(
            "route-bgp-withdrawn.txt",
            a.birdc(route(ANYCAST4, "anycast_bgp")),
            route(ANYCAST4, "anycast_bgp"),
            situation,
            prefix=ANYCAST4,
            exported=False,
        )
        rec.close(name)
    finally:
        pair.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", choices=("frr", "bird"))
    parser.add_argument(
        "--root",
        type=Path,
        metavar="TREE",
        help="run the daemons of this Debian tree (e.g. a Debian 13 one, for FRR 10) "
        "with chroot on a private overlay of it",
    )
    parser.add_argument(
        "--overlay-install",
        nargs="+",
        metavar="PACKAGE",
        help="with --root: apt-get install these into the throw-away overlay first "
        "(the tree itself is never written)",
    )
    parser.add_argument("--in-private-mounts", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.root:
        if not args.in_private_mounts:  # again, in a mount namespace of its own
            argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
            unshare = ["unshare", "--mount", "--propagation", "private"]
            os.execvp("unshare", [*unshare, *argv, "--in-private-mounts"])
        merged = private_tree(args.root.resolve())
        try:
            if args.overlay_install:
                install(merged, args.overlay_install)
            if args.only != "bird":
                record_frr(args.out.resolve(), merged)
            if args.only != "frr":
                record_bird(args.out.resolve(), merged)
        finally:
            # Never rmtree: /proc and /dev are bound in there. Unmount, then the empty dir.
            run(["umount", "--recursive", "--lazy", str(merged.parent)], check=False)
            merged.parent.rmdir()
        return 0
    if args.only != "bird":
        record_frr(args.out)
    if args.only != "frr":
        record_bird(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
