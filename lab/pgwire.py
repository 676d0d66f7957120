"""A minimal PostgreSQL protocol client: connect, trust auth, one simple query, close.

Load and probes need hundreds of short connections per second with an exact outcome
for each; starting psql per connection would cost more CPU than the lab itself.
Supports only what the lab uses: protocol 3.0, trust authentication, text results.
"""

from __future__ import annotations

import socket
import struct
from typing import BinaryIO

PROTOCOL_3_0 = 196608


class QueryFailed(Exception):
    """The connection or the query failed; str() says how (refused, reset, server error)."""


def query(
    host: str,
    port: int,
    sql: str,
    *,
    user: str = "postgres",
    database: str = "postgres",
    timeout: float = 2.0,
) -> list[str | None]:
    """Run `sql` on a new connection and return the first row's columns as text."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            params = f"user\0{user}\0database\0{database}\0\0".encode()
            body = struct.pack("!I", PROTOCOL_3_0) + params
            sock.sendall(struct.pack("!I", len(body) + 4) + body)
            reader = sock.makefile("rb")
            wait_ready(reader)
            text = sql.encode() + b"\0"
            sock.sendall(b"Q" + struct.pack("!I", len(text) + 4) + text)
            row = read_result(reader)
            sock.sendall(b"X" + struct.pack("!I", 4))
            return row
    except OSError as error:
        raise QueryFailed(error.strerror or type(error).__name__) from error


def read_message(reader: BinaryIO) -> tuple[bytes, bytes]:
    header = reader.read(5)
    if len(header) < 5:
        raise QueryFailed("connection closed by server")
    kind, length = header[:1], struct.unpack("!I", header[1:])[0]
    payload = reader.read(length - 4)
    if len(payload) < length - 4:
        raise QueryFailed("connection closed by server")
    return kind, payload


def error_text(payload: bytes) -> str:
    fields = {part[:1]: part[1:].decode(errors="replace") for part in payload.split(b"\0") if part}
    return fields.get(b"M", "server error")


def wait_ready(reader: BinaryIO) -> None:
    """Read authentication and startup messages until ReadyForQuery."""
    while True:
        kind, payload = read_message(reader)
        if kind == b"E":
            raise QueryFailed(error_text(payload))
        if kind == b"R" and struct.unpack("!I", payload[:4])[0] != 0:
            raise QueryFailed("server asks for a password; the lab uses trust")
        if kind == b"Z":
            return


def read_result(reader: BinaryIO) -> list[str | None]:
    row: list[str | None] = []
    failure = ""
    while True:
        kind, payload = read_message(reader)
        if kind == b"D" and not row:
            row = parse_data_row(payload)
        elif kind == b"E":
            failure = error_text(payload)
        elif kind == b"Z":
            if failure:
                raise QueryFailed(failure)
            return row


def parse_data_row(payload: bytes) -> list[str | None]:
    count = struct.unpack("!H", payload[:2])[0]
    offset = 2
    values: list[str | None] = []
    for _ in range(count):
        size = struct.unpack("!i", payload[offset : offset + 4])[0]
        offset += 4
        if size < 0:
            values.append(None)
            continue
        values.append(payload[offset : offset + size].decode())
        offset += size
    return values
