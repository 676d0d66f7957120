"""Entry point of the `pgpool-anycast-hook` console script.

Kept tiny on purpose: pgpool's add/del/clean calls go straight to hook.py through
the hand-written parser in hook_argv.py; click (cli.py) is imported only for
everything else. Before anything else the process unblocks signals, makes sure
fds 0-2 are open, and arms the deadline (deadline.py), so no path, however it
ends, outlives it.
"""

import os
import signal
import sys

from pgpool_anycast_hook import deadline
from pgpool_anycast_hook.errors import ExitCode, UsageError
from pgpool_anycast_hook.hook_argv import HookArgs, parse_hook_argv
from pgpool_anycast_hook.run_log import SEVERITY_ERR, RunLog, ensure_standard_fds

PROG = "pgpool-anycast-hook"


def reset_signal_mask() -> None:
    """Unblock every signal: pgpool runs failover/failback commands with most of them blocked.

    Without this, SIGTERM from `systemctl stop` (and the timeouts of anything the
    hook starts) would be ignored for the whole run. SIGINT, which pgpool2.service
    sends its whole cgroup on stop (KillSignal=SIGINT), ends the run like SIGTERM
    does, instead of becoming a Python traceback.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _command_word(args: list[str]) -> str:
    """The command's name for a line written before parsing finished."""
    rest = iter(args)
    for arg in rest:
        if arg == "--config":
            next(rest, None)
        elif arg and not arg.startswith("-"):
            return arg[:20]
    return "none"


def main(argv: list[str] | None = None) -> int:
    reset_signal_mask()
    ensure_standard_fds()
    args = sys.argv[1:] if argv is None else argv
    early = RunLog(action=_command_word(args))

    def expire() -> None:  # until a command sets its own (logged_run.py, cli.py)
        early.emit(SEVERITY_ERR, result="deadline", exit=int(ExitCode.TEMPFAIL))

    deadline.arm(deadline.BEFORE_CONFIG_SECONDS, expire)
    try:
        return _dispatch(args, early)
    except BrokenPipeError:  # e.g. `status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # no second error at exit
        return int(ExitCode.OK)
    except Exception as error:  # the last resort: one line, never a traceback
        early.emit(
            SEVERITY_ERR,
            result="error",
            error=f"unexpected {type(error).__name__}: {error}",
            exit=int(ExitCode.FAILURE),
        )
        return int(ExitCode.FAILURE)


def _dispatch(args: list[str], early: RunLog) -> int:
    try:
        parsed = parse_hook_argv(args)
    except UsageError as error:
        from pgpool_anycast_hook.run_log import STDERR, format_line, send_syslog, write_nonblocking

        message = f"{PROG}: usage error: {error} (see '{PROG} --help')\n"
        write_nonblocking(STDERR, message.encode(errors="replace"))
        fields = {"action": "usage", "result": error.result, "error": str(error)}
        # The configuration is not read yet: the line goes to the default syslog socket.
        send_syslog(early.syslog_address, early.facility, SEVERITY_ERR,
                    format_line({**fields, "exit": int(ExitCode.USAGE)}))  # fmt: skip
        return int(ExitCode.USAGE)
    if isinstance(parsed, HookArgs):
        from pgpool_anycast_hook.hook import run_hook

        return run_hook(parsed)
    from pgpool_anycast_hook.cli import run_cli

    return run_cli(args if parsed is None else [parsed, "--help"])


if __name__ == "__main__":
    sys.exit(main())
