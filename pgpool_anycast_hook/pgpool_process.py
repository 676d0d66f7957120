"""Is the local pgpool alive, and does it answer on its socket?

Liveness mirrors pgpool's own check of its pid file (decimal pid, then a NUL).
Readiness is pgpool_probe's SSLRequest answered, not a bare connect: the kernel
completes a connect into the listen backlog even when pgpool is stopped or hung,
and `systemctl start` runs ExecStartPost as soon as pgpool was forked, before it
has read its configuration or listens. So `status`, `reconcile`, `check` and
`add --wait-ready` all judge "pgpool serves" by the same probe.
"""

import ipaddress
import os
import socket
import time
from typing import NamedTuple

from pgpool_anycast_hook.pgpool_conf import PgpoolSettings

POLL_SECONDS = 0.05


class Endpoint(NamedTuple):
    family: int
    address: str | tuple[str, int]

    def __str__(self) -> str:
        if isinstance(self.address, str):
            return self.address
        return f"{self.address[0]}:{self.address[1]}"


def tcp_host(listen_addresses: str) -> str | None:
    """A numeric address to reach the first of `listen_addresses` at, or None.

    Never a name: resolving one could wait on DNS, on the failover path. A
    wildcard or `localhost` is reached on loopback; a hostname, or an address
    with a scope id, gives no TCP endpoint (the unix socket still is one).
    """
    first = listen_addresses.split(",")[0].strip()
    if first in ("", "*", "localhost", "0.0.0.0"):
        return "127.0.0.1"
    if first == "::":
        return "::1"
    try:
        address = ipaddress.ip_address(first)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return None
    return str(address)


def endpoints(settings: PgpoolSettings) -> list[Endpoint]:
    """The unix socket and the first TCP address pgpool listens on (if numeric)."""
    unix = os.path.join(settings.socket_dir, f".s.PGSQL.{settings.port}")
    found = [Endpoint(socket.AF_UNIX, unix)]
    host = tcp_host(settings.listen_addresses)
    if host is not None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        found.append(Endpoint(family, (host, settings.port)))
    return found


def listening(settings: PgpoolSettings, timeout: float = 0.5) -> Endpoint | None:
    """The endpoint that answered an SSLRequest within `timeout` seconds, or None."""
    from pgpool_anycast_hook.pgpool_probe import probe_once  # it imports this module

    return probe_once(settings, timeout, with_query=False).endpoint


def wait_until_listening(settings: PgpoolSettings, timeout: float) -> Endpoint | None:
    """Probe until pgpool answers, for at most `timeout` seconds (each probe within it)."""
    give_up = time.monotonic() + timeout
    for _ in range(int(timeout / POLL_SECONDS) + 2):
        endpoint = listening(settings, timeout=min(0.5, max(0.05, give_up - time.monotonic())))
        if endpoint is not None or time.monotonic() >= give_up:
            return endpoint
        time.sleep(POLL_SECONDS)
    return None


def read_pid_file(path: str) -> int | None:
    """The pid pgpool wrote (digits then NUL), or None if absent, garbled or not a file.

    Its directory is postgres's: read through safe_files.py (no link, no FIFO).
    """
    from pgpool_anycast_hook.safe_files import read_regular

    try:
        text = read_regular(path, 64).split(b"\0", 1)[0].strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) <= 10 else None


def pgpool_alive(pid: int | None) -> bool:
    """True if `pid` runs and is a pgpool process (pid files outlive kill -9)."""
    if pid is None or pid <= 0:
        return False
    import psutil  # not needed on the add/del/clean path

    try:
        process = psutil.Process(pid)
        return process.name() == "pgpool" and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
