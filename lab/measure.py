"""Observers that run beside the lab: the router's next hops over time, and client load.

Both run as child processes inside lab namespaces (router, client) and report with
CLOCK_MONOTONIC timestamps, which this process compares with its own time.monotonic().
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import netns
from lab.hosts import ANYCAST, CLIENT, ROUTER, Host

REPO = Path(__file__).resolve().parent.parent
# Debian's interpreter: it has python3-pyroute2, whatever `python3` is first in PATH.
SYSTEM_PYTHON = "/usr/bin/python3"


def lab_module(netns_name: str, module: str, *args: str) -> list[str]:
    return netns.in_ns(netns_name, [SYSTEM_PYTHON, "-m", module, *args])


class RouteWatch:
    """A router's next hops for an anycast address (the router's, for the IPv4 /32, unless
    told), polled every 5 ms in its namespace."""

    def __init__(
        self,
        duration: float = 60.0,
        interval: float = 0.005,
        address: str = ANYCAST,
        router: Host = ROUTER,
    ) -> None:
        self.changes: list[tuple[float, list[str]]] = []  # of the set of next hops
        # Every change of the nexthop group (its id or order), next-hop changes included,
        # each may move flows: (since, at), the change came after `since` and by `at`
        # (route_watch's doc).
        self.regroupings: list[tuple[float, float]] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(
            lab_module(
                router.netns,
                "lab.route_watch",
                "--address",
                address,
                "--duration",
                str(duration),
                "--interval",
                str(interval),
            ),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for(lambda hops: True, 10.0)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            change = json.loads(line)
            with self._cond:
                if not self.changes or self.changes[-1][1] != change["hops"]:
                    self.changes.append((change["t"], change["hops"]))
                self.regroupings.append((change["since"], change["t"]))
                self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[str]], bool], timeout: float, after: float = 0.0
    ) -> tuple[float, list[str]]:
        """First change at or after `after` whose hops satisfy `predicate` (bounded wait).

        The state in force at `after` counts too (a change just before it).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, (stamp, hops) in enumerate(self.changes):
                    next_stamp = (
                        self.changes[index + 1][0]
                        if index + 1 < len(self.changes)
                        else float("inf")
                    )
                    if next_stamp <= after:
                        continue
                    if predicate(hops):
                        return max(stamp, after), hops
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.changes[-1][1] if self.changes else None
                    raise TimeoutError(f"router next hops never matched; last {last}")
                self._cond.wait(min(left, 0.1))

    def current(self) -> list[str]:
        with self._cond:
            return list(self.changes[-1][1]) if self.changes else []

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def __enter__(self) -> RouteWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Attempt:
    start: float
    end: float
    ok: bool
    balancer: str  # or the error text when not ok
    backend: str


@dataclass
class LoadResult:
    attempts: list[Attempt]

    @property
    def failures(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.ok]

    def by_balancer(self) -> Counter[str]:
        return Counter(a.balancer for a in self.attempts if a.ok)

    def by_backend(self) -> Counter[str]:
        return Counter(a.backend for a in self.attempts if a.ok)

    def errors(self) -> Counter[str]:
        return Counter(a.balancer for a in self.failures)


class Load:
    """Connection-per-query load from a client namespace (site A's client unless told) at
    a fixed rate (bounded), to an anycast address (the IPv4 one unless told)."""

    def __init__(
        self,
        rate: float,
        duration: float,
        timeout: float = 2.0,
        target: str = ANYCAST,
        client: Host = CLIENT,
    ) -> None:
        self.duration = duration
        self._proc = subprocess.Popen(
            lab_module(
                client.netns,
                "lab.load",
                "--target",
                target,
                "--rate",
                str(rate),
                "--duration",
                str(duration),
                "--timeout",
                str(timeout),
            ),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def stop(self) -> None:
        """No new attempt from now on; result() then returns as soon as those in flight end."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR1)

    def result(self) -> LoadResult:
        out, _ = self._proc.communicate(timeout=self.duration + 60)
        if self._proc.returncode != 0:
            raise RuntimeError(f"load generator exited {self._proc.returncode}")
        raw = json.loads(out)
        return LoadResult([Attempt(*a) for a in raw["attempts"]])


def connect_many(count: int, target: str = ANYCAST, client: Host = CLIENT) -> LoadResult:
    """`count` separate connections one after another (no rate), who answered each."""
    load = Load(rate=200.0, duration=count / 200.0, target=target, client=client)
    return load.result()


def answers(host: str, port: int, timeout: float) -> bool:
    """One connection from the client namespace to host:port answers (bounded)."""
    proc = subprocess.run(
        lab_module(CLIENT.netns, "lab.probe", host, str(port), str(timeout)),
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 30,
        check=False,
    )  # fmt: skip
    return proc.returncode == 0


# -- one planned stop and start under load (bench/drain_orders) --------------------


@dataclass
class PlannedStop:
    """What the router and the client saw around one planned stop and start of a balancer.

    Times are time.monotonic(); `seen` is what `while_withdrawn` returned, if given.
    """

    result: LoadResult
    started_at: float  # the stop-and-start command began
    withdrawn_at: float  # the router's route lost the balancer's next hop
    hops_withdrawn: list[str]  # the router's next hops just then
    back_at: float  # the router's route has the next hop again
    finished_at: float  # the stop-and-start command returned
    seen: object
    regroupings: list[tuple[float, float]]  # the router's group changes meanwhile: (since, at)

    def failed_in_flight(self, instant: float) -> list[Attempt]:
        """Failures of connections under way at `instant`, such as a change of the
        router's next hops, which moves some flows to another balancer (ECMP rehash).
        For a change the watcher saw at `instant`, from the poll before it on."""
        spans = [(since, at) for since, at in self.regroupings if since <= instant <= at]
        return failed_during(self.result.failures, spans or [(instant, instant)])

    def failed_at_regroupings(self) -> list[Attempt]:
        """Failures that may have been in flight at a change of the router's nexthop
        group (its two changes of next hops, or a new group zebra installs for the same
        hops): under way at some moment between the poll that still saw the old group
        and the one that saw the new."""
        return failed_during(self.result.failures, self.regroupings)


def failed_during(failures: list[Attempt], spans: list[tuple[float, float]]) -> list[Attempt]:
    """The failures under way at some moment of one of the (since, at) spans."""
    return [
        a for a in failures if any(a.start <= at and since <= a.end + 0.05 for since, at in spans)
    ]


def planned_stop_under_load(
    stop_and_start: Callable[[], object],
    hop: str,
    rate: float,
    seconds: float,
    lead: float = 1.5,
    while_withdrawn: Callable[[], object] | None = None,
    tail: float = 1.5,
) -> PlannedStop:
    """Load from the client for at least `seconds`, and at least `tail` s after the
    balancer is back; after `lead` s run `stop_and_start` (in a thread) and follow the
    router's next hop `hop` out and back in. `while_withdrawn` runs as soon as the
    router has dropped the hop. A slow machine makes the load longer, never the part
    after the return shorter."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            stop_and_start()
        except BaseException as error:  # re-raised below, after the load finished
            errors.append(error)

    with RouteWatch(duration=seconds + 120) as watch:
        loaded_at = time.monotonic()
        load = Load(rate=rate, duration=seconds + 90.0)
        try:
            time.sleep(lead)
            worker = threading.Thread(target=guarded)
            started_at = time.monotonic()
            worker.start()
            try:
                withdrawn_at, hops = watch.wait_for(lambda h: hop not in h, 30.0, after=started_at)
                seen = while_withdrawn() if while_withdrawn else None
                back_at, _ = watch.wait_for(lambda h: hop in h, 90.0, after=withdrawn_at)
            except TimeoutError:
                worker.join(timeout=120.0)
                if errors:  # the command failed: that is the news, not the route
                    raise errors[0] from None
                raise
            worker.join(timeout=120.0)
            finished_at = time.monotonic()
            time.sleep(max(0.0, max(loaded_at + seconds, back_at + tail) - time.monotonic()))
        finally:
            load.stop()
        result = load.result()
        regroupings = [(since, at) for since, at in watch.regroupings if at >= started_at]
    if errors:
        raise errors[0]
    return PlannedStop(
        result, started_at, withdrawn_at, hops, back_at, finished_at, seen, regroupings
    )


# -- an address deleted directly (bench/failover: the router's own convergence) -----

# Runs inside a balancer's namespace with Debian's interpreter (it has pyroute2).
# argv: ADDRESS PREFIXLEN INTERFACE SYNC_SECONDS. With SYNC_SECONDS > 0 it first waits
# (bounded) for the address's IFA_CACHEINFO tstamp to change, i.e. for a renewal by the
# guard, so that the guard's next renewal (which re-adds the address) is a whole
# interval away. Prints {"t": CLOCK_MONOTONIC just before the RTM_DELADDR was sent,
# "synced": whether a renewal was seen}.
_DELETE_ADDRESS = """
import json, socket, sys, time
from pyroute2 import IPRoute
address, prefixlen, interface, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
with IPRoute() as ipr:
    index = ipr.link_lookup(ifname=interface)[0]
    def tstamp():
        for a in ipr.get_addr(index=index, family=socket.AF_INET):
            if a.get_attr("IFA_ADDRESS") == address and a["prefixlen"] == prefixlen:
                return a.get_attr("IFA_CACHEINFO")["tstamp"]
        sys.exit(f"{address}/{prefixlen} is not on {interface}")
    first, synced, deadline = tstamp(), False, time.monotonic() + sync
    while sync > 0 and time.monotonic() < deadline:
        time.sleep(0.001)
        if tstamp() != first:
            synced = True
            break
    sent = time.monotonic()
    ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    print(json.dumps({"t": sent, "synced": synced}), flush=True)
"""


@dataclass
class AddressDeleted:
    deleted_at: float  # time.monotonic() just before the kernel was asked to delete it
    synced: bool  # the deletion followed a renewal of the address (see delete_address)


def delete_address(
    netns_name: str, prefix: str, interface: str = "lo", sync_seconds: float = 0.0
) -> AddressDeleted:
    """Delete `prefix` (e.g. "198.18.2.0/32") from `interface` in a lab namespace over
    netlink, stamped in that namespace; bounded. With `sync_seconds`, first wait up to
    that long for the address to be renewed (the guard renews its lease every interval)."""
    address, _, prefixlen = prefix.partition("/")
    proc = netns.ns_run(
        netns_name,
        [SYSTEM_PYTHON, "-c", _DELETE_ADDRESS, address, prefixlen, interface, str(sync_seconds)],
        timeout=sync_seconds + 30,
    )
    raw = json.loads(proc.stdout)
    return AddressDeleted(float(raw["t"]), bool(raw["synced"]))


def add_address(netns_name: str, prefix: str, interface: str = "lo") -> None:
    """Put `prefix` back on `interface` in a lab namespace (no lease: permanent)."""
    netns.ns_run(netns_name, ["ip", "addr", "add", prefix, "dev", interface])
