"""Parse the command lines pgpool and systemd use, without importing click.

`add`, `del` and `clean` sit on pgpool's failover path: pgpool blocks its clients
while the hook runs, and importing click costs more than the rest of a withdrawal.
So these three verbs are parsed here, by hand, and click (see cli.py) is loaded only
for everything else (`--help`, `status`, ...). cli.py's add/del/clean commands call
`parse_verb_args` too, so both paths accept exactly the same arguments.

Grammar::

    [--config PATH | --config=PATH] [--dry-run] VERB [VERB-OPTIONS] NODE_ID [EXTRA ...]

NODE_ID is pgpool's backend index (`%d`). pgpool >= 4.4 expands `%d` with a leading
space, so surrounding blanks are accepted. The first EXTRA, when given, is `%P`
(the old primary node id, -1 when there was none); the rest are ignored so that
more placeholders can be passed.
"""

from typing import NamedTuple

from pgpool_anycast_hook.errors import UsageError

HOOK_VERBS = ("add", "del", "clean")
MAX_NODE_ID = 127  # pgpool's MAX_NUM_BACKENDS is 128
MAX_WAIT_READY = 600.0
_BLANKS = " \t\n\r\v\f"
_HELP_FLAGS = ("--help", "-h", "--version")


class HookArgs(NamedTuple):
    verb: str
    node: int
    old_primary: int | None = None
    config_path: str | None = None
    dry_run: bool = False
    wait_ready: float = 0.0


class GlobalOptions(NamedTuple):
    config_path: str | None
    dry_run: bool
    rest: list[str]


def parse_node_id(text: str, what: str = "NODE_ID", lowest: int = 0) -> int:
    """Return the integer in `text`, which may carry blanks; raise UsageError otherwise."""
    stripped = text.strip(_BLANKS)
    digits = stripped[1:] if stripped.startswith("-") else stripped
    if not digits.isascii() or not digits.isdigit():
        raise UsageError(f"{what} must be an integer from {lowest} to {MAX_NODE_ID}, got {text!r}")
    value = int(stripped)
    if not lowest <= value <= MAX_NODE_ID:
        raise UsageError(f"{what} must be an integer from {lowest} to {MAX_NODE_ID}, got {text!r}")
    return value


def parse_seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number of seconds, got {text!r}") from None
    if not 0 <= value <= MAX_WAIT_READY:  # also rejects nan
        raise UsageError(f"{what} must be between 0 and {MAX_WAIT_READY:g} seconds, got {text!r}")
    return value


def split_global_options(argv: list[str]) -> GlobalOptions:
    """Take `--config` and `--dry-run` off the front of argv (checked by the caller)."""
    config_path: str | None = None
    dry_run = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--dry-run":
            dry_run = True
        elif arg == "--config":
            if i + 1 >= len(argv):
                raise UsageError("--config needs a PATH")
            config_path = argv[i + 1]
            i += 1
        elif arg.startswith("--config="):
            config_path = arg[len("--config=") :]
        else:
            break
        i += 1
    return GlobalOptions(config_path, dry_run, argv[i:])


def parse_verb_args(verb: str, args: list[str]) -> tuple[int, int | None, float]:
    """Parse what follows a hook verb: `[--wait-ready S] NODE_ID [OLD_PRIMARY] [EXTRA...]`."""
    wait_ready = 0.0
    rest = list(args)
    while rest and rest[0].startswith("--"):
        option = rest.pop(0)
        if verb == "add" and option == "--wait-ready":
            if not rest:
                raise UsageError("--wait-ready needs SECONDS")
            wait_ready = parse_seconds(rest.pop(0), "--wait-ready")
        elif verb == "add" and option.startswith("--wait-ready="):
            wait_ready = parse_seconds(option[len("--wait-ready=") :], "--wait-ready")
        elif option == "--":
            break
        else:
            raise UsageError(f"unknown option {option!r} for {verb}")
    if not rest:
        raise UsageError(f"{verb} needs a NODE_ID (pgpool's %d)")
    node = parse_node_id(rest[0])
    old_primary = parse_node_id(rest[1], "OLD_PRIMARY (%P)", lowest=-1) if len(rest) > 1 else None
    return node, old_primary, wait_ready


def parse_hook_argv(argv: list[str]) -> HookArgs | None:
    """Parse a hook invocation, or return None when click should handle argv.

    None means: not one of the hook verbs, or a help/version request.
    """
    if any(arg in _HELP_FLAGS for arg in argv):
        return None
    options = split_global_options(argv)
    if not options.rest or options.rest[0] not in HOOK_VERBS:
        return None
    if options.config_path == "":
        raise UsageError("--config needs a non-empty PATH")
    verb = options.rest[0]
    node, old_primary, wait_ready = parse_verb_args(verb, options.rest[1:])
    return HookArgs(verb, node, old_primary, options.config_path, options.dry_run, wait_ready)
