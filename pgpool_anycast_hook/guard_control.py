"""The guard's control socket: who may ask it, and one request and one answer each.

A SOCK_SEQPACKET socket under /run: one message is one whole request, so no client
can leave half of one behind, and the guard never waits on a client (every socket
is non-blocking; a client gets CLIENT_SECONDS to send its request). Anyone may
connect (mode 0666): SO_PEERCRED says who did, and only root and `guard_clients`
are heard; the others read their refusal as the answer. At most MAX_CLIENTS wait
at once; one more is closed at once, which its hook reports as exit 76.
"""

import contextlib
import json
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from pgpool_anycast_hook.errors import ExitCode, file_errors

MAX_REQUEST = 4096
MAX_CLIENTS = 32
CLIENT_SECONDS = 1.0
_UCRED = struct.Struct("3i")

Handler = Callable[[dict[str, Any]], tuple[int, dict[str, object]]]


class Client:
    def __init__(self, conn: socket.socket, until: float, uid: int, heard: bool) -> None:
        self.conn, self.until, self.uid, self.heard = conn, until, uid, heard


class ControlSocket:
    """The listening socket and the clients that have not sent their request yet."""

    def __init__(self, path: str, poller: select.poll) -> None:
        self.poller = poller
        self.clients: dict[int, Client] = {}
        self.server = _listen(path)
        poller.register(self.server.fileno(), select.POLLIN)

    def fileno(self) -> int:
        return self.server.fileno()

    def accept(self, hears: Callable[[int], bool]) -> None:
        """Take one connection; `hears(uid)` says whether its requests are heard."""
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        conn.setblocking(False)
        _pid, uid, _gid = _UCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        if len(self.clients) >= MAX_CLIENTS:
            conn.close()  # the client sees a reset: unreachable for now, exit 76
            return
        until = time.monotonic() + CLIENT_SECONDS
        self.clients[conn.fileno()] = Client(conn, until, uid, hears(uid))
        self.poller.register(conn.fileno(), select.POLLIN)

    def serve(self, fd: int, handle: Handler) -> None:
        """Read the request on `fd`, answer it with `handle`'s outcome, close."""
        client = self.clients.pop(fd)
        self.poller.unregister(fd)
        code: int
        fields: dict[str, object]
        try:
            request = json.loads(client.conn.recv(MAX_REQUEST))
            if client.heard:
                code, fields = handle(request)
            else:  # answered after reading, so the client reads the refusal
                code = ExitCode.NOPERM
                fields = {
                    "result": "permission-denied",
                    "error": f"uid {client.uid} may not ask the guard",
                }
        except (OSError, ValueError, TypeError, KeyError) as error:
            code = ExitCode.USAGE
            fields = {"result": "usage-error", "error": f"bad request: {error}"}
        with contextlib.suppress(OSError):  # a client that left: nothing to tell
            client.conn.send(json.dumps({"exit": int(code), "fields": fields}).encode())
        client.conn.close()

    def drop_late(self, now: float) -> None:
        for fd, client in list(self.clients.items()):
            if now > client.until:
                self.poller.unregister(fd)
                del self.clients[fd]
                client.conn.close()


def _listen(path: str) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        if os.path.exists(path) and not os.path.islink(path):
            os.unlink(path)  # a socket left by the previous guard
    except OSError:
        pass
    old = os.umask(0o111)  # rw for all; SO_PEERCRED decides who is heard
    try:
        with file_errors(f"bind the guard's socket {path}"):
            server.bind(path)
    finally:
        os.umask(old)
    server.listen(MAX_CLIENTS)
    server.setblocking(False)
    return server
