"""argv parsing: pgpool's placeholders, blanks, bad input, and agreement with click."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgpool_anycast_hook import cli
from pgpool_anycast_hook.errors import UsageError
from pgpool_anycast_hook.hook_argv import HookArgs, parse_hook_argv

blanks = st.text(alphabet=" \t", max_size=3)
node_ids = st.integers(0, 127)


@given(verb=st.sampled_from(["add", "del", "clean"]), node=node_ids, before=blanks, after=blanks)
def test_node_id_with_blanks(verb: str, node: int, before: str, after: str) -> None:
    parsed = parse_hook_argv([verb, f"{before}{node}{after}"])
    assert parsed == HookArgs(verb, node)


@given(node=node_ids, old=st.integers(-1, 127), extra=st.lists(st.text(max_size=5), max_size=4))
def test_old_primary_and_ignored_extras(node: int, old: int, extra: list[str]) -> None:
    parsed = parse_hook_argv(["del", f" {node}", str(old), *extra])
    assert parsed is not None and (parsed.node, parsed.old_primary) == (node, old)


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
    ],
)
def test_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_hook_argv(argv)


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
        ["add", "--help"],
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
            "/c.toml",
            "127",
            "128",
            "",
        ]
    ),
    max_size=6,
)


@settings(
    max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # the list is cleared per example
@given(argv=argv_pieces)
def test_click_path_agrees_with_fast_path(argv: list[str], monkeypatch_run_hook: list) -> None:
    """Whatever the fast parser accepts, click's add/del/clean pass on unchanged, and vice versa."""
    if any(a in ("--help", "-h", "--version") for a in argv):
        return
    try:
        fast = parse_hook_argv(argv)
    except UsageError:
        fast = "usage"
    monkeypatch_run_hook.clear()
    code = cli.run_cli(argv)
    if fast == "usage":
        assert code == 2
    elif fast is not None:
        assert code == 0 and monkeypatch_run_hook == [fast]


@pytest.fixture
def monkeypatch_run_hook(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list[HookArgs] = []

    def fake_run_hook(args: HookArgs) -> int:
        calls.append(args)
        return 0

    import pgpool_anycast_hook.hook as hook

    monkeypatch.setattr(hook, "run_hook", fake_run_hook)
    return calls
