"""The hook's side of the guarded wiring: send pgpool's event to the guard, bounded.

What pgpool waits for, so it loads neither netlink nor click code: one SOCK_SEQPACKET
message to the guard's socket and one answer back, within what is left of the
run's deadline (at most REPLY_SECONDS). A guard that is not running, refuses or
does not answer is GuardUnreachable (exit 76), one clear line, never a hang.

With mode = "guarded", this is the whole run of `add` and `del`, so it costs little
more than starting Python: main.py comes here before importing hook.py, the
settings come from the compiled cache (config_cache.read_client: no config.py, no
tomllib, no validators), the socket is made with `_socket` (see run_log.py), and
the request, a few names, numbers and flags, is written without the json module.
When the cache cannot answer, hook.py loads the whole configuration and, if it
says guarded, ends up in exchange() all the same.
"""

import _socket

from pgpool_anycast_hook import deadline
from pgpool_anycast_hook.config_cache import ClientSettings, read_client
from pgpool_anycast_hook.errors import ConfigError, GuardUnreachable
from pgpool_anycast_hook.hook_argv import HookArgs
from pgpool_anycast_hook.logged_run import framed, start_fields
from pgpool_anycast_hook.run_log import RunLog

REPLY_SECONDS = 3.0
MAX_REPLY = 65536
GUARDED_VERBS = ("add", "del")  # `clean` repairs pgpool_status locally, in either mode
_WORD = frozenset("abcdefghijklmnopqrstuvwxyz_")


def guarded_settings(args: HookArgs) -> ClientSettings | None:
    """The cached client settings when `args` is a request for the guard, else None.

    None also when the cache cannot tell, or a file is not trusted: hook.py then
    loads the configuration itself and reports what it finds, in its frame.
    """
    if args.verb not in GUARDED_VERBS:
        return None
    try:
        client = read_client(args.config_path)
    except (ConfigError, OSError):
        return None
    if client is None or client.mode != "guarded" or client.serve != "pgpool":
        return None  # serve = "postgresql": hook.py refuses, in its frame
    return client


def run_guarded(args: HookArgs, client: ClientSettings) -> int:
    """The whole run of `add` or `del` in the guarded wiring, from cached settings."""
    log = RunLog(action=args.verb, **start_fields(args))

    def run() -> int:
        log.syslog_address = client.syslog_address
        log.facility = client.facility
        deadline.arm(client.deadline + args.wait_ready)
        return exchange(args, client.guard_socket, client.pgpool_conf, log)

    return framed(log, run)


def exchange(args: HookArgs, guard_socket: str, pgpool_conf: str, log: RunLog) -> int:
    """Hand pgpool's event to the guard; its answer makes the line and the exit code."""
    if args.wait_ready:
        from pgpool_anycast_hook.hook import wait_for_pgpool

        wait_for_pgpool(pgpool_conf, args.wait_ready, log)
    request = {"verb": args.verb, "node": args.node, "old_primary": args.old_primary,
               "dry_run": args.dry_run}  # fmt: skip
    code, fields = ask_guard(guard_socket, request)
    log.set(mode="guarded", **{str(k): v for k, v in fields.items() if k not in ("exit", "action")})
    return code


def encode_request(request: dict[str, object]) -> bytes:
    """JSON for a request: names, integers, flags and nulls are written directly."""
    items = [(key, _literal(value)) for key, value in request.items()]
    if all(_WORD.issuperset(key) and key and text is not None for key, text in items):
        return ("{" + ", ".join(f'"{key}": {text}' for key, text in items) + "}").encode()
    import json  # nothing the hook sends today: kept correct all the same

    return json.dumps(request).encode()


def _literal(value: object) -> str | None:
    """`value` as JSON if it is one of the simple kinds, else None."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str) and value and _WORD.issuperset(value):
        return f'"{value}"'
    return None


class _Strict:
    """What the C scanner reads off json.JSONDecoder: the defaults of json.loads."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    array_hook = None  # read by newer scanners
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not a number JSON allows")


def decode_json(text: str) -> object:
    """json.loads(text), through the C scanner that json.loads itself uses.

    Importing `json` compiles its Python decoder's and encoder's regular expressions,
    a tenth of the guarded client's run; `_json` has the same scanner, ready. Should
    a Python without it, or with another scanner, come along, json.loads does it.
    NaN and Infinity are refused (they are not JSON, and the guard never sends them).
    """
    try:
        import _json

        scan = _json.make_scanner(_Strict())  # type: ignore[arg-type]
    except (ImportError, AttributeError, TypeError):
        import json

        return json.loads(text, parse_constant=_Strict.parse_constant)
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        value, end = scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"no JSON value at character {stop.value}") from None
    if text[end:].strip(" \t\n\r"):
        raise ValueError(f"extra data after character {end}")
    return value


def ask_guard(path: str, request: dict[str, object]) -> tuple[int, dict[str, object]]:
    """(exit code, log fields) of the guard's answer to `request`."""
    timeout = max(0.05, min(REPLY_SECONDS, deadline.seconds_left() - 0.2))
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.send(encode_request(request))
            reply = sock.recv(MAX_REPLY)
        finally:
            sock.close()
        answer = decode_json(reply.decode())
    except TimeoutError:
        raise GuardUnreachable(f"the guard did not answer on {path} within {timeout:g} s") from None
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError too
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise GuardUnreachable(f"the guard is not reachable on {path}: {why}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("fields"), dict):
        raise GuardUnreachable(f"the guard on {path} answered something else")
    return int(answer.get("exit", 70)), answer["fields"]
