"""Entry point of the `pgpool-anycast-hook` console script.

Kept tiny on purpose: pgpool's add/del/clean calls go straight to hook.py through
the hand-written parser in hook_argv.py; click (cli.py) is imported only for
everything else.
"""

import signal
import sys

from pgpool_anycast_hook.errors import ExitCode, UsageError
from pgpool_anycast_hook.hook_argv import parse_hook_argv

PROG = "pgpool-anycast-hook"


def reset_signal_mask() -> None:
    """Unblock every signal: pgpool runs failover/failback commands with most of them blocked.

    Without this, SIGTERM from `systemctl stop` (and the timeouts of anything the
    hook starts) would be ignored for the whole run.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def main(argv: list[str] | None = None) -> int:
    reset_signal_mask()
    args = sys.argv[1:] if argv is None else argv
    try:
        hook_args = parse_hook_argv(args)
    except UsageError as error:
        sys.stderr.write(f"{PROG}: usage error: {error} (see '{PROG} --help')\n")
        from pgpool_anycast_hook.run_log import SEVERITY_ERR, format_line, send_syslog

        line = format_line(
            {
                "action": "usage",
                "result": error.result,
                "error": str(error),
                "exit": int(ExitCode.USAGE),
            }
        )
        send_syslog("/dev/log", 3, SEVERITY_ERR, line)  # configuration not read yet: defaults
        return int(ExitCode.USAGE)
    if hook_args is not None:
        from pgpool_anycast_hook.hook import run_hook

        return run_hook(hook_args)
    from pgpool_anycast_hook.cli import run_cli

    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
