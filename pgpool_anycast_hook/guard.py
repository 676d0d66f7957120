"""`pgpool-anycast-hook guard`: the long-running owner of the addresses.

In the guarded wiring the guard is the only process with CAP_NET_ADMIN; pgpool runs
with none, and its add/del/drain commands become requests to the guard over a Unix
socket (guard_client.py). One poll loop, which never blocks on anything but poll
itself, watches:

- a pidfd on pgpool's main process (pgpool_pidfd.py): readable the moment pgpool
  dies, and the addresses go at once, before systemd starts its stop sequence;
- the control socket (guard_control.py): requests from root and pgpool's user only
  (SO_PEERCRED), one message and one answer each;
- probes of pgpool (pgpool_probe.SslProbe, non-blocking): a new one every
  `interval`, beside those still waiting for an answer, with check_rise/check_fall
  counts (check_state.py). So a hung pgpool fails one probe per interval once the
  first has waited check_timeout: it is withdrawn within check_timeout +
  (check_fall - 1) x interval, not check_fall x check_timeout;
- signals: SIGHUP re-reads the configuration, SIGTERM and SIGINT end the guard.

On a PostgreSQL host (serve = "postgresql") it follows no pgpool at all (no pidfd,
no SSLRequest, no SHOW POOL_NODES): it asks the local server for its role once per
interval (guard_role.py) and announces, as the last resort behind the balancers,
while that server answers as a primary. pgpool's add and del do not apply there;
drain does, and holds until PostgreSQL starts again (a new postmaster).

Every tick asks policy.verdict, and guard_state.step turns the answer into an
action (announce, renew the lease, withdraw, wait, with the hold-down). Leases
(guard_netlink.py) make every failure of the guard itself fail closed. A guard
that stops while pgpool runs keeps the addresses (the next guard adopts them
within the lease); one that stops after pgpool withdraws them.

Every transition is one key=value log line (run_log.py); guard.json in the socket's
directory says what `status` shows.
"""

import contextlib
import json
import os
import select
import signal
import time
from typing import Any

from pgpool_anycast_hook import guard_netlink, metrics, policy
from pgpool_anycast_hook.check_state import CheckState, Health
from pgpool_anycast_hook.config import SYSLOG_FACILITIES, Address, Config, load_config
from pgpool_anycast_hook.decision import HookEvent, Outcome, Situation, Verb, decide
from pgpool_anycast_hook.errors import ExitCode, HookError, NotApplicable
from pgpool_anycast_hook.guard_control import ControlSocket
from pgpool_anycast_hook.guard_role import POSTGRESQL, RoleFollower
from pgpool_anycast_hook.guard_state import (
    Action,
    GuardState,
    Phase,
    counted,
    first_count,
    hold_down_left,
    initial,
    lease_left,
    owed_withdrawal,
    step,
    withdrawn,
)
from pgpool_anycast_hook.guard_view import ViewFollower
from pgpool_anycast_hook.hold import read_hold
from pgpool_anycast_hook.on_change import (
    ChangeCommands,
    drop_ambient_capabilities,
    transition_environment,
)
from pgpool_anycast_hook.pgpool_conf import PgpoolSettings, read_pgpool_conf
from pgpool_anycast_hook.pgpool_pidfd import find_main_pid, open_pidfd
from pgpool_anycast_hook.pgpool_probe import ProbeResult, SslProbe
from pgpool_anycast_hook.pgpool_process import endpoints
from pgpool_anycast_hook.pgpool_status import read_status_file
from pgpool_anycast_hook.pool_view import PoolView, ViewState, to_record
from pgpool_anycast_hook.role_view import RoleState, RoleView, new_postmaster
from pgpool_anycast_hook.role_view import to_record as role_record
from pgpool_anycast_hook.run_log import (
    SEVERITY_INFO,
    SEVERITY_WARNING,
    STDERR,
    format_line,
    send_syslog,
    write_nonblocking,
)


def notify(message: str) -> None:
    """sd_notify(3) through python3-systemd; nothing outside systemd."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    from systemd import daemon  # type: ignore[import-untyped]

    daemon.notify(message)


class Guard:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.config, self.settings = self._read_configuration()
        self._resolve_users()
        drop_ambient_capabilities()  # CAP_NET_ADMIN is the guard's, not on_change's
        self.poller = select.poll()
        self.control = ControlSocket(self.config.guard_socket, self.poller)
        self.follower = ViewFollower(self.poller)
        self.role = RoleFollower(self.poller)  # serve = "postgresql" only
        self.changes = ChangeCommands(self.config.on_change, self.config.on_change_timeout,
                                      self.config.on_change_max_running, self.poller,
                                      self.log)  # fmt: skip
        # Ready once the socket listens: pgpool may start now (the unit orders it after
        # the guard), and a request it sends before the loop runs waits in the backlog.
        # pyroute2's import and the first dump then overlap pgpool's own start.
        notify("READY=1")
        self.follower.configure(self.config, self.settings)  # imports psycopg, if it asks
        self.role.configure(self.config)  # the same
        self.ipr = guard_netlink.open_route()
        self.index = guard_netlink.interface_index(self.ipr, self.config.interface)
        present = guard_netlink.present_addresses(self.ipr, self.index, self.config.addresses)
        self.state = initial(bool(present) and all(present.values()), None)
        self.state = self._earlier_hold_down(self.state)
        self.health = CheckState()
        self.starting = False  # a new pgpool owing no failure: see first_count
        self.pgpool_pid: int | None = None
        self.pidfd: int | None = None
        self.probes: dict[int, SslProbe] = {}  # in flight, by the descriptor polled for each
        self.event_withdrawn = False  # pgpool said `del` for the primary; until `add`
        self.event_withdrawn_at = 0.0  # when; with "auto", a later answer of pgpool ends it
        self.drained = False  # `drain` withdrew for a planned stop; until a new pgpool or `add`
        self.drained_postmaster = ""  # serve = "postgresql": whose start time the drain was for
        self.verdict = policy.Verdict(False, "start", "start")  # the last one, for status
        self.seen: policy.Facts | None = None  # what it was decided from, for the metrics
        self.transitions: dict[str, int] = {}  # by reason code, for the metrics
        self.last_transition = {"at": time.time(), "to": self.state.phase.value, "reason": "start"}
        self.renewed_at: float | None = None
        self.last_probe: ProbeResult | None = None  # for the metrics
        self.metrics_failing = ""  # the last failure to write them, logged once
        if self.config.metrics_file:
            with contextlib.suppress(ImportError):  # now, not in the loop's first tick
                import prometheus_client  # noqa: F401
        self.failing = ""  # the last netlink failure logged, to log each one once
        self.signals: list[int] = []  # signal numbers, handled in the loop
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(self._wake_r, select.POLLIN)
        self.next_tick = time.monotonic()

    def _earlier_hold_down(self, state: GuardState) -> GuardState:
        """Carry over a withdrawal an earlier guard recorded, so a restart skips no hold-down."""
        from pgpool_anycast_hook.safe_files import read_regular

        if state.phase is not Phase.WITHDRAWN:
            return state
        try:
            record = json.loads(read_regular(self.config.guard_state_path, 65536))
        except (OSError, ValueError, RecursionError):
            return state
        ago = owed_withdrawal(record, time.time(), self.config.hold_down, self.config.lease)
        return state if ago is None else state._replace(withdrawn_at=time.monotonic() - ago)

    # -- configuration -------------------------------------------------------------

    def _read_configuration(self) -> tuple[Config, PgpoolSettings]:
        config = load_config(self.config_path)
        return config, read_pgpool_conf(config.pgpool_conf)

    def _resolve_users(self) -> None:
        """The uids of guard_clients (and pgpool's, the first), looked up once per
        configuration: a lookup may go to a slow name service, and the loop, which
        also watches pgpool's pidfd, must not wait on one for every request."""
        import pwd

        uids = {0}
        for name in self.config.guard_clients:
            with contextlib.suppress(KeyError):
                uids.add(pwd.getpwnam(name).pw_uid)
        self.client_uids = uids
        try:
            self.pgpool_uid: int | None = pwd.getpwnam(self.config.guard_clients[0]).pw_uid
        except (KeyError, IndexError):
            self.pgpool_uid = None

    def _hears(self, uid: int) -> bool:
        """Is `uid` root or one of guard_clients? Looked up again only for a stranger
        (a user created since), so refusals stay exact and the others cost nothing."""
        if uid not in self.client_uids:
            self._resolve_users()
        return uid in self.client_uids

    def reload(self) -> None:
        try:
            config, settings = self._read_configuration()
            if config.serve != self.config.serve:
                raise HookError(f"serve = {config.serve!r} needs a restart of the guard "
                                f"(it runs as serve = {self.config.serve!r})")  # fmt: skip
            self.follower.configure(config, settings)  # may refuse: before anything changes
            self.role.configure(config)
        except HookError as error:
            self.log(SEVERITY_WARNING, event="reload", result=error.result, error=str(error))
            return
        removed = [a for a in self.config.addresses if a not in config.addresses]
        added = [a for a in config.addresses if a not in self.config.addresses]
        changed = self.withdraw_addresses(removed)
        self.config, self.settings = config, settings
        self._resolve_users()  # guard_clients may have changed: who is heard, at once
        self.changes.argv = list(config.on_change)  # for the next transitions
        self.changes.timeout = config.on_change_timeout
        self.changes.max_running = config.on_change_max_running
        changed += self.evaluate("reload")
        if self.state.phase in (Phase.ANNOUNCED, Phase.ADOPTING):
            changed += [f"+{a}" for a in added if f"+{a}" not in changed]
        self.log(SEVERITY_INFO, event="reload", result="ok", changed=",".join(changed) or "none")

    # -- requests -------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> tuple[int, dict[str, object]]:
        """One event from pgpool, systemd or an operator: add, del or drain."""
        verb = request["verb"]
        dry_run = bool(request.get("dry_run", False))
        if verb == "drain":
            return self._drain(dry_run)
        if self.config.serve == POSTGRESQL:
            error = NotApplicable(f"{verb} is pgpool's hook; this guard follows PostgreSQL "
                                  f"(serve = \"postgresql\")")  # fmt: skip
            return error.exit_code, {"result": error.result, "error": str(error)}
        old_primary = request.get("old_primary")
        if old_primary is not None and type(old_primary) is not int:
            raise TypeError("old_primary must be an integer")
        event = HookEvent(Verb(verb), int(request["node"]), old_primary)
        if event.verb is Verb.CLEAN:
            return ExitCode.USAGE, {
                "result": "usage-error",
                "error": "clean is the hook's, not the guard's",
            }
        hold = read_hold(self.config.state_dir) is not None
        decision = decide(
            event,
            bool(self.config.addresses),
            self.config.primary_node_id,
            Situation(self._primary_usable(), hold, self.follower.view.primary()),
            self.config.announce_when,
        )
        fields: dict[str, object] = {"decision": decision.outcome.value, "reason": decision.reason}
        if dry_run:
            return ExitCode.OK, {**fields, "phase": self.state.phase.value, "result": "dry-run"}
        changed: list[str] = []
        if decision.outcome is Outcome.WITHDRAW:
            self.event_withdrawn, self.event_withdrawn_at = True, time.monotonic()
            self.follower.cancel()  # an answer to a query sent before this must not end it
            changed = self.withdraw_now(f"{verb} {event.node}: {decision.reason}",
                                        code="primary-going-away")  # fmt: skip
        elif decision.outcome in (Outcome.ANNOUNCE, Outcome.REEVALUATE):
            if decision.outcome is Outcome.ANNOUNCE:
                self.event_withdrawn = False
            if event.verb is Verb.ADD:
                self.drained = False
            now = time.monotonic()
            self.start_probe(now)  # the rise need not wait for the next tick
            self.view_step(self.follower.start(now))  # nor pgpool's answer
            changed = self.evaluate(f"{verb} {event.node}")
        fields.update(changed=",".join(changed) or "none", phase=self.state.phase.value)
        left = hold_down_left(self.state, time.monotonic(), self.config.hold_down)
        if left:
            fields["hold_down_left"] = round(left, 1)
        return ExitCode.OK, fields

    def _drain(self, dry_run: bool) -> tuple[int, dict[str, object]]:
        if dry_run:
            return ExitCode.OK, {"decision": "withdraw", "result": "dry-run"}
        self.drained = True
        self.drained_postmaster = self.role.view.started if self.role.view.in_force else ""
        changed = self.withdraw_now("drain (planned: no hold-down)", keep_serving=True,
                                    planned=True, code="drain")  # fmt: skip
        serving = "kept" if self.config.serving_route else "stopped"
        return ExitCode.OK, {"decision": "withdraw", "changed": ",".join(changed) or "none",
                             "serving": serving}  # fmt: skip

    # -- pgpool ------------------------------------------------------------------

    def _primary_usable(self) -> bool:
        if self.config.primary_node_id is None:  # "auto": pgpool's view answers (policy.py)
            return False
        if self.config.serve == POSTGRESQL:  # no pgpool_status to read on this host
            return False
        path = self.config.status_file or self.settings.status_file
        backends = max(self.settings.num_backends, self.config.primary_node_id + 1)
        return read_status_file(path, backends).node_usable(self.config.primary_node_id)

    def follow_pgpool(self) -> None:
        """Find pgpool's main process when the guard holds no pidfd on one."""
        if self.pidfd is not None or self.config.serve == POSTGRESQL:
            return
        if self.pgpool_uid is None:  # pgpool's user may be created after the guard started
            self._resolve_users()
        uid = self.pgpool_uid
        pid = find_main_pid(self.settings.pid_file, uid)
        fd = open_pidfd(pid, uid) if pid is not None else None
        if fd is None:
            return
        self.pgpool_pid, self.pidfd = pid, fd
        self.poller.register(fd, select.POLLIN)
        self.event_withdrawn = self.drained = False  # a new pgpool: its own state tells
        self.health, self.starting = first_count(self.state)
        self.log(SEVERITY_INFO, event="pgpool-found", pgpool_pid=pid)

    def pgpool_died(self) -> None:
        """pgpool's pidfd is readable: withdraw first, then say so."""
        assert self.pidfd is not None
        self.poller.unregister(self.pidfd)
        os.close(self.pidfd)
        pid, self.pidfd, self.pgpool_pid = self.pgpool_pid, None, None
        self.health, self.starting = CheckState(Health.DOWN), False
        self.evaluate("pgpool exited")
        self._stop_probes()
        self.follower.forget()
        self.log(SEVERITY_WARNING, event="pgpool-exited", pgpool_pid=pid)

    # -- the probes --------------------------------------------------------------

    def start_probe(self, now: float) -> None:
        """One more probe, unless pgpool is not followed or enough are already waiting."""
        waiting_at_most = self.config.check_timeout / self.config.interval
        if self.pidfd is None or len(self.probes) > waiting_at_most:
            return
        self.poke_probe(SslProbe(endpoints(self.settings), self.config.check_timeout, now), now)

    def _forget_probe(self, probe: SslProbe) -> None:
        for fd in [fd for fd, known in self.probes.items() if known is probe]:
            del self.probes[fd]
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(fd)

    def _stop_probes(self) -> None:
        for probe in list(self.probes.values()):
            self._forget_probe(probe)
            probe.close()

    def poke_probe(self, probe: SslProbe, now: float) -> None:
        """Let a probe take its next step (it never waits); count its result when done."""
        self._forget_probe(probe)  # its socket changes from one endpoint to the next
        result = probe.advance(now)
        if result is None:
            self.probes[probe.fileno()] = probe  # a socket exists while it runs
            self.poller.register(probe.fileno(), probe.events())
            return
        probe.close()
        self.last_probe = result
        before = self.health
        self.health, self.starting = counted(
            before, self.starting, result.ok, self.config.check_rise, self.config.check_fall
        )
        if self.health.health is not before.health:
            self.log(SEVERITY_INFO if result.ok else SEVERITY_WARNING, event="probe",
                     probe="ok" if result.ok else "failed", detail=result.detail,
                     latency_ms=round(result.latency * 1000, 1),
                     health=f"{before.health.value}->{self.health.health.value}")  # fmt: skip
            self.evaluate(f"probe {self.health.health.value}")

    # -- deciding and acting -----------------------------------------------------

    def facts(self) -> policy.Facts:
        listening = self.health.health in (Health.UP, Health.FALLING, Health.INIT)
        return policy.Facts(
            addresses_configured=bool(self.config.addresses),
            hold=read_hold(self.config.state_dir) is not None,
            pgpool_alive=self.pidfd is not None,
            pgpool_listening=listening,
            primary_usable=self._primary_usable(),
            primary_node_id=self.config.primary_node_id,
            primary_going_away=self.event_withdrawn,
            drained=self.drained,
            announce_when=self.config.announce_when,
            view=self.follower.view,
            serve=self.config.serve,
            role=self.role.view,
        )

    def view_step(self, before: PoolView | None) -> None:
        """A query to pgpool ended (`before`: the view until then): log what changed, decide."""
        if before is None:
            return
        view = self.follower.view
        ended = False
        if self.event_withdrawn and self.config.primary_node_id is None:
            started = self.follower.answered_started
            ended = view.state is ViewState.KNOWN and (started or 0.0) > self.event_withdrawn_at
            self.event_withdrawn = not ended
        if view.state is before.state and _shape(view) == _shape(before) and not ended:
            return
        fields: dict[str, object] = {
            "view": f"{before.state.value}->{view.state.value}",
            "primary": "none" if view.primary() is None else view.primary(),
            "backends": _shape(view) or "none",
        }
        if view.error and view.state is not ViewState.KNOWN:
            fields["error"] = view.error
        severity = SEVERITY_INFO if view.state is ViewState.KNOWN else SEVERITY_WARNING
        self.log(severity, event="pool-nodes", **fields)
        self.evaluate("pool_nodes")

    def role_step(self, before: RoleView | None) -> None:
        """A query to PostgreSQL ended (`before`: the role until then): log, decide."""
        if before is None:
            return
        role = self.role.view
        ended = self.drained and new_postmaster(role, self.drained_postmaster)
        if ended:
            self.drained = False
            self.log(SEVERITY_INFO, event="drain-ended", reason="PostgreSQL started again",
                     started=role.started)  # fmt: skip
        if role.state is before.state and role.primary == before.primary and not ended:
            return
        fields: dict[str, object] = {
            "role": f"{before.role() or before.state.value}->{role.role() or role.state.value}",
            "state": f"{before.state.value}->{role.state.value}",
        }
        if role.error and not role.in_force:
            fields["error"] = role.error
        severity = SEVERITY_INFO if role.state is RoleState.KNOWN else SEVERITY_WARNING
        self.log(severity, event="postgresql", **fields)
        self.evaluate("postgresql")

    def evaluate(self, why: str) -> list[str]:
        """One decision: policy.verdict, then guard_state.step, then the action."""
        now = time.monotonic()
        self.seen = self.facts()
        verdict = self.verdict = policy.verdict(self.seen)
        if self.config.serve == POSTGRESQL:
            probe_known = self.role.view.state is not RoleState.INIT
        else:
            probe_known = self.health.health is not Health.INIT
            probe_known = probe_known and self.follower.view.state is not ViewState.INIT
        before = self.state
        self.state, action = step(before, now, verdict.present, probe_known, self.config.hold_down)
        changed: list[str] = []
        try:
            if action in (Action.ANNOUNCE, Action.RENEW):
                changed = self.lease_addresses(announce=action is Action.ANNOUNCE)
            elif action is Action.WITHDRAW:
                changed = self.withdraw_addresses(self.config.addresses)
            self.failing = ""
        except HookError as error:
            if action is not Action.WITHDRAW:  # not up: never claim what the kernel refused
                self.state = GuardState(Phase.WITHDRAWN, before.withdrawn_at, before.wanted_since)
            if str(error) != self.failing:  # once per distinct failure, not every tick
                self.failing = str(error)
                self.log(SEVERITY_WARNING, event=action.value, result=error.result,
                         error=str(error))  # fmt: skip
        if self.state.phase is not before.phase:
            self.transition(f"{why}: {verdict.reason}", changed, verdict.code)
        return changed

    def withdraw_now(
        self, reason: str, keep_serving: bool = False, planned: bool = False, code: str = ""
    ) -> list[str]:
        """An event's withdrawal: make the addresses absent whatever the phase says."""
        changed = self.withdraw_addresses(self.config.addresses, keep_serving)
        before = self.state.phase
        self.state = withdrawn(self.state, time.monotonic(), planned)
        if before is not Phase.WITHDRAWN:
            self.transition(reason, changed, code)
        return changed

    def lease_addresses(self, announce: bool) -> list[str]:
        changed: list[str] = []
        if self.config.serving_route:  # every renewal: also after a reload turned it on
            for address in self.config.addresses:
                if guard_netlink.add_serving_route(
                    self.ipr, self.index, self.config.interface, address
                ):
                    changed.append(f"+route:{address}")
        for address in self.config.addresses:
            guard_netlink.lease_address(
                self.ipr, self.index, self.config.interface, address, self.config.lease
            )
            if announce:
                changed.append(f"+{address}")
        self.renewed_at = time.time()
        return changed

    def withdraw_addresses(self, addresses: Any, keep_serving: bool = False) -> list[str]:
        changed: list[str] = []
        wanted: list[Address] = list(addresses)
        for address in wanted:
            if guard_netlink.remove_address(self.ipr, self.index, self.config.interface, address):
                changed.append(f"-{address}")
        if self.config.serving_route and not keep_serving:
            for address in wanted:
                if guard_netlink.remove_serving_route(
                    self.ipr, self.index, self.config.interface, address
                ):
                    changed.append(f"-route:{address}")
        self.renewed_at = None
        return changed

    def transition(self, reason: str, changed: list[str] | None = None, code: str = "") -> None:
        previous, now = self.last_transition["to"], self.state.phase.value
        self.last_transition = {"at": time.time(), "to": now, "reason": reason, "code": code}
        self.transitions[code] = self.transitions.get(code, 0) + 1
        if self.changes.argv:  # made and logged; the command only hears of it
            announced = self.state.phase in (Phase.ANNOUNCED, Phase.ADOPTING)
            addresses = [str(address) for address in self.config.addresses]
            environment = transition_environment(str(previous), now, reason, code, addresses,
                                                 announced, time.time())  # fmt: skip
            self.changes.start(environment, time.monotonic())
        self.write_state()  # `status` and the metrics see a transition at once
        self.log(SEVERITY_INFO, event="transition", transition=f"{previous}->{now}",
                 reason=reason, changed=",".join(changed or []) or "none")  # fmt: skip

    # -- the loop ----------------------------------------------------------------

    def log(self, severity: int, **fields: object) -> None:
        line = format_line({"action": "guard", **fields})
        write_nonblocking(STDERR, f"pgpool-anycast-hook: {line}\n".encode(errors="replace"))
        send_syslog(self.config.syslog_address, SYSLOG_FACILITIES[self.config.syslog_facility],
                    severity, line)  # fmt: skip

    def write_state(self) -> None:
        from pgpool_anycast_hook.safe_files import replace_file

        now = time.monotonic()
        data = {
            "mode": "guarded",
            "pid": os.getpid(),
            "pgpool_pid": self.pgpool_pid,
            "phase": self.state.phase.value,
            "health": self.health.health.value,
            "streak": self.health.streak,
            "lease": self.config.lease,
            "renewed_at": self.renewed_at,
            "hold_down_left": round(hold_down_left(self.state, now, self.config.hold_down), 1),
            "last_transition": self.last_transition,
            "desired": self.verdict.present,
            "reason": self.verdict.reason,
            "reason_code": self.verdict.code,
            "view": to_record(self.follower.view),
            "serve": self.config.serve,
            "role": role_record(self.role.view),
            "withdrawn_at_wall": None
            if self.state.withdrawn_at is None
            else time.time() - (now - self.state.withdrawn_at),
        }
        path = self.config.guard_state_path
        with contextlib.suppress(OSError):  # status then says less; the guard goes on
            replace_file(path, (json.dumps(data) + "\n").encode(), 0o644)
        if self.config.metrics_file:
            self.write_metrics()

    def write_metrics(self) -> None:
        """The metrics file (metrics.py); a failure is logged once, and the guard goes on."""
        try:
            metrics.write(self.config.metrics_file, self.metrics_snapshot())
            self.metrics_failing = ""
        except (OSError, ImportError) as error:
            # strerror, not str(error): that names a random temporary file every time
            text = (
                (error.strerror or str(error))
                if isinstance(error, OSError)
                else ("python3-prometheus-client is not installed")
            )
            if text != self.metrics_failing:
                self.metrics_failing = text
                self.log(SEVERITY_WARNING, event="metrics", result="failed",
                         file=self.config.metrics_file, error=text)  # fmt: skip

    def metrics_snapshot(self) -> metrics.MetricsSnapshot:
        up = self.state.phase in (Phase.ANNOUNCED, Phase.ADOPTING)
        wall = time.time()
        left = 0.0
        if up and self.renewed_at is not None:
            left = lease_left(self.config.lease, self.renewed_at, wall)
        view, probe = self.follower.view, self.last_probe
        return metrics.MetricsSnapshot(
            heartbeat=wall,
            phase=self.state.phase.value,
            desired=self.verdict.present,
            reason_code=self.verdict.code,
            hold=self.seen is not None and self.seen.hold,  # read once per tick, in facts()
            hold_down_left=hold_down_left(self.state, time.monotonic(), self.config.hold_down),
            addresses=tuple(metrics.AddressMetric(str(a), up, left) for a in self.config.addresses),
            transitions=dict(self.transitions),
            probe_ok=None if probe is None else probe.ok,
            probe_latency=None if probe is None else probe.latency,
            view_state=view.state.value,
            query_latency=self.follower.latency,
            backends=view.nodes,
            primary_node_id=view.primary(),
            role_state=self.role.view.state.value,
            postgresql_primary=self.role.view.primary if self.role.view.in_force else None,
            role_latency=self.role.latency,
        )

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def run(self) -> int:
        for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(handled, self.on_signal)
        self.follow_pgpool()
        self.evaluate("start")
        self.log(SEVERITY_INFO, event="start", phase=self.state.phase.value)
        while True:
            now = time.monotonic()
            wait = max(0.0, self.next_tick - now)
            for probe in self.probes.values():
                wait = min(wait, max(0.0, probe.deadline - now))
            deadlines = (self.follower.deadline(), self.role.deadline(),
                         self.changes.next_deadline())  # fmt: skip
            for deadline in deadlines:
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
            for fd, _events in self.poller.poll(wait * 1000):
                if fd == self.pidfd:
                    self.pgpool_died()
                elif fd == self.control.fileno():
                    self.control.accept(self._hears)
                elif fd in self.control.clients:
                    self.control.serve(fd, self.handle)
                elif fd in self.probes:
                    self.poke_probe(self.probes[fd], time.monotonic())
                elif self.follower.owns(fd):
                    self.view_step(self.follower.poke(time.monotonic()))
                elif self.role.owns(fd):
                    self.role_step(self.role.poke(time.monotonic()))
                elif self.changes.owns(fd):
                    self.changes.reap(fd, time.monotonic())
                elif fd == self._wake_r:
                    os.read(self._wake_r, 64)
            while self.signals:
                signum = self.signals.pop(0)
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    return self.stop()
            now = time.monotonic()
            for probe in [p for p in self.probes.values() if now >= p.deadline]:
                self.poke_probe(probe, now)
            view_deadline = self.follower.deadline()
            if view_deadline is not None and now >= view_deadline:
                self.view_step(self.follower.poke(now, expire_only=True))
            role_deadline = self.role.deadline()
            if role_deadline is not None and now >= role_deadline:
                self.role_step(self.role.poke(now, expire_only=True))
            self.changes.expire(now)
            self.control.drop_late(now)
            if now >= self.next_tick:
                self.next_tick = now + self.config.interval
                self.follow_pgpool()
                self.start_probe(now)
                if self.pidfd is not None:
                    self.view_step(self.follower.start(now))
                self.role_step(self.role.start(now))  # asks only with serve = "postgresql"
                self.evaluate("tick")
                self.write_state()
                notify("WATCHDOG=1")

    def stop(self) -> int:
        """Keep the addresses while pgpool runs, or (serve = "postgresql") while the server
        answers as the primary: the next guard adopts them. Else withdraw."""
        notify("STOPPING=1")
        if self.config.serve == POSTGRESQL:
            serving, after = self.role.view.is_primary(), "PostgreSQL"
        else:
            serving, after = self.pidfd is not None, "pgpool"
        self.role.cancel()
        if not serving and self.state.phase is not Phase.WITHDRAWN:
            self.state = GuardState(Phase.WITHDRAWN, time.monotonic(), None)
            self.transition(
                f"guard stops after {after}", self.withdraw_addresses(self.config.addresses)
            )
        self.log(SEVERITY_INFO, event="stop", phase=self.state.phase.value)
        self.changes.close()
        return int(ExitCode.OK)


def run_guard(config_path: str | None) -> int:
    try:
        return Guard(config_path).run()
    except HookError as error:
        write_nonblocking(STDERR, f"pgpool-anycast-hook: guard: {error}\n".encode())
        return int(error.exit_code)


def _shape(view: PoolView) -> str:
    """The backends as a log field: "0:up/primary,1:down/standby"."""
    return ",".join(f"{n.node_id}:{n.status}/{n.role}" for n in view.nodes)
