"""Read the few pgpool.conf settings the hook needs, the way pgpool resolves them.

pgpool.conf lines are `name = value` (the `=` is optional), values may be quoted
with single quotes, `#` starts a comment, and the last assignment wins. pgpool 4.3+
also has `include = 'file'`, relative to the including file's directory.

The status file lives in `logdir` for pgpool 4.1-4.6 and in `work_dir` from 4.7,
where `logdir` stays an alias of `work_dir`; so whichever of the two is assigned
last names the directory. Debian's build of pgpool changes the compiled-in default
from /tmp to /var/log/postgresql, and its pid file and sockets default to
/var/run/postgresql.

The socket directory: pgpool 4.4.0 renamed `socket_dir` to `unix_socket_directories`
(release-4.4.sgml, "Migration to Version 4.4"; commit bc03514b). Unlike `delegate_IP`
it kept no alias: from 4.4 on `socket_dir` is not in the parameter table of
src/config/pool_config_variables.c, and setConfigOption() only logs an INFO
"unrecognized configuration parameter" for it, whatever the order of the lines;
4.1-4.3 ignore `unix_socket_directories` the same way. The new name is a list that
get_list_from_string() cuts with strtok(","): empty pieces are dropped, nothing is
trimmed, and pgpool_main.c makes one socket per piece. So the hook uses the first
non-empty piece of `unix_socket_directories` when there is one (a note says so when
a different `socket_dir` is then ignored), else `socket_dir`, else Debian's default.

pgpool.conf is only ever root's, but what the hook reads must not hang or crash a
run: every file is read through safe_files (a FIFO or a directory is refused, never
waited on), at most MAX_FILE_BYTES each and MAX_FILES in all. Where pgpool itself
refuses to start, so does the reading, with a ConfigError naming the file: an
include that cannot be read, an include nested deeper than 10 (ParseConfigFile() in
src/config/pool_config.l reports "maximum nesting depth exceeded" then; an include
loop is caught here as such), and a `port` or `pcp_port` that is no port number.
pgpool reads integers with strtol(base 0) (parse_int()), so 0x hex and leading-0
octal count too. A `backend_portN` beyond MAX_NUM_BACKENDS (128, libpcp_ext.h) or
with a garbled value is ignored with a note, and a value ends at a NUL byte, as it
does for pgpool's C strings.
"""

import os
import re
from typing import NamedTuple

from pgpool_anycast_hook.errors import ConfigError
from pgpool_anycast_hook.safe_files import read_regular

STATUS_FILE_NAME = "pgpool_status"
DEBIAN_DEFAULT_WORK_DIR = "/var/log/postgresql"
DEBIAN_DEFAULT_PID_FILE = "/var/run/postgresql/pgpool.pid"
DEBIAN_DEFAULT_SOCKET_DIR = "/var/run/postgresql"
DEFAULT_PORT = 9999
DEFAULT_PCP_PORT = 9898
MAX_INCLUDE_DEPTH = 10
MAX_NUM_BACKENDS = 128
MAX_FILE_BYTES = 1 << 20
MAX_FILES = 100  # files read in all, includes counted each time they are read

_LINE = re.compile(r"""^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=?\s*('((?:[^'\\]|\\.|'')*)'|[^\s#]*)""")
_BACKEND_PORT = re.compile(r"backend_port([0-9]+)")
_C_INTEGER = re.compile(r"([+-]?)(?:0[xX]([0-9a-fA-F]{1,8})|(0[0-7]{0,11})|([1-9][0-9]{0,9}))")
_BLANKS = " \t\n\r\v\f"


class PgpoolSettings(NamedTuple):
    path: str
    found: bool
    work_dir: str
    port: int
    pcp_port: int
    listen_addresses: str
    socket_dir: str
    pid_file: str
    num_backends: int
    notes: tuple[str, ...] = ()  # what was ignored, for check-config

    @property
    def status_file(self) -> str:
        return os.path.join(self.work_dir, STATUS_FILE_NAME)


class _Assignment(NamedTuple):
    name: str
    value: str
    file: str


def _unquote(raw: str, quoted: str | None) -> str:
    if quoted is None:
        return raw
    return quoted.replace("''", "'").replace("\\'", "'")


def _shown(path: str, limit: int = 200) -> str:
    """A file name for a message, cut short: an include's name is the file's content."""
    return path if len(path) <= limit else f"{path[:limit]}..."


def _read_text(path: str, top: bool) -> str | None:
    """The file's text; None when the top file is missing (pgpool's defaults apply)."""
    try:
        data = read_regular(path, MAX_FILE_BYTES + 1, follow=True)
    except (FileNotFoundError, NotADirectoryError) as error:
        if top:
            return None
        raise ConfigError(f"{_shown(path)}: cannot read included file: {error.strerror}") from None
    except OSError as error:
        raise ConfigError(f"{_shown(path)}: cannot read: {error.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{_shown(path)}: larger than {MAX_FILE_BYTES >> 20} MiB")
    return data.decode("utf-8", errors="replace")


def _expand(path: str, chain: tuple[str, ...], out: list[_Assignment], read: list[str]) -> None:
    """Append the file's assignments to `out`, includes expanded in place.

    `chain` holds the real paths of the including files, `read` every file read so far.
    """
    real = os.path.realpath(path)
    if real in chain:
        raise ConfigError(f"{_shown(path)}: include loop: {_shown(' -> '.join(chain), 600)}")
    if len(chain) > MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{_shown(path)}: includes nested more than {MAX_INCLUDE_DEPTH} deep")
    read.append(real)
    if len(read) > MAX_FILES:
        raise ConfigError(f"{_shown(path)}: more than {MAX_FILES} files read through include")
    text = _read_text(path, top=not chain)
    for line in (text or "").split("\n"):
        match = _LINE.match(line)
        if match is None:
            continue
        name = match.group(1).lower()
        value = _unquote(match.group(2), match.group(3)).split("\0", 1)[0]
        if name == "include":
            target = value if value.startswith("/") else os.path.join(os.path.dirname(path), value)
            _expand(target, (*chain, real), out, read)
        else:
            out.append(_Assignment(name, value, path))


def parse_assignments(path: str) -> list[tuple[str, str]]:
    """All `name = value` pairs of the file, in order, with includes expanded."""
    out: list[_Assignment] = []
    _expand(path, (), out, [])
    return [(a.name, a.value) for a in out]


def c_integer(text: str) -> int | None:
    """The integer pgpool's parse_int() reads in `text` (no units, no fractions), or None."""
    match = _C_INTEGER.fullmatch(text.strip(_BLANKS))
    if match is None:
        return None
    sign, hexadecimal, octal, decimal = match.groups()
    base, digits = (16, hexadecimal) if hexadecimal else (8, octal) if octal else (10, decimal)
    value = int(digits, base)
    return -value if sign == "-" else value


def _port(last: dict[str, _Assignment], key: str, default: int) -> int:
    assignment = last.get(key)
    if assignment is None:
        return default
    value = c_integer(assignment.value)
    if value is None or not 1 <= value <= 65535:
        raise ConfigError(
            f"{_shown(assignment.file)}: {key} must be a port number from 1 to 65535, "
            f"got {assignment.value[:40]!r}"
        )
    return value


def _backends(assignments: list[_Assignment], notes: list[str]) -> int:
    """pgpool's backend count: one past the highest N whose backend_portN is set and not 0."""
    ports: dict[int, _Assignment] = {}
    for assignment in assignments:
        match = _BACKEND_PORT.fullmatch(assignment.name)
        if match is None:
            continue
        digits = match.group(1)
        if len(digits.lstrip("0")) > 3 or int(digits) >= MAX_NUM_BACKENDS:
            notes.append(
                f"{_shown(assignment.file)}: {assignment.name[:40]} ignored: "
                f"pgpool has at most {MAX_NUM_BACKENDS} backends"
            )
            continue
        ports[int(digits)] = assignment
    used = set()
    for index, assignment in ports.items():
        port = c_integer(assignment.value)
        if port is None:
            notes.append(f"{_shown(assignment.file)}: {assignment.name} ignored: not a port number")
        elif port != 0:
            used.add(index)
    return max(used) + 1 if used else 0


def _socket_dir(last: dict[str, _Assignment], notes: list[str]) -> str:
    """The first of unix_socket_directories (4.4+), else socket_dir (4.1-4.3)."""
    legacy = last["socket_dir"].value if "socket_dir" in last else ""
    directories = last.get("unix_socket_directories")
    first = next((d for d in directories.value.split(",") if d), "") if directories else ""
    if first and legacy and legacy != first:
        notes.append(
            f"socket_dir {legacy[:80]!r} ignored: unix_socket_directories is set "
            "(pgpool 4.4+ knows only unix_socket_directories, 4.3 and older only socket_dir)"
        )
    return first or legacy or DEBIAN_DEFAULT_SOCKET_DIR


def read_pgpool_conf(path: str) -> PgpoolSettings:
    """The settings the hook needs; ConfigError where pgpool would refuse to start."""
    assignments: list[_Assignment] = []
    _expand(path, (), assignments, [])
    last: dict[str, _Assignment] = {}
    work_dir = DEBIAN_DEFAULT_WORK_DIR
    for assignment in assignments:
        last[assignment.name] = assignment
        if assignment.name in ("work_dir", "logdir") and assignment.value:
            work_dir = assignment.value
    notes: list[str] = []
    pid_file = last["pid_file_name"].value if "pid_file_name" in last else ""
    pid_file = pid_file or DEBIAN_DEFAULT_PID_FILE
    if not pid_file.startswith("/"):
        pid_file = os.path.join(os.path.dirname(path), pid_file)
    listen = last.get("listen_addresses")
    return PgpoolSettings(
        path=path,
        found=os.path.isfile(path),
        work_dir=work_dir,
        port=_port(last, "port", DEFAULT_PORT),
        pcp_port=_port(last, "pcp_port", DEFAULT_PCP_PORT),
        listen_addresses=listen.value if listen else "localhost",
        socket_dir=_socket_dir(last, notes),
        pid_file=pid_file,
        num_backends=_backends(assignments, notes),
        notes=tuple(notes),
    )
