"""Debian's real prometheus-node-exporter, started for one test and stopped by its PID.

The guard's metrics are only worth something if node_exporter's textfile collector
reads them the way production does, so the tests scrape the real binary rather
than parse the file themselves. `running_node_exporter(directory)` starts it on
127.0.0.1 (a free port; loopback only) with nothing but the textfile collector,
optionally as another user (Debian runs it as `prometheus`), waits until it
answers, bounded in count and time, yields a Scraper, and stops it by PID.
"""

import contextlib
import http.client
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

BINARY = "/usr/bin/prometheus-node-exporter"
START_BOUND = 10.0  # seconds for node_exporter to answer its first scrape
POLL = 0.05  # seconds between two tries
STOP_BOUND = 10.0
HTTP_TIMEOUT = 5.0
BIND_ATTEMPTS = 3  # another process may take the free port before node_exporter binds it

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scraper:
    """GET /metrics of one running node_exporter."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], log_path: str) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.process = process
        self.log_path = log_path

    def text(self) -> str:
        return _get(self.url)

    def scrape(self) -> Series:
        """Every sample as {(name, frozenset(labels.items())): value}."""
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(self.text())
            for sample in family.samples
        }

    def __call__(self) -> Series:
        return self.scrape()

    def log(self) -> str:
        """What node_exporter logged so far (its errors say why a file was skipped)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
        body: bytes = response.read()
    return body.decode("utf-8")


def _answers(url: str) -> bool:
    try:
        _get(url)
    except (OSError, http.client.HTTPException):  # urllib's URLError is an OSError
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to our PID, SIGKILL to it if it does not exit in time; never by name."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_BOUND)


def _start(directory: str, user: str | None, log: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start node_exporter on a free port; retried if it lost the port to someone else."""
    prefix = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups"] if user else []
    for _attempt in range(BIND_ATTEMPTS):
        port = free_port()
        command = [
            *prefix, BINARY, f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults", "--collector.textfile",
            f"--collector.textfile.directory={directory}", "--web.disable-exporter-metrics",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + START_BOUND
        for _try in range(int(START_BOUND / POLL) + 1):
            if process.poll() is not None or time.monotonic() > deadline:
                break
            if _answers(f"http://127.0.0.1:{port}/metrics"):
                return process, port
            time.sleep(POLL)
        _stop(process)
    raise RuntimeError(f"{BINARY} did not answer within {START_BOUND} s ({BIND_ATTEMPTS} tries)")


@contextlib.contextmanager
def running_node_exporter(directory: str, user: str | None = None) -> Iterator[Scraper]:
    """node_exporter reading `directory`'s *.prom files, as `user` (root if None)."""
    with tempfile.NamedTemporaryFile(prefix="pah-node-exporter-", suffix=".log") as log:
        process, port = _start(directory, user, log.fileno())
        try:
            yield Scraper(port, process, log.name)
        finally:
            _stop(process)
