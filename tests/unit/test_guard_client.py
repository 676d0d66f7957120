"""The guarded client's own JSON: what it writes and reads means what json means."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.guard_client import decode_json, encode_request

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(value=values, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_decode_json_reads_what_json_writes(
    value: object, ensure_ascii: bool, indent: int | None
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    assert decode_json(f" {text}\n") == json.loads(text)


@given(text=st.text(max_size=30))
def test_decode_json_refuses_what_json_refuses(text: str) -> None:
    try:
        expected = json.loads(text, parse_constant=lambda name: pytest.fail("constant"))
    except (ValueError, pytest.fail.Exception):
        with pytest.raises(ValueError):
            decode_json(text)
    else:
        assert decode_json(text) == expected


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "{} {}", "", "  "])
def test_decode_json_refuses_non_json(text: str) -> None:
    with pytest.raises(ValueError):
        decode_json(text)


@given(
    verb=st.sampled_from(["add", "del", "drain"]),
    node=st.integers(0, 127),
    old_primary=st.none() | st.integers(-1, 127),
    dry_run=st.booleans(),
)
def test_a_request_is_the_json_of_its_fields(
    verb: str, node: int, old_primary: int | None, dry_run: bool
) -> None:
    request: dict[str, object] = {"verb": verb, "node": node, "old_primary": old_primary,
                                  "dry_run": dry_run}  # fmt: skip
    assert json.loads(encode_request(request)) == request


@given(request=st.dictionaries(st.text(), scalars, max_size=4))
def test_any_request_is_still_json(request: dict[str, object]) -> None:
    assert json.loads(encode_request(request)) == request
