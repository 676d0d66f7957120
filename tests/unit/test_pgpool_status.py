"""pgpool_status reading, checked against an independent model of pgpool's C code.

The model below walks the bytes the way read_status_file() does (fread of the
512-byte record, then fgets() into a 9-byte buffer and strncasecmp), keeping
pgpool's 128-slot status array; the implementation under test splits records
instead. Hypothesis feeds both random files.
"""

import os
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pgpool_anycast_hook import pgpool_status
from pgpool_anycast_hook.pgpool_status import StatusFormat, parse_status, read_status_file

CON_UNUSED, CON_CONNECT_WAIT, CON_UP, CON_DOWN = 0, 1, 2, 3


def _fgets(data: bytes, pos: int, size: int = 9) -> tuple[bytes | None, int]:
    """C fgets: up to size-1 bytes, stopping after a newline; None at EOF."""
    if pos >= len(data):
        return None, pos
    out = bytearray()
    while len(out) < size - 1 and pos < len(data):
        out.append(data[pos])
        pos += 1
        if out[-1] == 0x0A:
            break
    return bytes(out), pos


def _strncasecmp_equal(word: bytes, buf: bytes) -> bool:
    for i in range(len(word)):
        c = buf[i] if i < len(buf) else 0
        if c == 0 or chr(c).lower() != chr(word[i]).lower():
            return False
    return True


def model_statuses(data: bytes | None, num_backends: int) -> list[int]:
    """pgpool's backend status array after read_status_file(), for configured nodes."""
    configured = [CON_CONNECT_WAIT] * num_backends
    if data is None:
        return configured
    someone_up = False
    if len(data) >= 512:
        record = [struct.unpack_from("=i", data, 4 * i)[0] for i in range(128)]
        old_format = True
        for i in range(num_backends):
            if record[i] == 3:
                continue
            if record[i] in (1, 2):
                someone_up = True
                continue
            old_format = False
            break
        if old_format:
            if not someone_up:
                return configured
            return [CON_DOWN if record[i] == 3 else CON_CONNECT_WAIT for i in range(num_backends)]
    slots = [CON_UNUSED] * 4096
    pos, i = 0, 0
    while True:
        buf, pos = _fgets(data, pos)
        if buf is None:
            break
        if _strncasecmp_equal(b"up", buf):
            slots[i] = CON_UP
            someone_up = True
        elif _strncasecmp_equal(b"down", buf):
            slots[i] = CON_DOWN
        else:
            slots[i] = CON_UNUSED
        i += 1
    if not someone_up:
        return configured
    return slots[:num_backends]


def model_usable(data: bytes | None, num_backends: int, node: int) -> bool:
    statuses = model_statuses(data, num_backends)
    return node < len(statuses) and statuses[node] in (CON_UP, CON_CONNECT_WAIT)


words = st.sampled_from(
    [
        b"up",
        b"UP",
        b"Up",
        b"uP",
        b"down",
        b"DOWN",
        b"unused",
        b"do",
        b"u",
        b" up",
        b"up ",
        b"up\r",
        b"upxyz",
        b"upxyzabcdef",
        b"",
        b"\x00up",
        b"u\x00",
        b"downdowndown",
        b"garbage!",
    ]
)
text_files = st.lists(words, max_size=12).map(lambda ws: b"\n".join(ws)) | st.lists(
    words, max_size=12
).map(lambda ws: b"".join(w + b"\n" for w in ws))
binary_files = (
    st.lists(st.sampled_from([0, 1, 2, 3, 4, -1]), min_size=128, max_size=128).map(
        lambda vs: struct.pack("=128i", *vs)
    )
    | st.lists(st.sampled_from([1, 2, 3]), min_size=128, max_size=128).map(
        lambda vs: struct.pack("=128i", *vs)
    )
    | st.binary(min_size=512, max_size=600)
)
any_file = text_files | binary_files | st.binary(max_size=64) | st.none()


@settings(max_examples=600)
@given(data=any_file, num_backends=st.integers(1, 8), node=st.integers(0, 9))
def test_node_usable_matches_pgpool(data: bytes | None, num_backends: int, node: int) -> None:
    if node >= num_backends:
        num_backends = node + 1  # the hook always checks at least up to the primary
    status = parse_status(data, num_backends)
    assert status.node_usable(node) == model_usable(data, num_backends, node)


@given(lines=st.lists(words, min_size=1, max_size=8))
def test_case_and_trailing_junk_follow_strncasecmp(lines: list[bytes]) -> None:
    data = b"".join(w + b"\n" for w in lines)
    status = parse_status(data, len(lines))
    assert status.format is StatusFormat.TEXT
    for node in range(len(lines)):
        assert status.node_usable(node) == model_usable(data, len(lines), node)


def test_examples_from_pgpool_semantics() -> None:
    assert parse_status(None, 2).node_usable(0)
    assert parse_status(b"", 2).node_usable(0)  # bogus: all up
    assert parse_status(b"down\nunused\n", 2).node_usable(0)  # bogus: all up
    assert not parse_status(b"down\nup\n", 2).node_usable(0)  # the trap
    assert parse_status(b"down\nup\n", 2).node_usable(1)
    assert parse_status(b"UP\ndown\n", 2).node_usable(0)
    assert not parse_status(b" up\nup\n", 2).node_usable(0)  # leading blank is invalid
    assert not parse_status(b"up\n", 2).node_usable(1)  # missing line while another is up
    # a 9+ character line is split, shifting the following nodes
    split = parse_status(b"downdownd\nup\n", 3)
    assert not split.node_usable(1) and split.node_usable(2)


def test_binary_record() -> None:
    down_up = struct.pack("=128i", 3, 2, *([0] * 126))
    status = parse_status(down_up, 2)
    assert status.format is StatusFormat.BINARY
    assert not status.node_usable(0) and status.node_usable(1)
    assert status.summary() == "binary:3,2"
    not_binary = struct.pack("=128i", 3, 7, *([0] * 126))
    assert parse_status(not_binary, 2).format is StatusFormat.TEXT
    all_down = struct.pack("=128i", 3, 3, *([0] * 126))
    assert parse_status(all_down, 2).node_usable(0)  # bogus: every node up
    # a rejected probe that saw "up" first keeps the bogus rule off for the text parse
    woke = struct.pack("=128i", 2, 0, *([0] * 126))
    assert parse_status(woke, 2).format is StatusFormat.TEXT
    assert not parse_status(woke, 2).node_usable(0)


def test_summary_is_short_and_printable() -> None:
    status = parse_status(b"down\nup\x01\n" + b"up\n" * 40, 2)
    summary = status.summary()
    assert summary.startswith("down,up\\x01,up")
    assert summary.endswith(",...")
    assert "\n" not in summary


def test_unreadable_file_counts_as_absent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = read_status_file(str(tmp_path / "nope"), 2)
    assert missing.format is StatusFormat.ABSENT and missing.node_usable(0)
    directory = read_status_file(str(tmp_path), 2)
    assert directory.format is StatusFormat.ABSENT and directory.note.startswith("unreadable")


def test_set_aside_keeps_every_byte_and_never_overwrites(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pgpool_status"
    names = []
    for content in (b"down\nup\n", b"down\ndown\nup\n"):
        path.write_bytes(content)
        names.append(pgpool_status.set_aside(str(path)))
    assert not path.exists()
    assert len(set(names)) == 2
    assert sorted(Path(n).read_bytes() for n in names) == sorted(
        [b"down\nup\n", b"down\ndown\nup\n"]
    )
    assert all(os.path.dirname(n) == str(tmp_path) for n in names)
    assert all(os.path.basename(n).startswith("pgpool_status.set-aside-") for n in names)
