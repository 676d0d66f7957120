"""The click command line: help texts, and every command that is not on pgpool's hot path.

Each command only parses its arguments and calls a plain function elsewhere.
add/del/clean normally never get here (main.py parses them without click); they
exist so that `--help` documents them and so that both paths share
hook_argv.parse_verb_args.
"""

import sys

import click

from pgpool_anycast_hook import __version__
from pgpool_anycast_hook.errors import ExitCode, HookError, UsageError
from pgpool_anycast_hook.hook_argv import HookArgs, parse_verb_args

EXIT_CODES_HELP = """\b
Exit status:
   0  done, or nothing to do
   1  status/check: the addresses differ from the desired state
   2  usage error
  69  the configured interface does not exist
  70  any other failure
  75  busy: lock not acquired in time, deadline hit, pgpool not ready
  77  permission denied (CAP_NET_ADMIN is needed to change addresses)
  78  configuration error"""

MAIN_HELP = f"""Keep an anycast address on this pgpool node only while pgpool can serve.

\b
Wire it into pgpool.conf (pgpool 4.2 and later):
  failover_command       = '/usr/bin/pgpool-anycast-hook del %d %P'
  failback_command       = '/usr/bin/pgpool-anycast-hook add %d'
  follow_primary_command = '/usr/bin/pgpool-anycast-hook del %d %P'
(pgpool 4.1: follow_master_command instead of follow_primary_command.)
and into pgpool2.service with the shipped drop-in (clean, add, del).

Configuration: /etc/pgpool-anycast-hook/config.toml plus conf.d/*.toml;
see `check-config` and pgpool-anycast-hook(8).

{EXIT_CODES_HELP}
"""

_RAW = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": ["--help", "-h"],
}


class Options:
    def __init__(self, config_path: str | None, dry_run: bool) -> None:
        self.config_path = config_path
        self.dry_run = dry_run


def _run_hook_verb(ctx: click.Context, verb: str, args: tuple[str, ...]) -> None:
    from pgpool_anycast_hook.hook import run_hook

    options: Options = ctx.obj
    try:
        node, old_primary, wait_ready = parse_verb_args(verb, list(args))
    except UsageError as error:
        raise click.UsageError(str(error), ctx) from None
    hook_args = HookArgs(verb, node, old_primary, options.config_path, options.dry_run, wait_ready)
    ctx.exit(run_hook(hook_args))


@click.group(help=MAIN_HELP, context_settings={"help_option_names": ["--help", "-h"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar="PGPOOL_ANYCAST_HOOK_CONFIG",
    help="Main configuration file (default /etc/pgpool-anycast-hook/config.toml); "
    "its sibling conf.d/*.toml is read too.",
)
@click.option("--dry-run", is_flag=True, help="Say what would change, change nothing.")
@click.version_option(__version__, prog_name="pgpool-anycast-hook")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, dry_run: bool) -> None:
    ctx.obj = Options(config_path, dry_run)


@cli.command(context_settings=_RAW)
@click.argument(
    "args", nargs=-1, type=click.UNPROCESSED, metavar="NODE_ID [OLD_PRIMARY] [EXTRA]..."
)
@click.option(
    "--wait-ready",
    metavar="SECONDS",
    help="First wait (bounded) until pgpool accepts "
    "connections on its port from pgpool.conf. For ExecStartPost.",
)
@click.pass_context
def add(ctx: click.Context, args: tuple[str, ...], wait_ready: str | None) -> None:
    """Announce: add the addresses if NODE_ID is the primary and it is usable.

    NODE_ID is pgpool's %d (blanks around it are fine). Nothing changes when
    NODE_ID is not primary_node_id, when pgpool_status marks the primary down,
    or while a maintenance hold is set; the log line says which.
    Wire it to failback_command and to ExecStartPost.
    """
    extra = ("--wait-ready", wait_ready) if wait_ready is not None else ()
    _run_hook_verb(ctx, "add", extra + args)


@cli.command(name="del", context_settings=_RAW)
@click.argument(
    "args", nargs=-1, type=click.UNPROCESSED, metavar="NODE_ID [OLD_PRIMARY] [EXTRA]..."
)
@click.pass_context
def delete(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Withdraw: remove the addresses if NODE_ID is the primary.

    With OLD_PRIMARY (pgpool's %P) the addresses go when NODE_ID equals it;
    without it NODE_ID is compared with primary_node_id. Already-absent
    addresses are fine. Wire it to failover_command, follow_primary_command
    (follow_master_command on 4.1) and ExecStopPost.
    """
    _run_hook_verb(ctx, "del", args)


@cli.command(context_settings=_RAW)
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="NODE_ID")
@click.pass_context
def clean(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Before pgpool starts: move pgpool_status aside if it would keep the primary down.

    Uses pgpool's own reading rule. The file is renamed in its directory to
    pgpool_status.set-aside-<UTC time>, never deleted; the log line records what
    it held. Wire it to ExecStartPre.
    """
    _run_hook_verb(ctx, "clean", args)


@cli.command(name="check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Print the effective configuration and the pgpool_status path; exit 78 on errors."""
    from pgpool_anycast_hook.config_report import config_report

    options: Options = ctx.obj
    try:
        click.echo(config_report(options.config_path), nl=False)
    except HookError as error:
        click.echo(f"pgpool-anycast-hook: {error}", err=True)
        ctx.exit(int(error.exit_code))


def run_cli(argv: list[str]) -> int:
    """Run click without letting it call sys.exit, and without tracebacks."""
    try:
        result = cli.main(args=argv, prog_name="pgpool-anycast-hook", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as error:
        error.show()
        return int(ExitCode.USAGE) if isinstance(error, click.UsageError) else int(error.exit_code)
    except click.Abort:
        sys.stderr.write("aborted\n")
        return int(ExitCode.FAILURE)
    return int(result or 0)
