"""The hook's side of the guarded wiring: send pgpool's event to the guard, bounded.

What pgpool waits for, so it loads neither netlink nor click code: one SOCK_SEQPACKET
message to the guard's socket and one answer back, within what is left of the
run's deadline (at most REPLY_SECONDS). A guard that is not running, refuses or
does not answer is GuardUnreachable (exit 76), one clear line, never a hang.
"""

import json
import socket

from pgpool_anycast_hook import deadline
from pgpool_anycast_hook.errors import GuardUnreachable

REPLY_SECONDS = 3.0
MAX_REPLY = 65536


def ask_guard(path: str, request: dict[str, object]) -> tuple[int, dict[str, object]]:
    """(exit code, log fields) of the guard's answer to `request`."""
    timeout = max(0.05, min(REPLY_SECONDS, deadline.seconds_left() - 0.2))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.send(json.dumps(request).encode())
            answer = json.loads(sock.recv(MAX_REPLY))
    except TimeoutError:
        raise GuardUnreachable(f"the guard did not answer on {path} within {timeout:g} s") from None
    except (OSError, ValueError) as error:
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise GuardUnreachable(f"the guard is not reachable on {path}: {why}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("fields"), dict):
        raise GuardUnreachable(f"the guard on {path} answered something else")
    return int(answer.get("exit", 70)), answer["fields"]
