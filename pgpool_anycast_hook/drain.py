"""`drain`, for planned stops (ExecStop= of pgpool2.service): withdraw, wait, return.

1. Withdraw: remove the addresses (FRR withdraws the route). With serving_route,
   the serving routes stay, so packets that still arrive while the routers
   converge, and the connections already open, are served.
2. Wait drain_seconds for the routers to converge.
3. Wait, at most drain_timeout, until no live client connection to pgpool's port
   is ESTABLISHED (sock_diag, this network namespace; any user may ask). One
   that has been quiet for drain_idle seconds does not count.
4. Return; systemd then stops pgpool, and ExecStopPost's `del` removes the
   serving routes.

When pgpool is already gone (its pid file names no living pgpool), there is
nothing to drain: it withdraws and returns without waiting. (systemd 252 does not
run ExecStop after the main process was killed; ExecStopPost's `del` withdraws
then. Where ExecStop does run after an exit, this keeps it short.)

On a PostgreSQL host (serve = "postgresql", ExecStop= of PostgreSQL's unit) the
guard withdraws, and the wait is for clients of PostgreSQL's port
(postgresql_port); NODE_ID means nothing there. The guard keeps the addresses
withdrawn until PostgreSQL starts again (a new postmaster).

Without serving_route, step 1 also stops this node from accepting packets for the
address: in-flight sessions stall and the drain only shortens the window in which
new connections arrive at a pgpool that is going away.
"""

import socket
import time

from pgpool_anycast_hook import announcement
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.errors import ExitCode
from pgpool_anycast_hook.pgpool_conf import read_pgpool_conf
from pgpool_anycast_hook.pgpool_process import pgpool_alive, read_pid_file
from pgpool_anycast_hook.run_log import RunLog

POLL_SECONDS = 0.2


TCP_ESTABLISHED = 1
INET_DIAG_INFO = 2


def client_connections(port: int, idle_after: float) -> tuple[int, int]:
    """(live, idle) established TCP connections to pgpool's port, from sock_diag.

    A connection is idle when neither side has sent data for `idle_after` seconds
    (tcp_info's last_data_recv and last_data_sent; 0 = never idle). After a
    withdrawal, the router's rehash leaves pgpool children holding connections
    whose clients are gone; those go quiet and no longer hold the drain. A client
    waiting on a query longer than `idle_after` looks idle too.
    """
    from pyroute2 import DiagSocket

    live = idle = 0
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for message in diag.get_sock_stats(
                family=family, states=1 << TCP_ESTABLISHED, extensions=1 << (INET_DIAG_INFO - 1)
            ):
                if message["idiag_sport"] != port:
                    continue
                info = message.get_attr("INET_DIAG_INFO")
                quiet_ms = (
                    min(info["tcpi_last_data_recv"], info["tcpi_last_data_sent"]) if info else 0
                )
                if idle_after and quiet_ms >= idle_after * 1000:
                    idle += 1
                else:
                    live += 1
    return live, idle


def wait_for_clients(port: int, timeout: float, idle_after: float) -> tuple[int, int]:
    """Poll until no live client connection remains, at most `timeout` s; (live, idle) left."""
    give_up = time.monotonic() + timeout
    left = client_connections(port, idle_after)
    for _ in range(int(timeout / POLL_SECONDS) + 2):
        if left[0] == 0 or time.monotonic() >= give_up:
            break
        time.sleep(min(POLL_SECONDS, max(0.0, give_up - time.monotonic())))
        left = client_connections(port, idle_after)
    return left


def extra_seconds(config: Config) -> float:
    """How much longer than `deadline` a drain may take."""
    return config.drain_seconds + config.drain_timeout


def drain(config: Config, node: int | None, dry_run: bool, log: RunLog) -> int:
    """Exit 0 when drained, TEMPFAIL (75) when clients were still connected at drain_timeout."""
    primary = config.primary_node_id  # None: "auto", whichever node is the primary
    postgresql = config.serve == "postgresql"
    node = (primary or 0) if node is None else node
    if not postgresql:
        log.set(node=node)
    if not config.addresses:
        log.set(decision="nothing", reason="no addresses configured", changed="none")
        return 0
    if postgresql:
        return _drain_postgresql(config, dry_run, log)
    if primary is not None and node != primary:
        log.set(decision="nothing", reason=f"node {node} is not the primary ({primary})",
                changed="none")  # fmt: skip
        return 0
    settings = read_pgpool_conf(config.pgpool_conf)
    port = settings.port
    if config.mode == "guarded":
        from pgpool_anycast_hook.guard_client import ask_guard

        code, fields = ask_guard(config.guard_socket, {"verb": "drain", "dry_run": dry_run})
        log.set(mode="guarded", **{k: v for k, v in fields.items() if k not in ("exit", "action")})
        if code:  # refused or failed: nothing was withdrawn, so there is nothing to wait for
            return code
    else:
        changed = announcement.withdraw(config, dry_run, keep_serving=True)  # never waits
        log.set(decision="withdraw", changed=announcement.changed_field(changed),
                serving="kept" if config.serving_route else "stopped")  # fmt: skip
    pgpool_pid = read_pid_file(settings.pid_file)
    if not pgpool_alive(pgpool_pid):
        # pgpool exited before the stop: nothing is left to drain.
        log.set(pgpool="gone")
        if dry_run:
            log.set(result="dry-run")
        return 0
    return _after_withdrawal(config, port, dry_run, log)


def _drain_postgresql(config: Config, dry_run: bool, log: RunLog) -> int:
    """serve = "postgresql": the guard withdraws; then the wait for PostgreSQL's clients."""
    from pgpool_anycast_hook.guard_client import ask_guard

    code, fields = ask_guard(config.guard_socket, {"verb": "drain", "dry_run": dry_run})
    log.set(mode="guarded", serve="postgresql",
            **{k: v for k, v in fields.items() if k not in ("exit", "action")})  # fmt: skip
    if code:
        return code
    port = config.postgresql_port
    return _after_withdrawal(config, port, dry_run, log)


def _after_withdrawal(config: Config, port: int, dry_run: bool, log: RunLog) -> int:
    """drain_seconds for the routers, then at most drain_timeout for the clients of `port`;
    with dry_run, only what it would wait for."""
    if dry_run:
        log.set(result="dry-run", would_wait=f"{config.drain_seconds:g}+{config.drain_timeout:g}s",
                clients=sum(client_connections(port, config.drain_idle)))  # fmt: skip
        return 0
    time.sleep(config.drain_seconds)
    started = time.monotonic()
    remaining, idle = wait_for_clients(port, config.drain_timeout, config.drain_idle)
    log.set(waited_ms=round((time.monotonic() - started) * 1000), clients_left=remaining,
            idle_left=idle)  # fmt: skip
    if remaining:
        log.set(result="drain-timeout")
        return int(ExitCode.TEMPFAIL)
    return 0
