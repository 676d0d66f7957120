"""argv parsing: pgpool's placeholders, blanks, bad input, and agreement with click."""

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgpool_anycast_hook import cli
from pgpool_anycast_hook.errors import UsageError
from pgpool_anycast_hook.hook_argv import (
    HOOK_VERBS,
    HookArgs,
    parse_hook_argv,
    split_global_options,
)

blanks = st.text(alphabet=" \t", max_size=3)
node_ids = st.integers(0, 127)


@given(verb=st.sampled_from(["add", "del", "clean"]), node=node_ids, before=blanks, after=blanks)
def test_node_id_with_blanks(verb: str, node: int, before: str, after: str) -> None:
    parsed = parse_hook_argv([verb, f"{before}{node}{after}"])
    assert parsed == HookArgs(verb, node)


extras = st.lists(st.text(max_size=5).filter(lambda t: t not in ("-h", "--help")), max_size=4)


@given(node=node_ids, old=st.integers(-1, 127), extra=extras)
def test_old_primary_and_ignored_extras(node: int, old: int, extra: list[str]) -> None:
    parsed = parse_hook_argv(["del", f" {node}", str(old), *extra])
    assert isinstance(parsed, HookArgs) and (parsed.node, parsed.old_primary) == (node, old)


@given(
    bad=st.text(max_size=6).filter(
        lambda s: (
            not (
                s.strip(" \t\n\r\v\f").isascii()
                and s.strip(" \t\n\r\v\f").isdigit()
                and int(s.strip(" \t\n\r\v\f")) <= 127
            )
        )
    )
)
def test_anything_else_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_hook_argv(["add", bad])


@pytest.mark.parametrize(
    "argv",
    [
        ["add"],
        ["del", "128"],
        ["del", "-1"],
        ["clean", "1.0"],
        ["add", "0x1"],
        ["add", "٣"],
        ["del", "0", "-2"],
        ["del", "0", "x"],
        ["add", "--wait-ready", "-1", "0"],
        ["add", "--wait-ready", "nan", "0"],
        ["del", "--wait-ready", "1", "0"],
        ["add", "--bogus", "0"],
        ["--config"],
        ["--config=", "add", "0"],
        ["add", "9" * 5000],
        ["add", "-" + "9" * 5000],
        ["del", "0", "9" * 5000],
        ["add", "1\x00"],
        ["add", "\uff11"],
        ["add", "1_0"],
        ["add", "--wait-ready", "inf", "0"],
        ["add", "--wait-ready", "1e999", "0"],
        ["add", "--wait-ready", "1e2", "0"],
        ["add", "--wait-ready", "9" * 5000, "0"],
        ["add", "--wait-ready", "\u0663", "0"],
        ["add", "--wait-ready", "1_0", "0"],
        ["add", "--wait-ready", ".", "0"],
        ["add", "--wait-ready=600.5", "0"],
    ],
)
def test_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_hook_argv(argv)


def test_help_after_a_verb_names_the_verb() -> None:
    assert parse_hook_argv(["add", "--help"]) == "add"
    assert parse_hook_argv(["--dry-run", "del", "0", "-h"]) == "del"


@pytest.mark.parametrize(
    "text, seconds", [(" 2.5 ", 2.5), ("0", 0.0), ("600", 600.0), (".5", 0.5), ("5.", 5.0)]
)
def test_wait_ready_takes_plain_decimals(text: str, seconds: float) -> None:
    parsed = parse_hook_argv(["add", "--wait-ready", text, "0"])
    assert isinstance(parsed, HookArgs) and parsed.wait_ready == seconds


def test_global_options_and_wait_ready() -> None:
    assert parse_hook_argv(
        ["--config", "/x.toml", "--dry-run", "add", "--wait-ready=2.5", "0"]
    ) == HookArgs("add", 0, None, "/x.toml", True, 2.5)
    assert parse_hook_argv(["--config=/y", "clean", "3"]) == HookArgs("clean", 3, None, "/y")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["status"],
        ["check-config"],
        ["--version"],
        ["--bogus", "add", "0"],
    ],
)
def test_click_handles_the_rest(argv: list[str]) -> None:
    assert parse_hook_argv(argv) is None


argv_pieces = st.lists(
    st.sampled_from(
        [
            "add",
            "del",
            "clean",
            "0",
            " 1",
            "2 ",
            "-1",
            "x",
            "--wait-ready",
            "3",
            "--wait-ready=1",
            "--dry-run",
            "--config",
            "--config=",
            "--",
            "/c.toml",
            "127",
            "128",
            "",
        ]
    ),
    max_size=6,
)


@settings(max_examples=500)
@given(argv=argv_pieces)
def test_click_and_the_fast_parser_read_global_options_alike(argv: list[str]) -> None:
    """The global options mean the same to both paths, for every command.

    Hook verbs never reach click (main.py sends it only their --help), so the one
    place the two parsers overlap is the options before the command: for `status`
    after any of them, click's reading must equal split_global_options's.
    """
    args = [a for a in argv if a not in HOOK_VERBS] + ["status"]
    try:
        fast = split_global_options(args)
    except UsageError:
        fast = None
    try:
        with cli.cli.make_context(
            "pgpool-anycast-hook", list(args), resilient_parsing=False
        ) as ctx:
            clicked = (
                ctx.params["config_path"],
                ctx.params["dry_run"],
                ctx.protected_args + ctx.args,
            )
    except click.exceptions.UsageError:
        clicked = None
    if fast is None:
        assert clicked is None
    elif fast.rest and fast.rest[0] == "status":
        assert clicked == (fast.config_path, fast.dry_run, fast.rest)
    else:
        assert clicked is None or clicked[2] == fast.rest  # click rejects or reads it alike


@pytest.mark.parametrize("verb", HOOK_VERBS)
@pytest.mark.parametrize("where", [["--help"], ["0", "--help"], ["-h", "0"], ["0", "1", "-h"]])
def test_help_anywhere_after_a_hook_verb_asks_for_help_only(verb: str, where: list[str]) -> None:
    assert parse_hook_argv(["--dry-run", verb, *where]) == verb
