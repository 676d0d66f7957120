"""The frame every command that acts shares: config, deadline, one log line, exit code.

For add/del/clean (hook.py) and for `reconcile`, `disable`, `enable`, `drain`
and `check`: the body gets the configuration and the RunLog, sets fields,
and returns an exit code; every HookError becomes its own exit code and one line.

The guarded client (guard_client.py) runs in the same frame, framed(), with its
own, smaller read of the configuration; so config.py is imported only when
run_logged is called, and its types only for mypy.
"""

from pgpool_anycast_hook import deadline
from pgpool_anycast_hook.errors import ExitCode, HookError
from pgpool_anycast_hook.hook_argv import HookArgs
from pgpool_anycast_hook.run_log import SEVERITY_ERR, SEVERITY_INFO, SEVERITY_WARNING, RunLog

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable

    from pgpool_anycast_hook.config import Config

    Body = Callable[[Config, RunLog], int]


def _no_extra_seconds(config: "Config") -> float:
    return 0.0


def run_logged(
    action: str,
    config_path: str | None,
    body: "Body",
    extra_seconds: "Callable[[Config], float]" = _no_extra_seconds,
    quiet_unchanged: bool = False,
    fields: dict[str, object] | None = None,
) -> int:
    """Run `body`, then write its one line (see `quiet_unchanged`).

    A body that sets `result` (e.g. "dry-run") names the outcome; the default is "ok".

    `extra_seconds` lengthens the deadline for commands that wait on purpose (drain).
    With `quiet_unchanged`, a run that neither changed an address nor set
    `transition` writes nothing (its exit code still tells): `check` runs every
    few seconds. `fields` start the line after `action` (e.g. the node id).
    """
    log = RunLog(action=action, **(fields or {}))

    def run() -> int:
        from pgpool_anycast_hook.config import SYSLOG_FACILITIES, load_config

        config = load_config(config_path)
        log.syslog_address = config.syslog_address
        log.facility = SYSLOG_FACILITIES[config.syslog_facility]
        deadline.arm(config.deadline + extra_seconds(config))
        return body(config, log)

    return framed(log, run, quiet_unchanged)


def framed(log: RunLog, run: "Callable[[], int]", quiet_unchanged: bool = False) -> int:
    """Run `run`, which reads the configuration and sets the deadline, and write the line.

    From here on the deadline's line is this run's (RunLog.expire); main.py's own
    line covers only what comes before.
    """
    deadline.arm(deadline.BEFORE_CONFIG_SECONDS, log.expire)  # main.py armed it; now with our line
    try:
        code = run()
    except HookError as error:
        if error.changed:
            log.set(changed=",".join(error.changed))
        severity = SEVERITY_WARNING if error.exit_code == ExitCode.TEMPFAIL else SEVERITY_ERR
        log.emit(severity, result=error.result, error=str(error), exit=error.exit_code)
        return error.exit_code
    except Exception as error:  # the operator gets one line, never a traceback
        log.emit(
            SEVERITY_ERR,
            result="error",
            error=f"unexpected {type(error).__name__}: {error}",
            exit=ExitCode.FAILURE,
        )
        return ExitCode.FAILURE
    result = log.fields.pop("result", "ok")
    noteworthy = log.fields.get("changed", "none") != "none" or "transition" in log.fields
    if quiet_unchanged and not noteworthy and result != "dry-run":
        return code
    log.emit(SEVERITY_INFO if code == 0 else SEVERITY_WARNING, result=result, exit=code)
    return code


def start_fields(args: HookArgs) -> dict[str, object]:
    """What the line of add/del/clean starts with after the verb: node, old primary if given."""
    fields: dict[str, object] = {"node": args.node}
    if args.old_primary is not None:
        fields["old_primary"] = args.old_primary
    return fields
