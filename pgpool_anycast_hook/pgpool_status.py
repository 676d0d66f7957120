"""Read `pgpool_status` with pgpool's own rule, and move it aside when it would hurt.

pgpool (read_status_file(), the same from 4.1 to 4.7) reads the file like this:

- unreadable or absent: every configured node starts up;
- exactly 512 bytes readable and the first num_backends native ints all 1, 2 or 3:
  the pre-3.4 binary record; 3 is down, 1 and 2 are up;
- otherwise text, read with fgets() into a 9-byte buffer, so a line longer than
  8 characters is split into several records, each counting as the next node;
  a record is up when it starts with "up" in any case (the rest is ignored);
  "down", "unused" and anything else leave the node out;
- if no record is up the file is "bogus" and every node starts up.

A primary that this rule reads as not up is never used again by pgpool until
someone runs pcp_attach_node. `clean` therefore moves such a file aside (never
deletes it), so that pgpool starts with every node up, as if the file were absent.
"""

import os
import struct
import time
from enum import StrEnum
from typing import NamedTuple

BINARY_RECORD_SIZE = 512  # BACKEND_STATUS status[128], 4-byte ints
MAX_BACKENDS = 128
FGETS_CHUNK = 8  # fgets(buf, 9) reads at most 8 characters
MAX_READ = 1 << 20


class StatusFormat(StrEnum):
    ABSENT = "absent"
    TEXT = "text"
    BINARY = "binary"


class PgpoolStatus(NamedTuple):
    format: StatusFormat
    records: tuple[bytes, ...]  # text: fgets records; binary: str(int) per node
    up: tuple[bool, ...]  # per record, before the "bogus file" rule
    note: str = ""  # why the file counts as absent (permission, ...)

    @property
    def bogus(self) -> bool:
        """No record is up: pgpool then brings every node up."""
        return self.format is StatusFormat.TEXT and not any(self.up)

    def node_usable(self, node: int) -> bool:
        """Would pgpool, starting now, use backend `node`?"""
        if self.format is StatusFormat.ABSENT or self.bogus:
            return True
        return node < len(self.up) and self.up[node]

    def summary(self, limit: int = 16) -> str:
        """What the file held, short enough for a log line."""
        if self.format is StatusFormat.ABSENT:
            return "absent"
        shown = [r.decode("ascii", "backslashreplace").strip() or "''" for r in self.records]
        text = ",".join(shown[:limit]) + (",..." if len(shown) > limit else "")
        return f"binary:{text}" if self.format is StatusFormat.BINARY else text


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


def binary_statuses(data: bytes, num_backends: int) -> list[int] | None:
    """The legacy record's statuses, or None when pgpool would read `data` as text."""
    if len(data) < BINARY_RECORD_SIZE:
        return None
    values = struct.unpack(f"={MAX_BACKENDS}i", data[:BINARY_RECORD_SIZE])  # host byte order
    checked = values[: min(num_backends, MAX_BACKENDS)]
    if any(v not in (1, 2, 3) for v in checked):
        return None
    return list(checked)


def parse_status(data: bytes | None, num_backends: int) -> PgpoolStatus:
    """pgpool's reading of a status file's bytes (None: absent or unreadable)."""
    if data is None:
        return PgpoolStatus(StatusFormat.ABSENT, (), ())
    binary = binary_statuses(data, num_backends)
    if binary is not None:
        return PgpoolStatus(
            StatusFormat.BINARY,
            tuple(str(v).encode() for v in binary),
            tuple(v in (1, 2) for v in binary),
        )
    records = fgets_records(data)
    return PgpoolStatus(
        StatusFormat.TEXT, tuple(records), tuple(r[:2].lower() == b"up" for r in records)
    )


def read_status_file(path: str, num_backends: int) -> PgpoolStatus:
    """Read the file; anything pgpool could not open counts as absent, as it does for pgpool."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_READ)
    except FileNotFoundError:
        return parse_status(None, num_backends)
    except OSError as error:
        return parse_status(None, num_backends)._replace(note=f"unreadable: {error.strerror}")
    return parse_status(data, num_backends)


def set_aside(path: str) -> str:
    """Rename the file in its own directory to a timestamped name; return that name.

    A rename keeps every byte and is atomic; the same directory keeps it on the same
    file system and next to pgpool's own files, where an operator will look.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{path}.set-aside-{stamp}"
    target = base
    for counter in range(1, 1000):
        if not os.path.lexists(target):
            break
        target = f"{base}.{counter}"
    os.rename(path, target)
    return target
