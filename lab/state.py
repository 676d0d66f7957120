"""What the lab started, kept in a JSON file so that `down` works after any failure.

Processes are recorded with their start time from /proc, so a PID that was reused by an
unrelated process after ours exited is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

LAB_DIR = Path(os.environ.get("PAH_LAB_DIR", "/var/tmp/pgpool-anycast-hook-lab"))
STATE_FILE = LAB_DIR / "state.json"


@dataclass
class ProcessRecord:
    """A daemon the lab started by hand: which namespace, and how to recognise it again."""

    name: str
    pid: int
    start_ticks: int


@dataclass
class ContainerRecord:
    """A balancer container: the nspawn process (host side), the container's PID 1, and
    the pgpool version it runs ("4.3.5"; "" until the container is configured)."""

    name: str
    nspawn: ProcessRecord
    pid1: int
    pgpool: str = ""


@dataclass
class LabState:
    processes: list[ProcessRecord] = field(default_factory=list)
    containers: list[ContainerRecord] = field(default_factory=list)
    wiring: str = "guard"
    # "ospf", "bgp" or "two-site" (lab/profiles.py); "" in a state written before the
    # profiles, whose lab has no IPv6 and is not reused.
    profile: str = ""
    ready: bool = False


def load() -> LabState:
    try:
        raw = json.loads(STATE_FILE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return LabState()
    return LabState(
        processes=[ProcessRecord(**p) for p in raw.get("processes", [])],
        containers=[
            ContainerRecord(
                c["name"], ProcessRecord(**c["nspawn"]), c["pid1"], str(c.get("pgpool", ""))
            )
            for c in raw.get("containers", [])
        ],
        wiring=str(raw.get("wiring", "guard")),
        profile=str(raw.get("profile", "")),
        ready=bool(raw.get("ready", False)),
    )


def save(state: LabState) -> None:
    """Write atomically, under a unique temporary name: a crash mid-write must not lose
    the PIDs `down` needs, and parallel writers must not rename each other's file."""
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".state.", suffix=".partial", dir=LAB_DIR)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(state), indent=1))
        os.replace(partial, STATE_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


@contextlib.contextmanager
def updating() -> Iterator[LabState]:
    """Load, let the caller change, save: one writer at a time (balancers boot in parallel,
    and a lost update would leak a container that `down` then never stops)."""
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    with open(LAB_DIR / "state.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load()
        yield state
        save(state)


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if PID is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces; fields after it start past ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def record_process(name: str, pid: int) -> None:
    ticks = start_ticks(pid)
    if ticks is None:
        raise RuntimeError(f"{name} (pid {pid}) exited right after start")
    with updating() as state:
        state.processes = [p for p in state.processes if p.name != name]
        state.processes.append(ProcessRecord(name, pid, ticks))


def forget_process(name: str) -> None:
    with updating() as state:
        state.processes = [p for p in state.processes if p.name != name]


def stop_matching(wanted: Callable[[str], bool]) -> None:
    """Stop every recorded process whose name `wanted` accepts (by PID, stop_process),
    and forget it."""
    for record in load().processes:
        if wanted(record.name):
            stop_process(record)
            forget_process(record.name)


def is_alive(record: ProcessRecord) -> bool:
    return start_ticks(record.pid) == record.start_ticks


def stop_process(record: ProcessRecord, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only if it is still the same process."""
    if not is_alive(record):
        return
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_alive(record):
            return
        time.sleep(0.05)
    if is_alive(record):
        os.kill(record.pid, signal.SIGKILL)
