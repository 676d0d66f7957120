"""Exactly one key=value line per run, to syslog and to stderr.

pgpool ignores the hook's exit status and logs only "execute command: ...", so this
line is the only record of what the hook decided and did. It goes to the syslog
socket (ident pgpool-anycast-hook, configurable facility) and to stderr, which
systemd and pgpool's own log capture. A missing or refusing syslog socket never
fails the run.
"""

import os
import socket
import sys
import threading
import time

IDENT = "pgpool-anycast-hook"
SEVERITY_ERR, SEVERITY_WARNING, SEVERITY_INFO = 3, 4, 6
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/%+@[]")


def format_value(value: object) -> str:
    """Quote a value only when it needs it, so lines stay easy to grep and to parse."""
    text = str(value)
    if text and all(c in _SAFE for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def format_line(fields: dict[str, object]) -> str:
    return " ".join(f"{key}={format_value(value)}" for key, value in fields.items())


def send_syslog(address: str, facility: int, severity: int, message: str) -> bool:
    """Send one RFC 3164 datagram to a local syslog socket; False if nobody listens."""
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
    pri = facility * 8 + severity
    payload = f"<{pri}>{stamp} {IDENT}[{os.getpid()}]: {message}".encode(errors="replace")
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        try:
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.settimeout(0.5)
                sock.connect(address)
                sock.sendall(payload if kind == socket.SOCK_DGRAM else payload + b"\n")
                return True
        except OSError as error:
            if error.errno != getattr(socket, "EPROTOTYPE", 91):
                return False
    return False


class RunLog:
    """Collects the run's fields; `emit` writes them once, whoever calls first."""

    def __init__(self, **fields: object) -> None:
        self.fields: dict[str, object] = dict(fields)
        self.syslog_address = "/dev/log"
        self.facility = 3  # daemon
        self.started = time.monotonic()
        self._emitted = False
        self._lock = threading.Lock()

    def set(self, **fields: object) -> None:
        self.fields.update(fields)

    def emit(self, severity: int = SEVERITY_INFO, **fields: object) -> str | None:
        with self._lock:
            if self._emitted:
                return None
            self._emitted = True
            self.fields.update(fields)
            self.fields["duration_ms"] = round((time.monotonic() - self.started) * 1000, 1)
            line = format_line(self.fields)
            try:
                sys.stderr.write(f"{IDENT}: {line}\n")
                sys.stderr.flush()
            except OSError:
                pass
            send_syslog(self.syslog_address, self.facility, severity, line)
            return line
