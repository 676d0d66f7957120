"""Real FRR and BIRD 2 daemons, started by hand in two network namespaces of our own.

Shared by tests/netns/test_routing.py and scripts/record_routing.py, so that the answers
recorded for the unit tests come from the same set-up the netns tests check.

Namespace "a" is the balancer: the anycast addresses go on its lo, its daemons
redistribute them. Namespace "b" is its peer over a veth pair (BGP needs an established
peer before anything is advertised). Names start with `rt-` and carry our pid, so they
never meet the lab's (lab-*) or another helper's. Every path a daemon uses is in a
private directory: the vty sockets, pid files, zserv socket, logs; and, since ospfd and
ospf6d write their graceful-restart state to a fixed /run/frr/*-gr.json, each FRR daemon
runs in a mount namespace of its own where /run/frr is that private directory. Nothing
here reads or writes the host's FRR, BIRD or interfaces. Every process is ended by its
pid; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

FRR_DIR = Path("/usr/lib/frr")
VTYSH = "/usr/bin/vtysh"
BIRD = "/usr/sbin/bird"
BIRDC = "/usr/sbin/birdc"

ANYCAST4 = "198.18.2.0/32"
ANYCAST6 = "2001:db8:250::1/128"
OTHER4 = "198.18.2.1/32"  # on lo too, but no export policy lets it out: the "filter rejects" case
LINK4 = ("10.250.0.1", "10.250.0.2")  # a, b on the veth pair, /30
LINK6 = ("fd00:250::1", "fd00:250::2")  # /64


def run(argv: list[str], timeout: float = 20.0, check: bool = True) -> str:
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll every 0.1 s, at most `timeout` seconds; return the seconds it took."""
    started = time.monotonic()
    for _ in range(int(timeout / 0.1) + 1):
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            break
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


class Pair:
    """Namespaces rt-<pid>-<n>-a and -b, a veth between them (rt0 in a, rt1 in b)."""

    _count = 0

    def __init__(self) -> None:
        Pair._count += 1
        base = f"rt-{os.getpid()}-{Pair._count}"
        self.a, self.b = f"{base}-a", f"{base}-b"
        self.root = Path(tempfile.mkdtemp(prefix=f"{base}-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.pids: list[int] = []
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        for name in (self.a, self.b):
            run(["ip", "netns", "add", name])
            run(["ip", "-n", name, "link", "set", "lo", "up"])
        run(["ip", "-n", self.a, "link", "add", "rt0", "type", "veth", "peer", "name", "rt1"])
        run(["ip", "-n", self.a, "link", "set", "rt1", "netns", self.b])
        for name, dev, v4, v6 in (
            (self.a, "rt0", LINK4[0], LINK6[0]),
            (self.b, "rt1", LINK4[1], LINK6[1]),
        ):
            run(["ip", "-n", name, "address", "add", f"{v4}/30", "dev", dev])
            run(["ip", "-n", name, "address", "add", f"{v6}/64", "dev", dev, "nodad"])
            run(["ip", "-n", name, "link", "set", dev, "up"])

    def add_address(self, address: str) -> None:
        run(["ip", "-n", self.a, "address", "add", address, "dev", "lo"])

    def del_address(self, address: str) -> None:
        run(["ip", "-n", self.a, "address", "del", address, "dev", "lo"])

    def spawn(self, netns: str, argv: list[str], log: Path) -> int:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.pids.append(proc.pid)
        return proc.pid

    def stop(self, pid: int, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; reaps the child."""
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def close(self) -> None:
        for pid in reversed(self.pids):
            with contextlib.suppress(ChildProcessError):
                self.stop(pid)
        self.pids.clear()
        for name in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
        shutil.rmtree(self.root, ignore_errors=True)


PREFIX_LISTS = f"""\
ip prefix-list pgpool-anycast seq 10 permit {ANYCAST4}
ipv6 prefix-list pgpool-anycast6 seq 10 permit {ANYCAST6}
route-map pgpool-anycast permit 10
 match ip address prefix-list pgpool-anycast
exit
route-map pgpool-anycast6 permit 10
 match ipv6 address prefix-list pgpool-anycast6
exit
"""


def frr_configs(side: str) -> dict[str, str]:
    """The per-daemon configuration files (no integrated frr.conf) of side a or b."""
    me, peer = (0, 1) if side == "a" else (1, 0)
    asn, peer_asn = (65001, 65002) if side == "a" else (65002, 65001)
    dev = "rt0" if side == "a" else "rt1"
    redistribute4 = " redistribute connected route-map pgpool-anycast\n" if side == "a" else ""
    redistribute6 = " redistribute connected route-map pgpool-anycast6\n" if side == "a" else ""
    return {
        "zebra": f"hostname rt-{side}\n",
        "ospfd": PREFIX_LISTS
        + f"interface {dev}\n ip ospf hello-interval 1\n ip ospf dead-interval 3\nexit\n"
        + f"router ospf\n ospf router-id {LINK4[me]}\n{redistribute4}"
        + " timers throttle lsa all 0\n timers lsa min-arrival 0\n"
        + " network 10.250.0.0/30 area 0\nexit\n",
        "ospf6d": PREFIX_LISTS
        + f"interface {dev}\n ipv6 ospf6 area 0.0.0.0\n ipv6 ospf6 hello-interval 1\n"
        + " ipv6 ospf6 dead-interval 3\nexit\n"
        + f"router ospf6\n ospf6 router-id {LINK4[me]}\n{redistribute6}exit\n",
        "bgpd": PREFIX_LISTS
        + f"router bgp {asn}\n bgp router-id {LINK4[me]}\n no bgp ebgp-requires-policy\n"
        + " no bgp network import-check\n"
        + f" neighbor {LINK4[peer]} remote-as {peer_asn}\n"
        + f" neighbor {LINK4[peer]} timers 1 3\n neighbor {LINK4[peer]} timers connect 1\n"
        + f" neighbor {LINK6[peer]} remote-as {peer_asn}\n"
        + f" neighbor {LINK6[peer]} timers 1 3\n neighbor {LINK6[peer]} timers connect 1\n"
        + f" address-family ipv4 unicast\n{redistribute4}"
        + f"  no neighbor {LINK6[peer]} activate\n exit-address-family\n"
        + f" address-family ipv6 unicast\n{redistribute6}"
        + f"  neighbor {LINK6[peer]} activate\n exit-address-family\nexit\n",
    }


def _daemon_dir(pair: Pair, side: str, root: Path | None, user: str) -> tuple[Path, Path]:
    """A new directory of one side's daemon, owned by `user` (of `root`'s tree, if given):
    (the path the daemon sees, the same path seen from here)."""
    name = f"{user}-{side}"
    inner = Path("/tmp") / f"{pair.a[:-2]}-{name}" if root else pair.root / name
    directory = root / inner.relative_to("/") if root else inner
    directory.mkdir()
    os.chown(directory, *_ids(root or Path("/"), user))
    os.chmod(directory, 0o755)
    return inner, directory


def _ids(root: Path, user: str) -> tuple[int, int]:
    """uid and gid of `user` in the passwd file under `root` (another release's, maybe)."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise KeyError(f"no user {user} in {root}/etc/passwd")


class Frr:
    """zebra plus the given daemons of one side, every path in `directory`.

    With `root` (a Debian tree, e.g. a Debian 13 one for FRR 10), the daemons and vtysh
    are that tree's, run with chroot; `root` must be a private overlay of it, never a
    tree that others use (scripts/record_routing.py --root makes one).
    """

    def __init__(
        self,
        pair: Pair,
        side: str,
        daemons: tuple[str, ...],
        configs: dict[str, str] | None = None,
        root: Path | None = None,
    ) -> None:
        self.pair = pair
        self.netns = pair.a if side == "a" else pair.b
        self.root = root
        self.inner, self.directory = _daemon_dir(pair, side, root, "frr")
        uid, gid = _ids(root or Path("/"), "frr")
        self.pids: dict[str, int] = {}
        configs = configs or frr_configs(side)
        for daemon in ("zebra", *daemons):
            conf = self.directory / f"{daemon}.conf"
            conf.write_text(configs[daemon])
            os.chown(conf, uid, gid)
            conf.chmod(0o640)
        self.start("zebra")
        zserv = self.directory / "zserv.api"
        wait_until(zserv.exists, 10.0, "zebra's zserv socket")
        for daemon in daemons:
            self.start(daemon)
        for daemon in ("zebra", *daemons):
            vty = self.directory / f"{daemon}.vty"
            wait_until(vty.exists, 10.0, f"{daemon}'s vty socket")

    def start(self, daemon: str) -> None:
        d = self.inner
        argv = [
            str(FRR_DIR / daemon),
            "-f", str(d / f"{daemon}.conf"),
            "-i", str(d / f"{daemon}.pid"),
            "-z", str(d / "zserv.api"),
            "--vty_socket", str(d),
            "-P", "0",
            "-u", "frr",
            "-g", "frr",
            "--log", f"file:{d / (daemon + '.log')}",
        ]  # fmt: skip
        if self.root:
            argv = ["chroot", str(self.root), *argv]  # its /run/frr is the overlay's
        elif Path("/run/frr").is_dir():
            # ospfd and ospf6d keep graceful-restart state in /run/frr: give them ours.
            argv = [
                "unshare", "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", 'mount --bind "$0" /run/frr && exec "$@"', str(d), *argv,
            ]  # fmt: skip
        self.pids[daemon] = self.pair.spawn(self.netns, argv, self.directory / f"{daemon}.out")

    def kill(self, daemon: str) -> None:
        pid = self.pids.pop(daemon)
        self.pair.stop(pid)
        self.pair.pids.remove(pid)

    def vtysh_argv(self, *commands: str, daemon: str | None = None) -> list[str]:
        argv = [VTYSH, "--vty_socket", str(self.inner)]
        if daemon:
            argv += ["-d", daemon]
        for command in commands:
            argv += ["-c", command]
        return ["chroot", str(self.root), *argv] if self.root else argv

    def vtysh(self, *commands: str, daemon: str | None = None) -> str:
        return run(self.vtysh_argv(*commands, daemon=daemon), timeout=10.0)


def bird_config(side: str) -> str:
    me, peer = (0, 1) if side == "a" else (1, 0)
    dev = "rt0" if side == "a" else "rt1"
    asn, peer_asn = (65001, 65002) if side == "a" else (65002, 65001)
    export4 = "filter pgpool_anycast" if side == "a" else "none"
    export6 = "filter pgpool_anycast6" if side == "a" else "none"
    return f"""\
router id {LINK4[me]};
protocol device {{ scan time 1; }}
protocol direct anycast_lo {{ ipv4; ipv6; interface "lo"; }}
filter pgpool_anycast {{ if net = {ANYCAST4} then accept; reject; }}
filter pgpool_anycast6 {{ if net = {ANYCAST6} then accept; reject; }}
protocol ospf v2 anycast_ospf {{
  ipv4 {{ import none; export {export4}; }};
  area 0 {{ interface "{dev}" {{ hello 1; dead 3; }}; }};
}}
protocol ospf v3 anycast_ospf6 {{
  ipv6 {{ import none; export {export6}; }};
  area 0 {{ interface "{dev}" {{ hello 1; dead 3; }}; }};
}}
# Disabled until a test enables it: a route to the anycast address that is not the
# address on lo, which the filter exports all the same ("announced but absent").
protocol static stray {{ disabled; ipv4; route {ANYCAST4} blackhole; }}
protocol bgp anycast_bgp {{
  local {LINK4[me]} as {asn};
  neighbor {LINK4[peer]} as {peer_asn};
  connect retry time 1;
  ipv4 {{ import all; export {export4}; }};
}}
"""


class Bird:
    """One BIRD 2 instance of one side, with its control socket in the pair's directory.

    With `root`, that tree's bird and birdc, run with chroot (see Frr).
    """

    def __init__(self, pair: Pair, side: str, root: Path | None = None) -> None:
        self.pair = pair
        self.netns = pair.a if side == "a" else pair.b
        self.root = root
        self.inner, self.directory = _daemon_dir(pair, side, root, "bird")  # bird's pid file
        self.socket = self.directory / "bird.ctl"
        (self.directory / "bird.conf").write_text(bird_config(side))
        (self.directory / "bird.conf").chmod(0o644)
        d = self.inner
        argv = [BIRD, "-f", "-c", str(d / "bird.conf"), "-s", str(d / "bird.ctl")]
        argv += ["-P", str(d / "bird.pid"), "-u", "bird", "-g", "bird"]
        if root:
            argv = ["chroot", str(root), *argv]
        self.pid = pair.spawn(self.netns, argv, self.directory / "bird.out")
        wait_until(self.socket.exists, 10.0, "BIRD's control socket")

    def birdc(self, command: str) -> str:
        """birdc -v's answer; it exits 1 after an error reply, which is an answer too."""
        argv = [BIRDC, "-s", str(self.inner / "bird.ctl"), "-v", command]
        if self.root:
            argv = ["chroot", str(self.root), *argv]
        return run(argv, timeout=10.0, check=False)
