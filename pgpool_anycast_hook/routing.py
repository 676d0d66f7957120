"""`status --routing`: ask the local routing daemon whether it really exports each address.

The address on `lo` is only half of an announcement: FRR or BIRD must also export it (a
route-map or filter may reject it, the protocol may be down, the daemon may have
died). This module asks them: FRR through vtysh on the vty sockets in `frr_vty_socket`,
BIRD through birdc on `bird_socket`. Reading their answers is routing_parse.py's.

Every question is a subprocess: an argv list (no shell), stdin /dev/null, a clean
environment, its own process group (killed on timeout), at most MAX_OUTPUT bytes read,
and all the questions of one run share `routing_timeout`. A daemon that cannot be
asked (no socket, a refused connection, permission denied, a timeout, an answer we
cannot read) makes the answer "unknown" with the reason; that is not drift. FRR is
several daemons: while any of them answers (zebra, say), one that does not (ospfd
died) announces nothing, which is an answer: "not announced".
"""

import contextlib
import errno
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from typing import NamedTuple

from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.routing_parse import (
    MAX_TEXT,
    Network,
    RoutingParseError,
    bird_exported,
    bird_protocols,
    frr_bgp_advertised,
    frr_ospf6_external,
    frr_ospf_external,
)

VTYSH = "/usr/bin/vtysh"
BIRDC = "/usr/sbin/birdc"
FRR_DAEMONS = ("ospfd", "ospf6d", "bgpd")  # the ones that announce; zebra only says FRR is up
BIRD_EXPORTERS = ("OSPF", "BGP", "RIP", "Babel")  # BIRD protocol types that tell neighbours
MAX_OUTPUT = MAX_TEXT
CONNECT_SECONDS = 0.2  # one look at a control socket
_BIRD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
OSPF_COMMAND = "show ip ospf database external self-originate json"
OSPF6_COMMAND = "show ipv6 ospf6 database as-external self-originated json"
GROUPS = {"frr": "frrvty", "bird": "bird"}


class RoutingAnswer(NamedTuple):
    daemon: str  # "frr", "bird", or "" when none was asked
    state: str  # "ok": asked and answered; "unknown": could not ask; "off": routing_daemon none
    detail: str  # what was asked, or why it could not be
    announced_by: dict[Network, tuple[str, ...]]  # state "ok": who exports each (empty: nobody)


class _Unknown(Exception):
    """The daemon could not be asked; the message says why, for the operator."""


class _Clock:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise _Unknown(f"no answer within routing_timeout ({self.seconds:g} s)")
        return left


def networks_of(config: Config) -> list[Network]:
    return [address.network for address in config.addresses]


def ask(config: Config, networks: list[Network]) -> RoutingAnswer:
    """Which of `networks` the routing daemon exports, and through what."""
    daemon = config.routing_daemon
    if daemon == "none":
        return RoutingAnswer("", "off", 'not asked (routing_daemon = "none")', {})
    if daemon == "auto":
        daemon = _detect(config)
        if not daemon:
            return RoutingAnswer(
                "",
                "unknown",
                f"no routing daemon found (no FRR vty socket in {config.frr_vty_socket}, "
                f"no BIRD socket {config.bird_socket})",
                {},
            )
    clock = _Clock(config.routing_timeout)
    try:
        if daemon == "frr":
            detail, by = _ask_frr(config, networks, clock)
        else:
            detail, by = _ask_bird(config, networks, clock)
    except _Unknown as reason:
        return RoutingAnswer(daemon, "unknown", str(reason), {})
    except (OSError, ValueError) as error:  # none expected; status must still answer
        return RoutingAnswer(daemon, "unknown", f"cannot ask: {error}", {})
    return RoutingAnswer(daemon, "ok", detail, {n: tuple(by[n]) for n in networks})


def _detect(config: Config) -> str:
    """auto: FRR if one of its daemons' vty sockets is there, else BIRD if its socket is."""
    for name in ("zebra", *FRR_DAEMONS):
        if os.path.exists(os.path.join(config.frr_vty_socket, f"{name}.vty")):
            return "frr"
    return "bird" if os.path.exists(config.bird_socket) else ""


def _reachable(path: str, daemon: str, clock: _Clock) -> bool:
    """Whether a daemon listens on this Unix socket: False if absent or refused."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(min(CONNECT_SECONDS, clock.left()))
        probe.connect(path)
        return True
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        return False
    except PermissionError:
        raise _Unknown(
            f"permission denied: {path} (the user needs group {GROUPS[daemon]})"
        ) from None
    except TimeoutError:
        raise _Unknown(f"{path} did not accept a connection within {CONNECT_SECONDS:g} s") from None
    except OSError as error:
        if error.errno == errno.EAGAIN:  # a full listen backlog: the daemon is stuck
            raise _Unknown(f"{path}: the daemon does not accept connections") from None
        raise _Unknown(f"{path}: {error.strerror or error}") from None
    finally:
        probe.close()


def _run(argv: list[str], clock: _Clock) -> tuple[int, str, str]:
    """Run one question: bounded in time and in output; never a shell."""
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_ENV,
            start_new_session=True,
        )
    except OSError as error:
        raise _Unknown(f"cannot run {argv[0]}: {error.strerror or error}") from None
    assert process.stdout is not None and process.stderr is not None
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    size = 0
    problem = ""
    code: int | None = None
    try:
        with selectors.DefaultSelector() as selector:
            for fd in (out_fd, err_fd):
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map() and not problem:
                for key, _ in selector.select(clock.left()):
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fd)
                        continue
                    chunks[key.fd].append(data)
                    size += len(data)
                    if size > MAX_OUTPUT:
                        problem = f"{os.path.basename(argv[0])} answered over {MAX_OUTPUT} bytes"
                        break
        if not problem:
            code = process.wait(clock.left())
    except (_Unknown, subprocess.TimeoutExpired):
        problem = f"{os.path.basename(argv[0])} did not answer within routing_timeout"
    finally:
        if process.returncode is None:
            _kill(process)
        process.stdout.close()
        process.stderr.close()
    if problem or code is None:
        raise _Unknown(problem or f"{argv[0]} did not finish")
    return code, _text(b"".join(chunks[out_fd])), _text(b"".join(chunks[err_fd]))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _kill(process: "subprocess.Popen[bytes]") -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is its own
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(1.0)


def _first_line(*texts: str) -> str:
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                return line.strip()[:120]
    return "no output"


def _frr(config: Config, daemon: str, command: str, clock: _Clock) -> str:
    argv = [VTYSH, "--vty_socket", config.frr_vty_socket, "-d", daemon, "-c", command]
    code, out, err = _run(argv, clock)
    if code != 0 and not out.strip():
        raise _Unknown(f"vtysh -d {daemon} exited {code}: {_first_line(err, out)}")
    return out


def _ask_frr(
    config: Config, networks: list[Network], clock: _Clock
) -> tuple[str, dict[Network, list[str]]]:
    directory = config.frr_vty_socket
    if not os.path.isdir(directory):
        raise _Unknown(f"FRR is not reachable: no directory {directory}")
    running = [d for d in FRR_DAEMONS if _reachable(f"{directory}/{d}.vty", "frr", clock)]
    by: dict[Network, list[str]] = {network: [] for network in networks}
    if not running:
        if not _reachable(f"{directory}/zebra.vty", "frr", clock):
            raise _Unknown(f"FRR is not reachable: no daemon answers in {directory}")
        return "FRR runs none of ospfd, ospf6d, bgpd: nothing is announced", by
    if not os.access(VTYSH, os.X_OK):
        raise _Unknown(f"{VTYSH} is not installed")
    v4 = [n for n in networks if n.version == 4]
    v6 = [n for n in networks if n.version == 6]
    try:
        if "ospfd" in running and v4:
            ospf = frr_ospf_external(_frr(config, "ospfd", OSPF_COMMAND, clock))
            for net4 in v4:
                if net4 in ospf:
                    by[net4].append("ospf")
        if "ospf6d" in running and v6:
            ospf6 = frr_ospf6_external(_frr(config, "ospf6d", OSPF6_COMMAND, clock))
            for net6 in v6:
                if net6 in ospf6:
                    by[net6].append("ospf6")
        if "bgpd" in running:
            for network in networks:
                family = f"ipv{network.version}"
                command = f"show bgp {family} unicast {network} json"
                peers = frr_bgp_advertised(_frr(config, "bgpd", command, clock), network)
                if peers:
                    by[network].append(f"bgp to {', '.join(peers)}")
    except RoutingParseError as error:
        raise _Unknown(f"cannot read FRR's answer: {error}") from None
    return f"asked {', '.join(running)}", by


def _bird(config: Config, command: str, clock: _Clock) -> str:
    # -r: restricted, only `show` commands; -v: BIRD's reply codes on every line.
    # birdc exits 1 after an error reply too ("8001 Network not found"): the replies
    # decide; only without BIRD's greeting (0001) did it not get an answer at all.
    code, out, err = _run([BIRDC, "-r", "-v", "-s", config.bird_socket, command], clock)
    if not out.startswith("0001 "):
        raise _Unknown(f"birdc exited {code}: {_first_line(err, out)}")
    return out


def _ask_bird(
    config: Config, networks: list[Network], clock: _Clock
) -> tuple[str, dict[Network, list[str]]]:
    if not _reachable(config.bird_socket, "bird", clock):
        raise _Unknown(f"BIRD is not reachable: nothing listens on {config.bird_socket}")
    if not os.access(BIRDC, os.X_OK):
        raise _Unknown(f"{BIRDC} is not installed")
    by: dict[Network, list[str]] = {network: [] for network in networks}
    try:
        protocols = bird_protocols(_bird(config, "show protocols", clock))
        exporters = [p for p in protocols if p.proto in BIRD_EXPORTERS]
        up = [p for p in exporters if p.state == "up" and _BIRD_NAME.fullmatch(p.name)]
        for protocol in up:
            for network in networks:
                text = _bird(config, f"show route {network} exported {protocol.name}", clock)
                if bird_exported(text, network):
                    by[network].append(protocol.name)
    except RoutingParseError as error:
        raise _Unknown(f"cannot read BIRD's answer: {error}") from None
    if not exporters:
        return "BIRD runs no OSPF, BGP, RIP or Babel protocol: nothing is announced", by
    down = [f"{p.name} {p.state}" for p in exporters if p not in up]
    return f"asked {', '.join(p.name for p in up) or 'none'}" + (
        f"; {', '.join(down)}" if down else ""
    ), by
