"""The click command line: help texts, and every command that is not on pgpool's hot path.

Each command only parses its arguments and calls a plain function elsewhere.
add/del/clean never run here: main.py parses them with hook_argv.py, the one
grammar for them, and sends only their `--help` to click. Their click commands
are help text and nothing else.
"""

import sys
from typing import TYPE_CHECKING

import click

from pgpool_anycast_hook import __version__
from pgpool_anycast_hook.errors import ExitCode, HookError, UsageError
from pgpool_anycast_hook.hook_argv import parse_node_id

if TYPE_CHECKING:
    from pgpool_anycast_hook.config import Config

EXIT_CODES_HELP = """\b
Exit status:
   0  done, or nothing to do
   1  status: the addresses differ from the desired state (with
      --routing, or the routing daemon's export from the addresses);
      check: pgpool did not answer
   2  usage error
  69  the configured interface does not exist
  70  any other failure
  75  busy: lock not acquired in time, deadline hit, pgpool not ready,
      drain timeout
  76  guarded wiring: the guard is not running or did not answer
  77  permission denied (CAP_NET_ADMIN is needed to change addresses)
  78  configuration error"""

MAIN_HELP = f"""Keep an anycast address on this pgpool node only while pgpool can serve.

\b
Wire it into pgpool.conf (pgpool 4.1 to 4.7), with no follow_primary_command:
  failover_command = '/usr/bin/pgpool-anycast-hook del %d %P'
  failback_command = '/usr/bin/pgpool-anycast-hook add %d'
and into pgpool2.service with the shipped drop-in (reconcile, clean, add,
drain, del).

Configuration: /etc/pgpool-anycast-hook/config.toml plus conf.d/*.toml;
see `check-config` and pgpool-anycast-hook(8).

{EXIT_CODES_HELP}
"""

_RAW = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "allow_interspersed_args": False,  # options after NODE_ID are arguments, as in hook_argv
    "help_option_names": ["--help", "-h"],
}


class Options:
    def __init__(self, config_path: str | None, dry_run: bool) -> None:
        self.config_path = config_path
        self.dry_run = dry_run


def _non_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """`--config ""` is a usage error, as in hook_argv.split_global_options."""
    if value == "":
        raise click.BadParameter("needs a non-empty PATH")
    return value


def _bounded(config_path: str | None, probes: int = 0, routing: bool = False) -> "Config":
    """Load the configuration and bound the command by `deadline`, plus its probes' time."""
    from pgpool_anycast_hook import deadline
    from pgpool_anycast_hook.config import load_config

    config = load_config(config_path)
    extra = config.routing_timeout if routing else 0.0
    deadline.arm(config.deadline + probes * config.check_timeout + extra)
    return config


@click.group(help=MAIN_HELP, context_settings={"help_option_names": ["--help", "-h"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar="PGPOOL_ANYCAST_HOOK_CONFIG",
    callback=_non_empty,
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
def add(args: tuple[str, ...], wait_ready: str | None) -> None:
    """Announce: add the addresses if NODE_ID is the primary and it is usable.

    NODE_ID is pgpool's %d (blanks around it are fine). Nothing changes when
    NODE_ID is not primary_node_id, when pgpool_status marks the primary down,
    or while a maintenance hold is set; the log line says which.
    Wire it to failback_command and to ExecStartPost.
    """


@cli.command(name="del", context_settings=_RAW)
@click.argument(
    "args", nargs=-1, type=click.UNPROCESSED, metavar="NODE_ID [OLD_PRIMARY] [EXTRA]..."
)
def delete(args: tuple[str, ...]) -> None:
    """Withdraw: remove the addresses if NODE_ID is the primary.

    With OLD_PRIMARY (pgpool's %P) the addresses go when NODE_ID equals it;
    without it NODE_ID is compared with primary_node_id. Already-absent
    addresses are fine. Wire it to failover_command and ExecStopPost.
    """


@cli.command(context_settings=_RAW)
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="NODE_ID")
def clean(args: tuple[str, ...]) -> None:
    """Before pgpool starts: move pgpool_status aside if it would keep the primary down.

    Uses pgpool's own reading rule. The file is renamed in its directory to
    pgpool_status.set-aside-<UTC time>, never deleted; the log line records what
    it held. Wire it to ExecStartPre.
    """


@cli.command(name="check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Print the effective configuration and the pgpool_status path; exit 78 on errors."""
    from pgpool_anycast_hook.config_report import config_report

    options: Options = ctx.obj
    try:
        click.echo(config_report(_bounded(options.config_path), options.config_path), nl=False)
    except HookError as error:
        click.echo(f"pgpool-anycast-hook: {error}", err=True)
        ctx.exit(int(error.exit_code))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print stable JSON keys instead of a table.")
@click.option(
    "--routing",
    is_flag=True,
    help="Also ask the routing daemon (routing_daemon: FRR's vtysh or BIRD's birdc) "
    "whether it exports each address.",
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, routing: bool) -> None:
    """Show the addresses, pgpool, pgpool_status, the hold and the desired state.

    Exit 0 when the addresses match the desired state, 1 when they drift.
    With --routing, also 1 when an address is present but not announced, or
    announced but absent; a routing daemon that cannot be asked shows as
    "unknown" and does not change the exit status. Changes nothing and writes
    no log line.
    """
    from pgpool_anycast_hook import status_report
    from pgpool_anycast_hook.health_check import load_state, state_path
    from pgpool_anycast_hook.observation import observe

    options: Options = ctx.obj
    try:
        config = _bounded(options.config_path, probes=2, routing=routing)  # socket, then TCP
        check = load_state(state_path(config))
        seen = observe(config)
        answer = None
        if routing:
            from pgpool_anycast_hook.routing import ask, networks_of

            answer = ask(config, networks_of(config))
        data = status_report.report(
            config, seen, None if check.health.value == "INIT" else check, answer
        )
    except HookError as error:
        click.echo(f"pgpool-anycast-hook: {error}", err=True)
        ctx.exit(int(error.exit_code))
    click.echo(status_report.as_json(data) if as_json else status_report.as_table(data), nl=False)
    ctx.exit(status_report.exit_code(data))


@cli.command()
@click.pass_context
def reconcile(ctx: click.Context) -> None:
    """Announce or withdraw so that the addresses match the desired state.

    Desired: present iff addresses are configured, no hold is set, pgpool is
    alive and answers on its socket or port, and pgpool_status lets pgpool use the
    primary.
    Wire it to ExecStartPre (removes leftovers of an unclean stop).
    """
    from pgpool_anycast_hook.logged_run import run_logged
    from pgpool_anycast_hook.reconcile import reconcile as run

    options: Options = ctx.obj
    ctx.exit(run_logged("reconcile", options.config_path,
                        lambda config, log: run(config, options.dry_run, log)))  # fmt: skip


@cli.command()
@click.option("--reason", default="", metavar="TEXT", help="Why; shown by `status`.")
@click.pass_context
def disable(ctx: click.Context, reason: str) -> None:
    """Set the maintenance hold and withdraw; it lasts until `enable`.

    The hold is a file in state_dir, so it survives pgpool restarts and reboots;
    add, reconcile and check leave the addresses withdrawn while it is set.
    """
    from pgpool_anycast_hook.logged_run import run_logged
    from pgpool_anycast_hook.reconcile import disable as run

    options: Options = ctx.obj
    ctx.exit(run_logged("disable", options.config_path,
                        lambda config, log: run(config, reason, options.dry_run, log)))  # fmt: skip


@cli.command()
@click.pass_context
def enable(ctx: click.Context) -> None:
    """Lift the maintenance hold, then reconcile."""
    from pgpool_anycast_hook.logged_run import run_logged
    from pgpool_anycast_hook.reconcile import enable as run

    options: Options = ctx.obj
    ctx.exit(run_logged("enable", options.config_path,
                        lambda config, log: run(config, options.dry_run, log)))  # fmt: skip


@cli.command()
@click.argument("node", required=False, metavar="[NODE_ID]")
@click.pass_context
def drain(ctx: click.Context, node: str | None) -> None:
    """Before a planned stop: withdraw, wait for the routers and for clients.

    Waits drain_seconds, then at most drain_timeout for established
    connections to pgpool's port to end, then returns so that systemd stops
    pgpool. NODE_ID defaults to primary_node_id. Exit 75 if clients were still
    connected at drain_timeout. Wire it to ExecStop.
    """
    from pgpool_anycast_hook.drain import drain as run
    from pgpool_anycast_hook.drain import extra_seconds
    from pgpool_anycast_hook.logged_run import run_logged

    options: Options = ctx.obj
    try:
        node_id = parse_node_id(node) if node is not None else None
    except UsageError as error:
        raise click.UsageError(str(error), ctx) from None
    ctx.exit(run_logged("drain", options.config_path,
                        lambda config, log: run(config, node_id, options.dry_run, log),
                        extra_seconds=extra_seconds))  # fmt: skip


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """One-shot probe of pgpool, for monitoring; standalone, it also acts on the addresses.

    The probe needs pgpool to answer an SSLRequest within check_timeout (and,
    with check_query, `SELECT 1` through libpq). Exit 0 when pgpool answered,
    1 when it did not.

    Guarded mode (mode = "guarded"): only probes and writes its line; it never
    touches the addresses or check.json (the guard owns them and probes pgpool
    itself) and needs no capability.

    Standalone mode, run from your own timer or cron job: withdraws after
    check_fall failures in a row and announces again after check_rise answers,
    respecting the hold and pgpool_status; needs CAP_NET_ADMIN, as the hook
    lines do. Logs only when the state or the addresses change.
    """
    from pgpool_anycast_hook.health_check import run_check
    from pgpool_anycast_hook.logged_run import run_logged

    options: Options = ctx.obj
    ctx.exit(run_logged("check", options.config_path,
                        lambda config, log: run_check(config, options.dry_run, log),
                        extra_seconds=lambda config: 2 * config.check_timeout,
                        quiet_unchanged=True))  # fmt: skip


@cli.command()
@click.pass_context
def guard(ctx: click.Context) -> None:
    """Run the guard: the long-running owner of the addresses (guarded wiring).

    It holds a pidfd on pgpool's main process and withdraws the moment pgpool
    dies; probes pgpool every `interval` (check_rise/check_fall); announces
    again only after `hold_down` seconds of health; leases the addresses
    (`lease`), so they vanish if the guard dies; and takes add/del/drain
    requests from root and pgpool's user on `guard_socket`. SIGHUP re-reads
    the configuration. Run it from pgpool-anycast-hook-guard.service.
    """
    from pgpool_anycast_hook import deadline
    from pgpool_anycast_hook.guard import run_guard

    options: Options = ctx.obj
    deadline.disarm()
    ctx.exit(run_guard(options.config_path))


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
