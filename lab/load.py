"""Fixed-rate connection-per-query load against the anycast address, one outcome each.

Runs inside the client namespace (`ip netns exec lab-client /usr/bin/python3 -m lab.load`).
Attempt i starts at t0 + i/rate whatever happened to the others (a thread each, bounded
in number), opens a new connection, runs one query and closes. Prints one JSON document:
{"t0": ..., "attempts": [[start, end, ok, balancer_or_error, backend], ...]}.
SIGUSR1 ends it early: no attempt starts after it, and those in flight finish.
Bounded: at most MAX_ATTEMPTS attempts and MAX_DURATION seconds.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from lab import hosts, pgwire

MAX_ATTEMPTS = 20000
MAX_DURATION = 120.0
WHO_ANSWERED = "select host(inet_client_addr()), host(inet_server_addr())"


def attempt(target: str, port: int, timeout: float) -> tuple[float, float, bool, str, str]:
    start = time.monotonic()
    try:
        row = pgwire.query(target, port, WHO_ANSWERED, timeout=timeout)
    except pgwire.QueryFailed as error:
        return start, time.monotonic(), False, str(error), ""
    balancer = hosts.balancer_by_ip(row[0] or "")
    backend = hosts.backend_by_ip(row[1] or "")
    return start, time.monotonic(), True, balancer, backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default=hosts.ANYCAST)
    parser.add_argument("--port", type=int, default=hosts.PGPOOL_PORT)
    parser.add_argument("--rate", type=float, default=100.0, help="connections per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=2.0, help="per connection")
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()
    duration = min(args.duration, MAX_DURATION)
    count = min(round(args.rate * duration), MAX_ATTEMPTS)
    results: list[tuple[float, float, bool, str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: stop.set())

    def one() -> None:
        outcome = attempt(args.target, args.port, args.timeout)
        with lock:
            results.append(outcome)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for i in range(count):
            delay = t0 + i / args.rate - time.monotonic()
            if stop.wait(max(delay, 0.0)):
                break
            pool.submit(one)
    results.sort()
    print(json.dumps({"t0": t0, "rate": args.rate, "attempts": results}))


if __name__ == "__main__":
    main()
