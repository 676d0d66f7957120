"""Exit codes and the exceptions that carry them.

The codes follow sysexits(3) so that monitoring and systemd can tell a bad
configuration from a missing capability from a busy lock. Every failure the
hook knows about is one of these exceptions; anything else is reported as
FAILURE without a traceback.

Every run imports this module, the guarded client's one-message run too, so it
stays plain: the codes are ints in a namespace class (IntEnum would load `enum`),
and file_errors is a small class rather than a contextlib generator.
"""

TYPE_CHECKING = False  # mypy reads this as True; at run time `types` stays unloaded
if TYPE_CHECKING:
    from types import TracebackType


class ExitCode:
    """The process exit codes, as plain ints."""

    OK = 0  # done, or nothing to do
    DRIFT = 1  # `status`: addresses differ from the desired state (--routing: or from the
    #            routing daemon's export; "unknown" is not drift); `check`: no answer
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


class file_errors:  # lower case: it replaced a function and is used like one
    """Turn an OSError in the body into PermissionDenied (77) or HookError (70).

    `action` completes "cannot ...", e.g. "write the hold".
    """

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: "TracebackType | None",
    ) -> None:
        if not isinstance(error, OSError):
            return
        where = f"{error.filename}: " if error.filename else ""
        message = f"cannot {self.action}: {where}{error.strerror or error}"
        if isinstance(error, PermissionError):
            raise PermissionDenied(message) from None
        raise HookError(message) from None
