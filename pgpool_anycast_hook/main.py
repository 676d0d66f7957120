"""Entry point of the `pgpool-anycast-hook` console script.

Kept tiny on purpose: pgpool's add/del/clean calls go straight to hook.py through
the hand-written parser in hook_argv.py; click (cli.py) is imported only for
everything else. In the guarded wiring, add and del go to guard_client.py
instead, which needs neither hook.py nor config.py when the compiled configuration
answers. Before anything else the process unblocks signals, makes sure fds 0-2
are open, and arms the deadline (deadline.py), so no path, however it ends,
outlives it.

A hook run (add/del/clean, either wiring) of the process's own command line ends
with exit_now(): by then its one line is written with os.write, and what is left
open (sockets, the lock file's descriptor, the deadline's thread) the kernel
closes; the interpreter's teardown of every loaded module would cost about as
much as the whole guarded request (bench/README.md).
"""

import _signal  # type: ignore[import-not-found]  # no stub; see reset_signal_mask
import os
import sys

from pgpool_anycast_hook import deadline
from pgpool_anycast_hook.errors import ExitCode, UsageError
from pgpool_anycast_hook.hook_argv import HookArgs, parse_hook_argv
from pgpool_anycast_hook.run_log import SEVERITY_ERR, RunLog, ensure_standard_fds

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from typing import NoReturn, TextIO

PROG = "pgpool-anycast-hook"


def reset_signal_mask() -> None:
    """Unblock every signal: pgpool runs failover/failback commands with most of them blocked.

    Without this, SIGTERM from `systemctl stop` (and the timeouts of anything the
    hook starts) would be ignored for the whole run. SIGINT, which pgpool2.service
    sends its whole cgroup on stop (KillSignal=SIGINT), ends the run like SIGTERM
    does, instead of becoming a Python traceback.

    Through `_signal`, the interpreter's own module, loaded before anything else:
    `signal` wraps the same calls in enums, and its import of `enum` is what a
    lean entry point (bench/README.md) would otherwise pay for.
    """
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)


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
    deadline.arm(deadline.BEFORE_CONFIG_SECONDS, early.expire)  # until a run's frame takes over
    try:
        return _dispatch(args, early, own_process=argv is None)
    except BrokenPipeError:  # e.g. `status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # no second error at exit
        return ExitCode.OK
    except Exception as error:  # the last resort: one line, never a traceback
        early.emit(
            SEVERITY_ERR,
            result="error",
            error=f"unexpected {type(error).__name__}: {error}",
            exit=ExitCode.FAILURE,
        )
        return ExitCode.FAILURE


def exit_now(code: int) -> "NoReturn":
    """End the process with `code` at once, without the interpreter's teardown."""
    _flushed(sys.stdout)
    _flushed(sys.stderr)
    os._exit(code)


def _flushed(stream: "TextIO | None") -> bool:
    """Whatever Python still buffers for `stream` (nothing, on a hook run) is written."""
    if stream is None:  # fd 1 or 2 was closed when Python started
        return False
    try:
        stream.flush()
    except (OSError, ValueError):  # a full or closed pipe: nothing else can be done
        return False
    return True


def _dispatch(args: list[str], early: RunLog, own_process: bool) -> int:
    try:
        parsed = parse_hook_argv(args)
    except UsageError as error:
        from pgpool_anycast_hook.run_log import STDERR, format_line, send_syslog, write_nonblocking

        message = f"{PROG}: usage error: {error} (see '{PROG} --help')\n"
        write_nonblocking(STDERR, message.encode(errors="replace"))
        fields = {"action": "usage", "result": error.result, "error": str(error)}
        # The configuration is not read yet: the line goes to the default syslog socket.
        send_syslog(early.syslog_address, early.facility, SEVERITY_ERR,
                    format_line({**fields, "exit": ExitCode.USAGE}))  # fmt: skip
        return ExitCode.USAGE
    if isinstance(parsed, HookArgs):
        code = _run_hook(parsed)
        if own_process:
            exit_now(code)
        return code
    from pgpool_anycast_hook.cli import run_cli

    return run_cli(args if parsed is None else [parsed, "--help"])


def _run_hook(args: HookArgs) -> int:
    from pgpool_anycast_hook.guard_client import guarded_settings, run_guarded

    client = guarded_settings(args)
    if client is not None:
        return run_guarded(args, client)
    from pgpool_anycast_hook.hook import run_hook

    return run_hook(args)


if __name__ == "__main__":
    sys.exit(main())
