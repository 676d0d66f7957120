"""Read the few pgpool.conf settings the hook needs, the way pgpool resolves them.

pgpool.conf lines are `name = value` (the `=` is optional), values may be quoted
with single quotes, `#` starts a comment, and the last assignment wins. pgpool 4.3+
also has `include = 'file'`, relative to the including file's directory.

The status file lives in `logdir` for pgpool 4.1-4.6 and in `work_dir` from 4.7,
where `logdir` stays an alias of `work_dir`; so whichever of the two is assigned
last names the directory. Debian's build of pgpool changes the compiled-in default
from /tmp to /var/log/postgresql, and its pid file and sockets default to
/var/run/postgresql.
"""

import os
import re
from typing import NamedTuple

STATUS_FILE_NAME = "pgpool_status"
DEBIAN_DEFAULT_WORK_DIR = "/var/log/postgresql"
DEBIAN_DEFAULT_PID_FILE = "/var/run/postgresql/pgpool.pid"
DEBIAN_DEFAULT_SOCKET_DIR = "/var/run/postgresql"
DEFAULT_PORT = 9999
DEFAULT_PCP_PORT = 9898
MAX_INCLUDE_DEPTH = 10

_LINE = re.compile(r"""^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=?\s*('((?:[^'\\]|\\.|'')*)'|[^\s#]*)""")
_BACKEND_PORT = re.compile(r"^backend_port(\d+)$")


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

    @property
    def status_file(self) -> str:
        return os.path.join(self.work_dir, STATUS_FILE_NAME)


def _unquote(raw: str, quoted: str | None) -> str:
    if quoted is None:
        return raw
    return quoted.replace("''", "'").replace("\\'", "'")


def parse_assignments(path: str, depth: int = 0) -> list[tuple[str, str]]:
    """All `name = value` pairs of the file, in order, with includes expanded."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.readlines()
    except OSError:
        return []
    pairs: list[tuple[str, str]] = []
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            continue
        name = match.group(1).lower()
        value = _unquote(match.group(2), match.group(3))
        if name == "include" and depth < MAX_INCLUDE_DEPTH:
            target = value if value.startswith("/") else os.path.join(os.path.dirname(path), value)
            pairs.extend(parse_assignments(target, depth + 1))
        else:
            pairs.append((name, value))
    return pairs


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def read_pgpool_conf(path: str) -> PgpoolSettings:
    pairs = parse_assignments(path)
    last: dict[str, str] = {}
    work_dir = DEBIAN_DEFAULT_WORK_DIR
    backends: set[int] = set()
    for name, value in pairs:
        last[name] = value
        if name in ("work_dir", "logdir") and value:
            work_dir = value
        backend = _BACKEND_PORT.match(name)
        if backend:
            backends.add(int(backend.group(1)))
    # pgpool counts a backend slot only when its port is set and not 0.
    backends = {i for i in backends if _int(last.get(f"backend_port{i}"), 0) != 0}
    pid_file = last.get("pid_file_name") or DEBIAN_DEFAULT_PID_FILE
    if not pid_file.startswith("/"):
        pid_file = os.path.join(os.path.dirname(path), pid_file)
    return PgpoolSettings(
        path=path,
        found=os.path.isfile(path),
        work_dir=work_dir,
        port=_int(last.get("port"), DEFAULT_PORT),
        pcp_port=_int(last.get("pcp_port"), DEFAULT_PCP_PORT),
        listen_addresses=last.get("listen_addresses", "localhost"),
        socket_dir=last.get("socket_dir") or DEBIAN_DEFAULT_SOCKET_DIR,
        pid_file=pid_file,
        num_backends=max(backends) + 1 if backends else 0,
    )
