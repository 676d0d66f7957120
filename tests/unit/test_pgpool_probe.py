"""The SSLRequest probe against real local sockets: right verdict, in time, never blocking.

Each stand-in is a real socket this test makes (a server thread for those that
accept). Time bounds are generous: they catch a probe that blocks or ignores its
timeout, they measure nothing.
"""

import contextlib
import functools
import os
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgpool_anycast_hook import pgpool_process
from pgpool_anycast_hook.pgpool_conf import PgpoolSettings
from pgpool_anycast_hook.pgpool_probe import SSL_REQUEST, ProbeResult, SslProbe, probe_once
from pgpool_anycast_hook.pgpool_process import Endpoint

TIMEOUT = 0.5
MARGIN = 2.0  # for a loaded test machine
CALL_BOUND = TIMEOUT / 2  # no method may wait for the network

Reply = Callable[[socket.socket], None]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory: a unix socket path has at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="probe", dir="/tmp") as name:
        yield Path(name)


class Server:
    """A listening socket; with `reply`, a thread accepts and hands each connection to it."""

    def __init__(self, family: int, address: str | tuple[str, int], reply: Reply | None) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(8)
        self.endpoint = Endpoint(family, self.sock.getsockname())
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, args=(reply,), daemon=True)
        if reply is not None:
            self.sock.settimeout(0.05)
            self.thread.start()

    def serve(self, reply: Reply) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self.held.append(conn)
            conn.settimeout(MARGIN)
            with contextlib.suppress(OSError):
                reply(conn)

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=MARGIN)
        for conn in self.held:
            conn.close()
        self.sock.close()


def answer(byte: bytes) -> Reply:
    def reply(conn: socket.socket) -> None:
        if conn.recv(8) == SSL_REQUEST:
            conn.sendall(byte)

    return reply


def silent(conn: socket.socket) -> None:
    """Accept, read the request, never answer."""
    conn.recv(8)


def hang_up(conn: socket.socket) -> None:
    conn.recv(8)
    conn.close()


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(family: int, address: str | tuple[str, int], reply: Reply | None = None) -> Server:
        made.append(Server(family, address, reply))
        return made[-1]

    yield make
    for server in made:
        server.close()


def unix(path: Path) -> Endpoint:
    return Endpoint(socket.AF_UNIX, str(path))


def drive(targets: list[Endpoint], timeout: float = TIMEOUT) -> ProbeResult:
    """The test's own poll loop: every call into the probe must return at once."""

    def timed(call: Callable[[], object]) -> object:
        started = time.monotonic()
        value = call()
        assert time.monotonic() - started < CALL_BOUND, f"{call} blocked"
        return value

    probe = timed(lambda: SslProbe(targets, timeout))
    assert isinstance(probe, SslProbe)
    poller = select.poll()
    try:
        for _ in range(100):
            fd, ready = probe.fileno(), []
            if fd >= 0:  # -1: over without a socket (no endpoint), expire() says so
                poller.register(fd, probe.events())
                ready = poller.poll(max(0.0, probe.deadline - time.monotonic()) * 1000)
                poller.unregister(fd)
            now = time.monotonic()
            result = timed(functools.partial(probe.advance if ready else probe.expire, now))
            if result is not None:
                assert isinstance(result, ProbeResult)
                assert probe.advance(time.monotonic()) == result == probe.expire(now + 99)
                return result
        raise AssertionError("the probe never finished")
    finally:
        timed(probe.close)


def timed_drive(targets: list[Endpoint], timeout: float = TIMEOUT) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    result = drive(targets, timeout)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + MARGIN
    assert 0 <= result.latency <= elapsed
    return result, elapsed


# -- one endpoint, each way it can be ------------------------------------------------


@pytest.mark.parametrize("byte", [b"N", b"S"])
def test_an_answer_is_ok(sock_dir: Path, servers: Callable[..., Server], byte: bytes) -> None:
    server = servers(socket.AF_UNIX, str(sock_dir / "s"), answer(byte))
    result, _ = timed_drive([server.endpoint])
    assert result.ok and result.endpoint == server.endpoint
    assert result.detail == f"{sock_dir / 's'} answered"


def test_accepted_but_never_answered_fails_at_the_timeout(
    sock_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(socket.AF_UNIX, str(sock_dir / "s"), silent)
    result, elapsed = timed_drive([server.endpoint])
    assert not result.ok and result.endpoint is None
    assert result.detail == f"no answer from {sock_dir / 's'} within {TIMEOUT:g} s"
    assert elapsed >= TIMEOUT and result.latency >= TIMEOUT
    assert server.accepted == 1


def test_listening_but_never_accepting_fails_at_the_timeout(
    sock_dir: Path, servers: Callable[..., Server]
) -> None:
    """The kernel completes this connect into the backlog: only the answer tells."""
    server = servers(socket.AF_UNIX, str(sock_dir / "s"))
    result, elapsed = timed_drive([server.endpoint])
    assert not result.ok
    assert result.detail.startswith("no answer from") and elapsed >= TIMEOUT


def test_a_full_listen_queue_fails_at_once(sock_dir: Path) -> None:
    path = str(sock_dir / "s")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(0)
        held = []
        for _ in range(64):
            client = socket.socket(socket.AF_UNIX)
            client.setblocking(False)
            held.append(client)
            if client.connect_ex(path) != 0:
                break
        try:
            result, elapsed = timed_drive([unix(sock_dir / "s")])
        finally:
            for client in held:
                client.close()
    assert not result.ok and result.detail == f"{path}: listen queue full"
    assert elapsed < TIMEOUT


@pytest.mark.parametrize(
    ("make", "error"),
    [
        ("nothing", "No such file or directory"),
        ("closed socket", "Connection refused"),
        ("fifo", "Connection refused"),
        ("regular file", "Connection refused"),
        ("directory", "Connection refused"),
    ],
)
def test_nothing_to_talk_to_fails_at_once(sock_dir: Path, make: str, error: str) -> None:
    path = sock_dir / "s"
    if make == "closed socket":
        with socket.socket(socket.AF_UNIX) as gone:
            gone.bind(str(path))
    elif make == "fifo":
        os.mkfifo(path)
    elif make == "regular file":
        path.write_bytes(b"")
    elif make == "directory":
        path.mkdir()
    result, elapsed = timed_drive([unix(path)])
    assert not result.ok and result.detail == f"{path}: {error}"
    assert elapsed < TIMEOUT


@pytest.mark.parametrize("reply", [answer(b"X"), answer(b"\0"), hang_up])
def test_anything_but_s_or_n_fails(
    sock_dir: Path, servers: Callable[..., Server], reply: Reply
) -> None:
    server = servers(socket.AF_UNIX, str(sock_dir / "s"), reply)
    result, elapsed = timed_drive([server.endpoint])
    assert not result.ok and "unexpected answer" in result.detail
    assert elapsed < TIMEOUT + MARGIN


def test_a_too_long_unix_path_fails_at_once(sock_dir: Path) -> None:
    result, _ = timed_drive([unix(sock_dir / ("x" * 200))])
    assert not result.ok and "too long" in result.detail


def test_tcp_answer_and_refusal(servers: Callable[..., Server]) -> None:
    server = servers(socket.AF_INET, ("127.0.0.1", 0), answer(b"N"))
    result, _ = timed_drive([server.endpoint])
    assert result.ok and result.endpoint == server.endpoint
    port = server.sock.getsockname()[1]
    server.close()
    refused, elapsed = timed_drive([Endpoint(socket.AF_INET, ("127.0.0.1", port))])
    assert not refused.ok and refused.detail == f"127.0.0.1:{port}: Connection refused"
    assert elapsed < TIMEOUT


def test_a_name_is_never_resolved() -> None:
    result, elapsed = timed_drive([Endpoint(socket.AF_INET, ("localhost", 9))])
    assert not result.ok and result.detail == "localhost:9: not a numeric address"
    assert elapsed < TIMEOUT


def test_no_endpoint_at_all() -> None:
    result, _ = timed_drive([])
    assert not result.ok and result.detail == "no endpoint to probe"


# -- several endpoints ---------------------------------------------------------------


def test_the_next_endpoint_is_tried_after_a_failure(
    sock_dir: Path, servers: Callable[..., Server]
) -> None:
    tcp = servers(socket.AF_INET, ("127.0.0.1", 0), answer(b"N"))
    result, _ = timed_drive([unix(sock_dir / "missing"), tcp.endpoint])
    assert result.ok and result.endpoint == tcp.endpoint


def test_the_first_answer_wins(sock_dir: Path, servers: Callable[..., Server]) -> None:
    first = servers(socket.AF_UNIX, str(sock_dir / "s"), answer(b"N"))
    second = servers(socket.AF_INET, ("127.0.0.1", 0), answer(b"N"))
    result, _ = timed_drive([first.endpoint, second.endpoint])
    assert result.endpoint == first.endpoint and second.accepted == 0


def test_the_last_failure_is_the_detail(sock_dir: Path) -> None:
    result, _ = timed_drive([unix(sock_dir / "a"), unix(sock_dir / "b")])
    assert result.detail == f"{sock_dir / 'b'}: No such file or directory"


def test_the_timeout_bounds_the_whole_probe(sock_dir: Path, servers: Callable[..., Server]) -> None:
    """Two silent endpoints: the probe ends at its one deadline, not one per endpoint."""
    first = servers(socket.AF_UNIX, str(sock_dir / "s"), silent)
    second = servers(socket.AF_UNIX, str(sock_dir / "t"), silent)
    result, elapsed = timed_drive([first.endpoint, second.endpoint], timeout=1.0)
    assert not result.ok and result.detail.startswith(f"no answer from {first.endpoint}")
    assert 1.0 <= elapsed < 1.0 + MARGIN and second.accepted == 0


# -- the interface a poll loop relies on ----------------------------------------------


def test_a_probe_over_at_once_still_wakes_its_poll_loop(sock_dir: Path) -> None:
    """Every endpoint failed in the constructor: the fd is open and ready, not -1."""
    probe = SslProbe([unix(sock_dir / "missing")], TIMEOUT)
    try:
        poller = select.poll()
        poller.register(probe.fileno(), probe.events())
        assert poller.poll(0), "a finished probe must be ready at once"
        result = probe.advance(time.monotonic())
        assert result is not None and not result.ok
    finally:
        probe.close()
    assert probe.fileno() == -1


def test_expire_waits_for_the_deadline_and_advance_never_waits(
    sock_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(socket.AF_UNIX, str(sock_dir / "s"), silent)
    probe = SslProbe([server.endpoint], TIMEOUT)
    try:
        for _ in range(5):  # called when nothing is ready
            now = time.monotonic()
            assert probe.expire(now) is None
            assert probe.advance(now) is None
            assert time.monotonic() - now < CALL_BOUND
        assert probe.events() in (select.POLLIN, select.POLLOUT)
        late = probe.expire(probe.deadline)
        assert late is not None and not late.ok and late.latency == pytest.approx(TIMEOUT)
        assert probe.advance(probe.deadline + 1) == late
    finally:
        probe.close()


# -- probe_once and listening: the one-shot callers -----------------------------------


def settings_for(sock_dir: Path, port: int, listen: str = "") -> PgpoolSettings:
    return PgpoolSettings(
        path="", found=True, work_dir=str(sock_dir), port=port, pcp_port=9898,
        listen_addresses=listen, socket_dir=str(sock_dir), pid_file="", num_backends=1,
    )  # fmt: skip


def test_probe_once_and_listening_find_the_answering_socket(
    sock_dir: Path, servers: Callable[..., Server]
) -> None:
    server = servers(socket.AF_UNIX, str(sock_dir / ".s.PGSQL.9999"), answer(b"N"))
    settings = settings_for(sock_dir, 9999, listen="localhost")
    result = probe_once(settings, TIMEOUT, with_query=False)
    assert result.ok and result.endpoint == server.endpoint
    assert pgpool_process.listening(settings, TIMEOUT) == server.endpoint


def test_listening_means_answering_not_connecting(
    sock_dir: Path, servers: Callable[..., Server]
) -> None:
    """A backlog that takes connections is not a pgpool that serves."""
    servers(socket.AF_UNIX, str(sock_dir / ".s.PGSQL.9999"))
    settings = settings_for(sock_dir, 9999, listen="192.0.2.1.invalid")  # no TCP endpoint
    started = time.monotonic()
    assert pgpool_process.listening(settings, TIMEOUT) is None
    assert pgpool_process.wait_until_listening(settings, 1.0) is None
    assert time.monotonic() - started < TIMEOUT + 1.0 + 2 * MARGIN


def test_probe_once_runs_no_query_after_a_failed_probe(sock_dir: Path) -> None:
    result = probe_once(settings_for(sock_dir, 9999, listen="x"), TIMEOUT, with_query=True)
    assert not result.ok and "No such file or directory" in result.detail


def test_probe_once_with_query_stays_within_its_timeout(
    sock_dir: Path, servers: Callable[..., Server]
) -> None:
    """An SSLRequest answered by something that is no PostgreSQL server: SELECT 1 fails."""
    servers(socket.AF_UNIX, str(sock_dir / ".s.PGSQL.9999"), answer(b"N"))
    started = time.monotonic()
    result = probe_once(settings_for(sock_dir, 9999, listen="x"), 1.0, with_query=True)
    assert not result.ok and ("SELECT 1" in result.detail or "psql" in result.detail)
    assert time.monotonic() - started < 1.0 + MARGIN
