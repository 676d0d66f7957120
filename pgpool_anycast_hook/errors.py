"""Exit codes and the exceptions that carry them.

The codes follow sysexits(3) so that monitoring and systemd can tell a bad
configuration from a missing capability from a busy lock. Every failure the
hook knows about is one of these exceptions; anything else is reported as
FAILURE without a traceback.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done, or nothing to do
    DRIFT = 1  # `status`: addresses differ from the desired state; `check`: no answer
    USAGE = 2  # bad command line
    UNAVAILABLE = 69  # the configured interface does not exist
    FAILURE = 70  # anything else went wrong
    TEMPFAIL = 75  # lock not acquired in time, deadline hit, pgpool not ready, drain timeout
    GUARD_UNREACHABLE = 76  # guarded wiring: the guard did not take the request
    NOPERM = 77  # no CAP_NET_ADMIN, or a file we may not touch
    CONFIG = 78  # configuration error


class HookError(Exception):
    """A failure with a one-line message meant for the operator."""

    exit_code = ExitCode.FAILURE
    result = "error"
    changed: tuple[str, ...] = ()  # what was changed before the failure, for the log line


class UsageError(HookError):
    exit_code = ExitCode.USAGE
    result = "usage-error"


class ConfigError(HookError):
    exit_code = ExitCode.CONFIG
    result = "config-error"


class PermissionDenied(HookError):
    exit_code = ExitCode.NOPERM
    result = "permission-denied"


class InterfaceMissing(HookError):
    exit_code = ExitCode.UNAVAILABLE
    result = "interface-missing"


class Busy(HookError):
    exit_code = ExitCode.TEMPFAIL
    result = "busy"


class GuardUnreachable(HookError):
    exit_code = ExitCode.GUARD_UNREACHABLE
    result = "guard-unreachable"


class NotReady(HookError):
    exit_code = ExitCode.TEMPFAIL
    result = "not-ready"


@contextmanager
def file_errors(action: str) -> Iterator[None]:
    """Turn an OSError in the body into PermissionDenied (77) or HookError (70).

    `action` completes "cannot ...", e.g. "write the hold".
    """
    try:
        yield
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        message = f"cannot {action}: {where}{error.strerror or error}"
        if isinstance(error, PermissionError):
            raise PermissionDenied(message) from None
        raise HookError(message) from None
