"""The one probe of pgpool: does it answer an SSLRequest, within a time bound?

A plain connect() proves nothing about a hung pgpool: the kernel completes the
handshake into the listen backlog even when every pgpool process is stopped. So
the probe speaks the protocol: it sends an SSLRequest and needs pgpool's one-byte
answer ('S' or 'N'); a pgpool child must be running to send it.

`SslProbe` never blocks, so the guard can drive it from its one poll loop next to
other descriptors; `probe_once` drives one to its end for the one-shot commands
(`check`, `status`, `reconcile`, `add --wait-ready`). Endpoints are numeric (never a
name: resolving one could wait on DNS), and the whole probe, every endpoint
included, is bounded by its timeout from its start.
"""

import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Sequence
from enum import Enum
from typing import NamedTuple

from pgpool_anycast_hook.pgpool_conf import PgpoolSettings
from pgpool_anycast_hook.pgpool_process import Endpoint, endpoints, tcp_host

SSL_REQUEST = struct.pack("!II", 8, 80877103)
ANSWERS = (b"S", b"N")
MAX_STEPS = 64  # probe_once: connect, send and read per endpoint, with room for wake-ups


class ProbeResult(NamedTuple):
    ok: bool
    detail: str
    latency: float  # seconds from the start of the probe to its outcome
    endpoint: Endpoint | None = None  # the endpoint that answered the SSLRequest, if one did


class Phase(Enum):
    CONNECTING = "connecting"
    SENDING = "sending"
    WAITING = "waiting"
    DONE = "done"


class SslProbe:
    """One SSLRequest probe, tried on each endpoint in order until one answers.

    Every method returns at once. Wait for `events()` on `fileno()` (with poll),
    then call `advance(now)`; call `expire(now)` at any time (with `deadline` as the
    poll timeout); `close()` at the end. Both return the ProbeResult once the probe
    is over, the same one on every later call, else None.

    `fileno()` stays open until `close()`, also once the probe is over: poll then
    reports it ready at once (`events()` is POLLOUT; a failed socket is always
    ready), so a caller that registers it right after the constructor, which may
    already have failed every endpoint, still wakes up and collects the result.
    It is -1 only when no socket was ever made (no endpoint, or socket() failed);
    `expire()` then already returns the result.
    """

    def __init__(self, targets: Sequence[Endpoint], timeout: float, now: float | None = None):
        self.started = time.monotonic() if now is None else now
        self.deadline = self.started + timeout
        self.timeout = timeout
        self.endpoint: Endpoint | None = None
        self.phase = Phase.CONNECTING
        self._targets = list(targets)
        self._next = 0
        self._sock: socket.socket | None = None
        self._sent = 0
        self._result: ProbeResult | None = None
        self._try_next(self.started, "no endpoint to probe")

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def events(self) -> int:
        return select.POLLIN if self.phase is Phase.WAITING else select.POLLOUT

    def advance(self, now: float) -> ProbeResult | None:
        """Take the next step if the socket is ready for it (checked here, without waiting)."""
        if self.expire(now) is not None or self._sock is None:
            return self._result
        if not self._ready():
            return None
        if self.phase is Phase.CONNECTING:
            self._connected(now)
        elif self.phase is Phase.SENDING:
            self._send(now)
        elif self.phase is Phase.WAITING:
            self._read(now)
        return self._result

    def expire(self, now: float) -> ProbeResult | None:
        """The result if the probe is over; a failure once `deadline` has passed."""
        if self._result is None and now >= self.deadline:
            assert self.endpoint is not None  # set whenever the probe is not over
            detail = f"no answer from {self.endpoint} within {self.timeout:g} s"
            self._finish(ProbeResult(False, detail, now - self.started))
        return self._result

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- the steps -------------------------------------------------------------------

    def _ready(self) -> bool:
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock, self.events())
        return bool(poller.poll(0))

    def _try_next(self, now: float, failure: str) -> None:
        """Start a connection to the next endpoint; finish with `failure` if none is left."""
        while self._next < len(self._targets):
            self.endpoint = self._targets[self._next]
            self._next += 1
            failure = self._connect(self.endpoint)
            if not failure:
                return
        self._finish(ProbeResult(False, failure, now - self.started))

    def _connect(self, endpoint: Endpoint) -> str:
        """Start the connection: "" when under way, else why it failed."""
        if not isinstance(endpoint.address, str):
            try:
                ipaddress.ip_address(endpoint.address[0])
            except ValueError:
                return f"{endpoint}: not a numeric address"
        try:
            sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
        except OSError as error:
            return f"{endpoint}: {error.strerror or error}"
        sock.setblocking(False)
        self._replace_socket(sock)  # kept even when it fails: a caller may poll it already
        try:
            code = sock.connect_ex(endpoint.address)
        except OSError as error:  # e.g. a unix path too long
            return f"{endpoint}: {error.strerror or error}"
        if code in (0, errno.EINPROGRESS):
            self.phase = Phase.SENDING if code == 0 else Phase.CONNECTING
            return ""
        if code == errno.EAGAIN and endpoint.family == socket.AF_UNIX:
            return f"{endpoint}: listen queue full"  # and no event says when to try again
        return f"{endpoint}: {os.strerror(code)}"

    def _replace_socket(self, sock: socket.socket) -> None:
        self.close()
        self._sock, self._sent = sock, 0

    def _connected(self, now: float) -> None:
        assert self._sock is not None
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._try_next(now, f"{self.endpoint}: {os.strerror(code)}")
            return
        self.phase = Phase.SENDING
        self._send(now)

    def _send(self, now: float) -> None:
        assert self._sock is not None
        try:
            self._sent += self._sock.send(SSL_REQUEST[self._sent :], socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return
        except OSError as error:
            self._try_next(now, f"{self.endpoint}: {error.strerror or error}")
            return
        if self._sent == len(SSL_REQUEST):
            self.phase = Phase.WAITING

    def _read(self, now: float) -> None:
        assert self._sock is not None
        try:
            answer = self._sock.recv(1)
        except BlockingIOError:
            return
        except OSError as error:
            self._try_next(now, f"{self.endpoint}: {error.strerror or error}")
            return
        if answer in ANSWERS:
            detail = f"{self.endpoint} answered"
            self._finish(ProbeResult(True, detail, now - self.started, self.endpoint))
        else:
            self._try_next(now, f"{self.endpoint}: unexpected answer {answer!r}")

    def _finish(self, result: ProbeResult) -> None:
        self.phase = Phase.DONE
        self._result = result


def finish(probe: SslProbe) -> ProbeResult:
    """Drive `probe` to its end with poll: at most MAX_STEPS wake-ups, until its deadline."""
    poller = select.poll()
    for _ in range(MAX_STEPS):
        now = time.monotonic()
        result = probe.advance(now)
        if result is not None:
            return result
        poller.register(probe.fileno(), probe.events())
        poller.poll(max(0.0, probe.deadline - now) * 1000)
        poller.unregister(probe.fileno())
    now = time.monotonic()
    return ProbeResult(False, f"probe gave up after {MAX_STEPS} steps", now - probe.started)


def conninfo(settings: PgpoolSettings, **parameters: str) -> str:
    """libpq's connection string for pgpool: its unix socket, then its TCP address (as
    SslProbe tries them; pgpool 4.6 was seen to lose its socket file in a failover and
    go on serving over TCP). Numeric only: libpq resolves no name. Empty parameters are
    left out (libpq's defaults: the user running this, a database of that name)."""
    tcp = tcp_host(settings.listen_addresses)
    hosts = settings.socket_dir if tcp is None else f"{settings.socket_dir},{tcp}"
    ports = str(settings.port) if tcp is None else f"{settings.port},{settings.port}"
    return libpq_conninfo(hosts, ports, **parameters)


def libpq_conninfo(hosts: str, ports: str, **parameters: str) -> str:
    """libpq's connection string: `hosts` (socket directories or numeric addresses) and
    `ports`, as libpq lists them; pgpool's (conninfo) and PostgreSQL's (guard_role.py)."""
    fields = {"host": hosts, "port": ports, **parameters,
              "application_name": "pgpool-anycast-hook", "sslmode": "disable",
              "gssencmode": "disable"}  # fmt: skip
    quoted = (value.replace("\\", "\\\\").replace("'", "\\'") for value in fields.values())
    return " ".join(f"{key}='{value}'" for key, value in zip(fields, quoted, strict=True) if value)


def query(settings: PgpoolSettings, timeout: float) -> ProbeResult:
    """`SELECT 1` through pgpool's unix socket (as psql would connect), within `timeout`."""
    answer = drive(QueryProbe(conninfo(settings), "SELECT 1", timeout))
    if answer.ok and answer.rows == (("1",),):
        return ProbeResult(True, "SELECT 1 answered", answer.latency)
    return ProbeResult(False, f"SELECT 1 failed: {answer.detail[:200]}", answer.latency)


def probe_once(settings: PgpoolSettings, timeout: float, with_query: bool) -> ProbeResult:
    """The SSLRequest probe (the unix socket first, then TCP), then optionally SELECT 1.

    All of it within `timeout`: the query gets what the SSLRequest left.
    """
    probe = SslProbe(endpoints(settings), timeout)
    try:
        result = finish(probe)
    finally:
        probe.close()
    if not (result.ok and with_query):
        return result
    left = probe.deadline - time.monotonic()
    if left <= 0:
        return ProbeResult(False, "no time left for SELECT 1", time.monotonic() - probe.started)
    answered = query(settings, left)
    return answered._replace(latency=result.latency + answered.latency, endpoint=result.endpoint)


class QueryAnswer(NamedTuple):
    ok: bool
    detail: str  # what failed, or a summary of the answer
    latency: float  # seconds from the start of the query to its outcome
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str | None, ...], ...] = ()


MAX_ROWS = 1024  # far more than any POOL_NODES (at most 128 backends)


class QueryProbe:
    """One statement to pgpool through libpq (psycopg's pq layer), never blocking.

    The same protocol as SslProbe: wait for `events()` on `fileno()`, call
    `advance(now)`; `expire(now)` at the deadline; `close()` at the end. The socket
    may change while libpq connects (it tries each address in turn), so register
    `fileno()` again after every step. libpq does no name lookup here: `host` is
    pgpool's socket directory, and a TCP address would have to be numeric.
    """

    def __init__(self, conninfo: str, statement: str, timeout: float, now: float | None = None):
        from psycopg import pq

        self._pq = pq
        self.started = time.monotonic() if now is None else now
        self.deadline = self.started + timeout
        self.timeout = timeout
        self.statement = statement
        self._events = select.POLLOUT  # libpq: connect_start behaves like "polling writing"
        self._connecting = True
        self._columns: tuple[str, ...] = ()
        self._rows: list[tuple[str | None, ...]] = []
        self._error = ""
        self._result: QueryAnswer | None = None
        self._conn = pq.PGconn.connect_start(conninfo.encode())
        if self._conn.status == pq.ConnStatus.BAD:
            self._fail(self.started, self._conn.error_message)

    def fileno(self) -> int:
        if self._result is not None:
            return -1
        try:
            return int(self._conn.socket)
        except Exception:  # psycopg.OperationalError: the connection is gone
            return -1

    def events(self) -> int:
        return self._events

    def expire(self, now: float) -> QueryAnswer | None:
        if self._result is None and now >= self.deadline:
            step = "connect" if self._connecting else "answer"
            self._fail(now, f"no {step} within {self.timeout:g} s")
        return self._result

    def advance(self, now: float) -> QueryAnswer | None:
        if self.expire(now) is not None:
            return self._result
        try:
            if self._connecting:
                self._connect_step(now)
            elif self._events == select.POLLOUT:
                self._flush()
            else:
                self._read(now)
        except Exception as error:  # psycopg.Error from the pq layer: the connection failed
            self._fail(now, str(error) or type(error).__name__)
        return self._result

    def close(self) -> None:
        self._conn.finish()

    # -- the steps -----------------------------------------------------------------

    def _connect_step(self, now: float) -> None:
        polling = self._pq.PollingStatus
        state = self._conn.connect_poll()
        if state == polling.READING:
            self._events = select.POLLIN
        elif state == polling.WRITING:
            self._events = select.POLLOUT
        elif state == polling.OK:
            self._connecting = False
            self._conn.nonblocking = 1
            self._conn.send_query(self.statement.encode())
            self._events = select.POLLOUT
            self._flush()
        else:
            self._fail(now, self._conn.error_message)

    def _flush(self) -> None:
        if self._conn.flush() == 0:
            self._events = select.POLLIN

    def _read(self, now: float) -> None:
        status = self._pq.ExecStatus
        self._conn.consume_input()
        while not self._conn.is_busy():
            result = self._conn.get_result()
            if result is None:
                if self._error:
                    self._fail(now, self._error)
                else:
                    summary = f"{len(self._rows)} row(s)"
                    self._result = QueryAnswer(
                        True, summary, now - self.started, self._columns, tuple(self._rows)
                    )
                return
            if result.status == status.TUPLES_OK:
                self._columns = tuple(
                    (result.fname(c) or b"").decode("utf-8", "replace")
                    for c in range(result.nfields)
                )
                for r in range(min(result.ntuples, MAX_ROWS - len(self._rows))):
                    self._rows.append(tuple(_text(result.get_value(r, c))
                                            for c in range(result.nfields)))  # fmt: skip
            elif result.status != status.COMMAND_OK:
                self._error = _text(result.error_message) or "the statement failed"

    def _fail(self, now: float, error: bytes | str) -> None:
        text = _text(error) if isinstance(error, bytes) else error
        detail = " ".join(text.split())[:300] or "failed"
        self._result = QueryAnswer(False, detail, now - self.started)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def drive(probe: "QueryProbe") -> QueryAnswer:
    """Drive a QueryProbe to its end with poll (the one-shot commands): bounded by its
    deadline and by MAX_STEPS wake-ups."""
    poller = select.poll()
    try:
        for _ in range(MAX_STEPS):
            now = time.monotonic()
            result = probe.advance(now)
            if result is not None:
                return result
            fd = probe.fileno()
            if fd < 0:
                break
            poller.register(fd, probe.events())
            poller.poll(max(0.0, probe.deadline - now) * 1000)
            poller.unregister(fd)
        now = time.monotonic()
        return probe.expire(max(now, probe.deadline)) or QueryAnswer(False, "gave up", 0.0)
    finally:
        probe.close()
