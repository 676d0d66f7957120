"""Read `pgpool_status` with pgpool's own rule, and move it aside when it would hurt.

pgpool (read_status_file(), the same from 4.1 to 4.7) reads the file like this:

- unreadable or absent: every configured node starts up;
- 512 bytes readable and the first num_backends native ints all 1, 2 or 3:
  the pre-3.4 binary record; 3 is down, 1 and 2 are up (the file is reopened and
  read as text otherwise);
- otherwise text, read with fgets() into a 9-byte buffer, so a line longer than
  8 characters is split into several records, each counting as the next node;
  a record is up when it starts with "up" in any case (the rest is ignored);
  "down", "unused" and anything else leave the node out;
- if no node is up the file is "bogus" and every configured node starts up.

A primary that this rule reads as not up is never used again by pgpool until
someone runs pcp_attach_node. `clean` therefore moves such a file aside (never
deletes it), so that pgpool starts with every node up, as if the file were absent.
"""

import errno
import struct
import time
from enum import StrEnum
from typing import NamedTuple

BINARY_RECORD_SIZE = 512  # BACKEND_STATUS status[128], 4-byte ints
MAX_BACKENDS = 128
FGETS_CHUNK = 8  # fgets(buf, 9) reads at most 8 characters
MAX_READ = 1 << 20
MAX_SET_ASIDE_TRIES = 1000


class StatusFormat(StrEnum):
    ABSENT = "absent"
    TEXT = "text"
    BINARY = "binary"


class PgpoolStatus(NamedTuple):
    format: StatusFormat
    records: tuple[bytes, ...]  # text: fgets records; binary: str(int) per node
    up: tuple[bool, ...]  # per record, before the "bogus file" rule
    note: str = ""  # why the file counts as absent (permission, ...)
    probe_woke: bool = False  # a rejected binary probe already saw an up value (see below)

    @property
    def bogus(self) -> bool:
        """No node is up: pgpool then brings every configured node up."""
        return self.format is not StatusFormat.ABSENT and not any(self.up) and not self.probe_woke

    def node_usable(self, node: int) -> bool:
        """Would pgpool, starting now, use backend `node`?"""
        if self.format is StatusFormat.ABSENT or self.bogus:
            return True
        return node < len(self.up) and self.up[node]

    def summary(self, limit: int = 16) -> str:
        """What the file held, short enough for a log line."""
        if self.format is StatusFormat.ABSENT:
            return "absent"
        shown = [_printable(r.rstrip(b"\n")) or "''" for r in self.records]
        text = ",".join(shown[:limit]) + (",..." if len(shown) > limit else "")
        return f"binary:{text}" if self.format is StatusFormat.BINARY else text


def _printable(record: bytes) -> str:
    return "".join(chr(b) if 32 < b < 127 else f"\\x{b:02x}" for b in record)


def fgets_records(data: bytes) -> list[bytes]:
    """Split `data` as successive fgets(buf, 9) calls would."""
    records = []
    start = 0
    while start < len(data):
        newline = data.find(b"\n", start, start + FGETS_CHUNK)
        end = newline + 1 if newline >= 0 else min(start + FGETS_CHUNK, len(data))
        records.append(data[start:end])
        start = end
    return records


def binary_probe(data: bytes, num_backends: int) -> tuple[list[int] | None, bool]:
    """The legacy record's statuses (None: pgpool reads `data` as text), and whether
    the probe saw an up value before giving up.

    pgpool's probe walks the first num_backends ints and stops at the first one
    that is not 1, 2 or 3; the "someone is up" flag it set on the way survives
    into the text parse, so even a rejected probe can switch off the bogus rule.
    """
    if len(data) < BINARY_RECORD_SIZE:
        return None, False
    values = struct.unpack(f"={MAX_BACKENDS}i", data[:BINARY_RECORD_SIZE])  # host byte order
    woke = False
    for value in values[: min(num_backends, MAX_BACKENDS)]:
        if value not in (1, 2, 3):
            return None, woke
        woke = woke or value in (1, 2)
    return list(values[: min(num_backends, MAX_BACKENDS)]), woke


def parse_status(data: bytes | None, num_backends: int) -> PgpoolStatus:
    """pgpool's reading of a status file's bytes (None: absent or unreadable)."""
    if data is None:
        return PgpoolStatus(StatusFormat.ABSENT, (), ())
    binary, woke = binary_probe(data, num_backends)
    if binary is not None:
        return PgpoolStatus(
            StatusFormat.BINARY,
            tuple(str(v).encode() for v in binary),
            tuple(v in (1, 2) for v in binary),
        )
    records = fgets_records(data)
    up = tuple(r[:2].lower() == b"up" for r in records)
    return PgpoolStatus(StatusFormat.TEXT, tuple(records), up, probe_woke=woke)


def read_status_file(path: str, num_backends: int) -> PgpoolStatus:
    """Read the file; anything pgpool could not open counts as absent, as it does for pgpool.

    Its directory is postgres's: a symbolic link or a FIFO there is refused and
    counts as unreadable (safe_files.py); `clean` then leaves it alone.
    """
    from pgpool_anycast_hook.safe_files import read_regular

    try:
        data = read_regular(path, MAX_READ)
    except FileNotFoundError:
        return parse_status(None, num_backends)
    except OSError as error:
        return parse_status(None, num_backends)._replace(note=f"unreadable: {error.strerror}")
    return parse_status(data, num_backends)


def set_aside(path: str) -> str:
    """Move the file aside in its own directory, to a new timestamped name; return it.

    link() plus unlink() keeps every byte and never replaces an existing name (an
    earlier set-aside file, or anything planted), and the same directory keeps it
    on the same file system next to pgpool's own files, where an operator looks.
    """
    from pgpool_anycast_hook.safe_files import move_aside

    base = f"{path}.set-aside-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    for counter in range(MAX_SET_ASIDE_TRIES):
        target = base if counter == 0 else f"{base}.{counter}"
        try:
            move_aside(path, target)
            return target
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"{MAX_SET_ASIDE_TRIES} set-aside names taken", base)
