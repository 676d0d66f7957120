"""One run of `add`, `del` or `clean`: read, decide, apply, log.

The order is fixed: load the configuration and arm the deadline (logged_run.py),
(for `add`) read the withdrawal mark and (with `--wait-ready`) wait for pgpool to
listen, take the run lock (not for `del`: a withdrawal never waits, see
run_lock.py), read pgpool's state, decide (decision.py, pure), apply
(announcement.py or pgpool_status.py), and write the one log line. Every failure
becomes an exit code from errors.py.

On a PostgreSQL host (serve = "postgresql") none of the three applies: they are
pgpool's hooks, and the run says so (errors.NotApplicable, exit 2).

In the guarded wiring, main.py sends `add` and `del` to guard_client.py before
this module is imported; they come here only when the compiled configuration
cannot answer, and then go to the guard from here (guard_client.exchange).
"""

from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.decision import (
    Decision,
    HookEvent,
    Outcome,
    Situation,
    Verb,
    decide,
    deciding_primary,
)
from pgpool_anycast_hook.errors import NotReady, file_errors
from pgpool_anycast_hook.hook_argv import HookArgs
from pgpool_anycast_hook.logged_run import run_logged, start_fields
from pgpool_anycast_hook.run_log import SEVERITY_INFO, RunLog


def status_file_path(config: Config) -> tuple[str, int]:
    """Where pgpool keeps pgpool_status, and how many backends it has configured."""
    from pgpool_anycast_hook.pgpool_conf import read_pgpool_conf

    settings = read_pgpool_conf(config.pgpool_conf)
    return config.status_file or settings.status_file, settings.num_backends


def read_state(config: Config, event: HookEvent, log: RunLog) -> Situation:
    """pgpool's view of the primary, and the hold; only what the verb needs.

    `del` needs neither, and skips importing the readers: it is the withdrawal
    path, where every millisecond counts (see netlink_socket.py).
    """
    primary = deciding_primary(event, config.primary_node_id)
    if event.verb is Verb.DEL or primary is None:  # None: "auto", the guard's to decide
        return Situation(primary_usable=True, hold=False)
    from pgpool_anycast_hook import pgpool_status
    from pgpool_anycast_hook.hold import read_hold

    path, num_backends = status_file_path(config)
    status = pgpool_status.read_status_file(path, max(num_backends, primary + 1))
    log.set(status=status.summary())
    if status.note:
        log.set(status_note=status.note)
    hold = event.verb is Verb.ADD and read_hold(config.state_dir) is not None
    return Situation(primary_usable=status.node_usable(primary), hold=hold)


def apply(config: Config, decision: Decision, dry_run: bool, mark: bytes, log: RunLog) -> None:
    from pgpool_anycast_hook import announcement  # netlink: not on the guarded client's path

    if decision.outcome is Outcome.ANNOUNCE:
        # announcement.py adds the serving routes (serving_route) before the addresses.
        changed = announcement.announce(config, dry_run, mark, log)
        log.set(changed=announcement.changed_field(changed))
    elif decision.outcome is Outcome.WITHDRAW:
        # ... and removes the addresses before the serving routes.
        log.set(changed=announcement.changed_field(announcement.withdraw(config, dry_run)))
    elif decision.outcome is Outcome.SET_ASIDE_STATUS:
        from pgpool_anycast_hook import pgpool_status

        path, _ = status_file_path(config)
        if dry_run:
            log.set(changed=f"would-move:{path}")
        else:
            with file_errors(f"move {path} aside"):
                try:
                    log.set(changed=f"moved:{path}->{pgpool_status.set_aside(path)}")
                except FileNotFoundError:
                    log.set(changed="none", note="pgpool_status vanished before it was moved")
    else:
        log.set(changed="none")


def run_hook(args: HookArgs) -> int:
    event = HookEvent(Verb(args.verb), args.node, args.old_primary)

    def body(config: Config, log: RunLog) -> int:
        if config.serve == "postgresql":
            from pgpool_anycast_hook.errors import NotApplicable

            raise NotApplicable(
                f"{event.verb.value} is pgpool's hook; this host follows PostgreSQL "
                '(serve = "postgresql"): see status, drain, disable'
            )
        if config.mode == "guarded" and event.verb is not Verb.CLEAN:
            from pgpool_anycast_hook.guard_client import exchange

            return exchange(args, config.guard_socket, config.pgpool_conf, log)
        if not config.addresses:
            decision = decide(event, False, config.primary_node_id, Situation(True, False))
            log.set(decision=decision.outcome.value, reason=decision.reason, changed="none")
            if args.dry_run:
                log.set(result="dry-run")
            return 0
        if event.verb is Verb.DEL:
            decision = decide(event, True, config.primary_node_id, read_state(config, event, log))
            log.set(decision=decision.outcome.value, reason=decision.reason)
            apply(config, decision, args.dry_run, b"", log)
            if args.dry_run:
                log.set(result="dry-run")
            return 0
        from pgpool_anycast_hook.run_lock import run_lock, withdrawal_mark

        mark = withdrawal_mark(config.state_dir)
        if args.wait_ready:
            wait_for_pgpool(config.pgpool_conf, args.wait_ready, log)
        with run_lock(config.lock_path, config.lock_timeout):
            state = read_state(config, event, log)
            decision = decide(event, True, config.primary_node_id, state)
            log.set(decision=decision.outcome.value, reason=decision.reason)
            apply(config, decision, args.dry_run, mark, log)
            # Log while still holding the lock: the order of the lines is the order
            # in which the announcing runs changed the addresses.
            log.emit(SEVERITY_INFO, result="dry-run" if args.dry_run else "ok", exit=0)
        return 0

    fields = start_fields(args)
    return run_logged(args.verb, args.config_path, body, lambda _: args.wait_ready, fields=fields)


def wait_for_pgpool(pgpool_conf: str, seconds: float, log: RunLog) -> None:
    """`add --wait-ready`: wait until pgpool listens, at most `seconds`."""
    from pgpool_anycast_hook.pgpool_conf import read_pgpool_conf
    from pgpool_anycast_hook.pgpool_process import wait_until_listening

    settings = read_pgpool_conf(pgpool_conf)
    endpoint = wait_until_listening(settings, seconds)
    if endpoint is None:
        raise NotReady(
            f"pgpool did not answer on its socket or port {settings.port} within {seconds:g} s"
        )
    log.set(ready=str(endpoint))
