"""Exactly one key=value line per run, to syslog and to stderr, never blocking.

pgpool ignores the hook's exit status and logs only "execute command: ...", so this
line is the only record of what the hook decided and did. It goes to the syslog
socket (ident pgpool-anycast-hook, configurable facility) and to stderr, which
systemd and pgpool's own log capture.

Neither may hold up a withdrawal: a journal that stopped reading, a full pipe or a
full syslog queue must not keep pgpool waiting. So stderr is written without
blocking (a socket with MSG_DONTWAIT; a pipe, FIFO or terminal through a fresh
non-blocking open of /proc/self/fd/2, which leaves pgpool's own descriptor as it
was, or, for a pipe we may not reopen, one atomic write of what poll() says fits)
and the syslog datagram is sent with MSG_DONTWAIT. What cannot be written at
once is dropped; a missing, closed or refusing stderr or syslog never fails a run.

Every run writes through here, the guarded client's too, so the sockets are made
with `_socket`, the C module behind `socket` (same calls, same errors): `socket`
itself converts hundreds of constants to enums on import, which costs more than
the rest of this module. The claim is a `_thread` lock, for the same reason.
"""

import _socket
import _thread
import errno
import os
import stat
import time

from pgpool_anycast_hook.errors import ExitCode

IDENT = "pgpool-anycast-hook"
SEVERITY_ERR, SEVERITY_WARNING, SEVERITY_INFO = 3, 4, 6
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/%+@[]")
STDERR = 2


def format_value(value: object) -> str:
    """Quote a value only when it needs it, so lines stay easy to grep and to parse."""
    text = str(value)
    if text and all(c in _SAFE for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
    return f'"{escaped}"'


def format_line(fields: dict[str, object]) -> str:
    return " ".join(f"{key}={format_value(value)}" for key, value in fields.items())


def ensure_standard_fds() -> None:
    """Open /dev/null on any of fds 0-2 that is closed.

    Otherwise the next socket or file the run opens would get that number, and a
    line meant for stderr would be written into it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def write_nonblocking(fd: int, data: bytes) -> bool:
    """Write `data` to `fd` if that can be done at once; False if it was dropped."""
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISSOCK(kind):
            sock = _socket.socket(fileno=os.dup(fd))
            try:
                return sock.send(data, _socket.MSG_DONTWAIT) == len(data)
            finally:
                sock.close()
        if stat.S_ISREG(kind) or (stat.S_ISCHR(kind) and os.major(os.fstat(fd).st_rdev) == 1):
            return os.write(fd, data) == len(data)  # a file or /dev/null: never blocks
        # A pipe, FIFO or terminal: a new open file description, made non-blocking,
        # so the shared one (pgpool's stderr) keeps its flags.
        try:
            fresh = os.open(
                f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            )
        except OSError:  # someone else's pipe: write only what fits now, atomically
            import select

            ready = select.poll()
            ready.register(fd, select.POLLOUT)
            if not ready.poll(0):
                return False
            return os.write(fd, data[: select.PIPE_BUF]) == len(data)
        try:
            return os.write(fresh, data) == len(data)
        finally:
            os.close(fresh)
    except OSError:
        return False


def send_syslog(address: str, facility: int, severity: int, message: str) -> bool:
    """Send one RFC 3164 message to a local syslog socket at once; False if dropped."""
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
    pri = facility * 8 + severity
    payload = f"<{pri}>{stamp} {IDENT}[{os.getpid()}]: {message}".encode(errors="replace")
    for kind in (_socket.SOCK_DGRAM, _socket.SOCK_STREAM):
        try:
            sock = _socket.socket(
                _socket.AF_UNIX, kind | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC
            )
        except OSError:
            return False
        try:
            sock.connect(address)
            data = payload if kind == _socket.SOCK_DGRAM else payload + b"\n"
            return sock.send(data, _socket.MSG_DONTWAIT) == len(data)
        except (OSError, ValueError) as error:  # ValueError: a NUL in the path
            if getattr(error, "errno", None) != errno.EPROTOTYPE:
                return False
        finally:
            sock.close()
    return False


class RunLog:
    """Collects the run's fields; `emit` writes them once, whoever calls first.

    `emit` takes no lock while it writes, and the writes never block, so the
    deadline (deadline.py) can always write its own line and end the run.
    """

    def __init__(self, **fields: object) -> None:
        self.fields: dict[str, object] = dict(fields)
        self.syslog_address = "/dev/log"
        self.facility = 3  # daemon
        self.started = time.monotonic()
        self._emitted: dict[str, object] | None = None
        self._claim = _thread.allocate_lock()

    def set(self, **fields: object) -> None:
        self.fields.update(fields)

    @property
    def emitted(self) -> dict[str, object] | None:
        """The fields of the line already written, if any."""
        return self._emitted

    def emit(self, severity: int = SEVERITY_INFO, **fields: object) -> str | None:
        """Write the line unless one was written; return it (None if it was not ours)."""
        if not self._claim.acquire(blocking=False):  # never released: one line per run
            return None
        line_fields = {**self.fields, **fields}
        line_fields["duration_ms"] = round((time.monotonic() - self.started) * 1000, 1)
        self._emitted = line_fields
        self.fields = dict(line_fields)
        line = format_line(line_fields)
        write_nonblocking(STDERR, f"{IDENT}: {line}\n".encode(errors="replace"))
        send_syslog(self.syslog_address, self.facility, severity, line)
        return line

    def expire(self) -> int:
        """The deadline's action (deadline.py): this run's line, unless it was written.

        The exit code is that of the line that was written, whoever wrote it.
        """
        self.emit(SEVERITY_ERR, result="deadline", exit=ExitCode.TEMPFAIL)
        done = self.emitted or {}
        code = done.get("exit", ExitCode.TEMPFAIL)
        return code if isinstance(code, int) else ExitCode.TEMPFAIL
