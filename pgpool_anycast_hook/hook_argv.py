"""Parse the command lines pgpool and systemd use, without importing click.

`add`, `del` and `clean` sit on pgpool's failover path: pgpool blocks its clients
while the hook runs, and importing click costs more than the rest of a withdrawal.
So these three verbs are parsed here, by hand, and only here: click (cli.py) is
loaded for everything else (`--help`, `status`, ...) and shows the three verbs'
help, but never parses their arguments. The global options are split here for
every command, with click's rules (tests/unit/test_hook_argv.py checks both agree).
`--help` or `-h` anywhere after a hook verb asks for its help and does nothing else.

Grammar::

    [--config PATH | --config=PATH] [--dry-run] VERB [VERB-OPTIONS] NODE_ID [EXTRA ...]

NODE_ID is pgpool's backend index (`%d`). pgpool >= 4.4 expands `%d` with a leading
space, so surrounding blanks are accepted. The first EXTRA, when given, is `%P`
(the old primary node id, -1 when there was none); the rest are ignored so that
more placeholders can be passed.

The results are plain classes, not typing.NamedTuple: importing `typing` costs the
guarded client more than its whole exchange with the guard.
"""

from pgpool_anycast_hook.errors import UsageError

HOOK_VERBS = ("add", "del", "clean")
MAX_NODE_ID = 127  # pgpool's MAX_NUM_BACKENDS is 128
MAX_NODE_ID_DIGITS = 6  # "007" is fine; 5000 zeros are not a node id
MAX_WAIT_READY = 600.0
_BLANKS = " \t\n\r\v\f"
_HELP_FLAGS = ("--help", "-h")


class HookArgs:
    """One add/del/clean command line, parsed; equal to another with the same values."""

    __slots__ = ("config_path", "dry_run", "node", "old_primary", "verb", "wait_ready")

    def __init__(
        self,
        verb: str,
        node: int,
        old_primary: int | None = None,
        config_path: str | None = None,
        dry_run: bool = False,
        wait_ready: float = 0.0,
    ) -> None:
        self.verb = verb
        self.node = node
        self.old_primary = old_primary
        self.config_path = config_path
        self.dry_run = dry_run
        self.wait_ready = wait_ready

    def _values(self) -> tuple[object, ...]:
        return (self.verb, self.node, self.old_primary, self.config_path, self.dry_run,
                self.wait_ready)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HookArgs) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"HookArgs{self._values()!r}"


class GlobalOptions:
    """The options before the command, and the rest of argv."""

    __slots__ = ("config_path", "dry_run", "rest")

    def __init__(self, config_path: str | None, dry_run: bool, rest: list[str]) -> None:
        self.config_path = config_path
        self.dry_run = dry_run
        self.rest = rest


def parse_node_id(text: str, what: str = "NODE_ID", lowest: int = 0) -> int:
    """Return the integer in `text`, which may carry blanks; raise UsageError otherwise.

    ASCII digits only, and few of them (leading zeros included): int() refuses more
    than 4300 digits with a ValueError, and accepts Unicode digits and underscores.
    """
    stripped = text.strip(_BLANKS)
    digits = stripped[1:] if stripped.startswith("-") else stripped
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_NODE_ID_DIGITS:
        raise UsageError(
            f"{what} must be an integer from {lowest} to {MAX_NODE_ID}, got {text[:40]!r}"
        )
    value = int(stripped)
    if not lowest <= value <= MAX_NODE_ID:
        raise UsageError(
            f"{what} must be an integer from {lowest} to {MAX_NODE_ID}, got {text[:40]!r}"
        )
    return value


def parse_seconds(text: str, what: str) -> float:
    """Plain decimal seconds (`2`, `2.5`): float() would also take nan, inf, 1e999, 1_0."""
    stripped = text.strip(_BLANKS)
    digits = stripped.replace(".", "", 1)
    if not digits.isascii() or not digits.isdigit() or len(stripped) > 20:
        raise UsageError(f"{what} must be a number of seconds, got {text[:40]!r}")
    value = float(stripped)
    if not 0 <= value <= MAX_WAIT_READY:
        raise UsageError(
            f"{what} must be between 0 and {MAX_WAIT_READY:g} seconds, got {text[:40]!r}"
        )
    return value


def split_global_options(argv: list[str]) -> GlobalOptions:
    """Take `--config`, `--dry-run` (and a `--` after them) off the front of argv.

    The same rules as click's group options (cli.py), which a test checks; an
    empty PATH is a usage error on every path, as is a missing one.
    """
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
        elif arg == "--":
            i += 1
            break
        else:
            break
        i += 1
    if config_path == "":
        raise UsageError("--config needs a non-empty PATH")
    return GlobalOptions(config_path, dry_run, argv[i:])


def parse_verb_args(verb: str, args: list[str]) -> tuple[int, int | None, float]:
    """Parse what follows a hook verb: `[--wait-ready S] NODE_ID [OLD_PRIMARY] [EXTRA...]`."""
    wait_ready = 0.0
    rest = list(args)
    while rest and rest[0].startswith("-") and rest[0] != "-" and not _is_integer(rest[0]):
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
            raise UsageError(f"unknown option {option[:40]!r} for {verb}")
    if not rest:
        raise UsageError(f"{verb} needs a NODE_ID (pgpool's %d)")
    node = parse_node_id(rest[0])
    old_primary = parse_node_id(rest[1], "OLD_PRIMARY (%P)", lowest=-1) if len(rest) > 1 else None
    return node, old_primary, wait_ready


def _is_integer(text: str) -> bool:
    """`-1` is OLD_PRIMARY's "no primary", not an option."""
    return text[1:].isascii() and text[1:].isdigit()


def parse_hook_argv(argv: list[str]) -> HookArgs | str | None:
    """Parse argv once, for every command.

    Returns HookArgs for add/del/clean; the verb's name when its help was asked
    for; None when click should handle argv (another command, or `--help` and
    `--version` before any command). click never parses add/del/clean itself,
    so there is one grammar for them. Raises UsageError.
    """
    options = split_global_options(argv)
    if not options.rest or options.rest[0] not in HOOK_VERBS:
        return None
    verb = options.rest[0]
    if any(arg in _HELP_FLAGS for arg in options.rest[1:]):
        return verb
    node, old_primary, wait_ready = parse_verb_args(verb, options.rest[1:])
    return HookArgs(verb, node, old_primary, options.config_path, options.dry_run, wait_ready)
