"""A booted systemd container (systemd-nspawn) for tests that need a real PID 1.

The host has no systemd and no D-Bus, so machinectl and `systemd-run --machine` cannot
work; commands run inside through `nsenter` into the container's PID 1. Usage:

    root = rootfs.ensure_root("bookworm")
    with Container("pah-t1", root) as box:            # own network namespace, only lo
        box.run(["systemctl", "start", "pgpool2"])
        print(box.addresses("lo"), box.journal("pgpool2"))

    with Container("pah-b1", root, netns="b1"):       # joins /run/netns/b1 (the lab)
        ...

Methods: run() (bounded, checked), command() (argv for a background Popen), copy_in(),
write_file(), journal(), journal_entries(), addresses(), stop(). Failures to boot or
stop raise ContainerError with the tail of the console log
(/var/lib/pgpool-anycast-hook-testbed/console/<name>.log).

The root is mounted read-only under a tmpfs overlay (`--volatile=overlay`): every boot
starts from the cached root, changes vanish at stop, and several containers can boot
the same root at once. Processes are ended by PID only, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

STATE_DIR = Path("/var/lib/pgpool-anycast-hook-testbed")
CONSOLE_DIR = STATE_DIR / "console"
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
MACHINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
INSIDE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
}


def addresses_from_json(text: str) -> list[str]:
    """`ip -j addr show` output as "address/prefixlen" strings."""
    links = json.loads(text or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link.get("addr_info", [])]


class ContainerError(RuntimeError):
    """The container did not boot, or did not stop, within its bound."""


class Container:
    """One `systemd-nspawn --boot` container; a context manager that boots and stops it.

    name: machine name and hostname; must be unique among running containers.
    root: a root directory, normally from `rootfs.ensure_root`.
    netns: None for a private network namespace (only `lo`), or the name of a namespace
        made with `ip netns add` (/run/netns/<netns>) to join it.
    capabilities: extra capabilities for the container (nspawn --capability), e.g.
        ("CAP_NET_ADMIN",), which nspawn grants by itself only with a private network.

    A container can outlive the process that booted it: `detach()` returns its PIDs,
    and `Container.attach(...)` in another process gives an object that runs commands
    in it and stops it.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        netns: str | None = None,
        *,
        boot_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        capabilities: tuple[str, ...] = (),
    ) -> None:
        if not MACHINE_NAME.fullmatch(name):
            raise ValueError(f"bad container name {name!r}: letters, digits, '-', '_', '.'")
        self.name = name
        self.root = Path(root)
        self.netns = netns
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.console_log = CONSOLE_DIR / f"{name}.log"
        self.capabilities = capabilities
        self._popen: subprocess.Popen[bytes] | None = None  # only in the booting process
        self._nspawn: Process | None = None
        self._pid1: int | None = None
        self._keep_console = False
        self._cgroups = [
            mount / relative / f"pah-nspawn-{name}" for mount, relative in own_cgroup_hierarchies()
        ]

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid1(self) -> int:
        """Host PID of the container's systemd (its PID 1)."""
        if self._pid1 is None:
            raise ContainerError(f"{self.name}: not running")
        return self._pid1

    def start(self) -> None:
        """Boot and wait until systemd reports running or degraded (bounded)."""
        if self._nspawn is not None:
            raise ContainerError(f"{self.name}: already started")
        if not self.root.is_dir():
            raise ContainerError(f"{self.name}: no root directory {self.root}")
        argv = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            "--console=read-only",
            "-M",
            self.name,
            "-D",
            str(self.root),
        ]
        if self.netns is None:
            argv.append("--private-network")
        else:
            path = Path("/run/netns") / self.netns
            if not path.exists():
                raise ContainerError(f"{self.name}: no network namespace {path}")
            argv.append(f"--network-namespace-path={path}")
        if self.capabilities:
            argv.append(f"--capability={','.join(self.capabilities)}")
        self._remove_leftovers()
        for cgroup in self._cgroups:
            cgroup.mkdir(parents=True, exist_ok=True)
        CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": INSIDE_ENV["PATH"],
            "LANG": "C.UTF-8",
            # The same pure cgroup v2 view for every suite; trixie's systemd 257 has
            # deprecated the v1 and hybrid layouts this host would otherwise hand down.
            "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
        }
        # A shell moves itself into our cgroups, then becomes nspawn (same PID), so that
        # nspawn's payload/ and supervisor/ cgroups land under ours, not at the root of
        # the host's trees (gotcha 3). No preexec_fn: callers may run threads.
        join = "".join(
            f"echo $$ > {shlex.quote(str(c / 'cgroup.procs'))} && " for c in self._cgroups
        )
        with self.console_log.open("wb") as console:
            self._popen = subprocess.Popen(
                ["sh", "-c", f'{join}exec "$@"', "sh", *argv],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._nspawn = Process.of(self._popen.pid)  # unreaped, so it is in /proc
        try:
            self._pid1 = self._wait_for_pid1()
            self._wait_until_booted()
        except BaseException:
            self._keep_console = True
            self.stop()
            raise

    def stop(self) -> None:
        """Orderly poweroff (SIGTERM to nspawn), bounded; then SIGKILL by PID; then clean up.

        Safe to call twice. Raises ContainerError if the orderly stop missed its bound, after
        killing and cleaning up, so a caller learns that something inside hung.
        """
        nspawn, self._nspawn = self._nspawn, None
        pid1, self._pid1 = self._pid1, None
        popen, self._popen = self._popen, None
        hung = ""
        if nspawn is not None and self._alive(nspawn, popen):
            nspawn.signal(signal.SIGTERM)
            if not self._wait_gone(nspawn, popen, self.stop_timeout):
                hung = f"{self.name}: no orderly stop within {self.stop_timeout:.0f}s"
                # SIGKILL to a PID namespace's PID 1 ends everything inside it.
                if pid1 is not None and is_child_of(pid1, nspawn.pid):
                    os.kill(pid1, signal.SIGKILL)
                nspawn.signal(signal.SIGKILL)
                self._wait_gone(nspawn, popen, 30)
        self._remove_leftovers()
        if hung:
            raise ContainerError(f"{hung}; console log: {self.console_log}")
        if nspawn is not None and not self._keep_console:
            self.console_log.unlink(missing_ok=True)  # kept only when something failed

    def detach(self) -> tuple[int, int]:
        """Leave the container running; return (nspawn PID, PID 1) for `attach`.

        After this, stop() and the context manager's exit do nothing here. The nspawn
        process is re-parented when this process exits; its console log stays where it is.
        """
        if self._nspawn is None or self._pid1 is None:
            raise ContainerError(f"{self.name}: not running")
        pids = (self._nspawn.pid, self._pid1)
        self._nspawn = self._pid1 = self._popen = None
        return pids

    @classmethod
    def attach(
        cls,
        name: str,
        root: Path,
        *,
        nspawn_pid: int,
        pid1: int,
        netns: str | None = None,
        stop_timeout: float = 30.0,
    ) -> Container:
        """A handle on a container booted (and detached) by another process.

        Checks that nspawn_pid is that container's systemd-nspawn and pid1 its PID 1, so
        that a stale record never makes us signal an unrelated process.
        """
        box = cls(name, root, netns, stop_timeout=stop_timeout)
        nspawn = Process.of(nspawn_pid)
        cmdline = nspawn.cmdline() if nspawn else []
        if nspawn is None or "systemd-nspawn" not in cmdline or name not in cmdline:
            raise ContainerError(f"{name}: PID {nspawn_pid} is not its systemd-nspawn")
        if pid1 not in children(nspawn_pid) or namespace_pid(pid1) != 1:
            raise ContainerError(f"{name}: PID {pid1} is not its PID 1")
        box._nspawn = nspawn
        box._pid1 = pid1
        return box

    @property
    def nspawn_pid(self) -> int:
        """Host PID of the systemd-nspawn process."""
        if self._nspawn is None:
            raise ContainerError(f"{self.name}: not running")
        return self._nspawn.pid

    def _alive(self, nspawn: Process, popen: subprocess.Popen[bytes] | None) -> bool:
        # Our own child must be reaped through Popen; another process's is gone from
        # /proc (or replaced) once it exits.
        return popen.poll() is None if popen is not None else nspawn.alive()

    def _wait_gone(
        self, nspawn: Process, popen: subprocess.Popen[bytes] | None, bound: float
    ) -> bool:
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            if not self._alive(nspawn, popen):
                return True
            time.sleep(0.05)
        return not self._alive(nspawn, popen)

    # -- inside the container ----------------------------------------------------

    def command(self, cmd: list[str]) -> list[str]:
        """The host argv that runs `cmd` inside (all namespaces of PID 1)."""
        return ["nsenter", "-t", str(self.pid1), "-a", "--", *cmd]

    def run(
        self,
        cmd: list[str],
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside, as root, capturing text output; bounded by `timeout`.

        On timeout the nsenter process group is killed by its PID and
        subprocess.TimeoutExpired propagates. With check=True a non-zero exit raises
        CalledProcessError whose message includes stdout and stderr.
        """
        proc = subprocess.Popen(
            self.command(cmd),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=INSIDE_ENV,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
            raise
        result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if check and result.returncode != 0:
            raise CommandFailed(self.name, result)
        return result

    def copy_in(self, src: Path | str, dst: str, mode: int | None = None) -> None:
        """Copy one host file to path `dst` inside (parents created; mode kept by default).

        The bytes go through a pipe rather than /proc/<pid>/root, so absolute symlinks
        inside the container are resolved inside it.
        """
        data = Path(src).read_bytes()
        file_mode = mode if mode is not None else Path(src).stat().st_mode & 0o7777
        script = 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"'
        proc = subprocess.run(
            self.command(["sh", "-c", script, "sh", dst, f"{file_mode:o}"]),
            input=data,
            capture_output=True,
            env=INSIDE_ENV,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise ContainerError(f"{self.name}: copy to {dst} failed: {proc.stderr!r}")

    def write_file(self, dst: str, text: str, mode: int = 0o644) -> None:
        """Write `text` to `dst` inside (parents created)."""
        script = 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"'
        self.run(["sh", "-c", script, "sh", dst, f"{mode:o}"], input=text)

    def journal(
        self,
        unit: str | None = None,
        *,
        output: str = "short-precise",
        matches: tuple[str, ...] = (),
    ) -> str:
        """The container's journal (of one unit, or with FIELD=value matches) as text."""
        cmd = ["journalctl", "--no-pager", "--quiet", "-o", output]
        if unit is not None:
            cmd += ["-u", unit]
        return self.run([*cmd, *matches], check=False).stdout

    def journal_entries(self, *matches: str) -> list[dict[str, str]]:
        """Journal entries matching FIELD=value terms, parsed from `journalctl -o json`."""
        text = self.journal(output="json", matches=matches)
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def addresses(self, ifname: str = "lo") -> list[str]:
        """Addresses on `ifname` inside, as "address/prefixlen" strings."""
        return addresses_from_json(self.run(["ip", "-j", "addr", "show", "dev", ifname]).stdout)

    # -- internals ---------------------------------------------------------------

    def _wait_for_pid1(self) -> int:
        """The container's systemd is the nspawn process's child with PID 1 in its namespace."""
        assert self._nspawn is not None and self._popen is not None
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise ContainerError(self._boot_failure("systemd-nspawn exited"))
            for pid in children(self._nspawn.pid):
                if namespace_pid(pid) == 1 and process_name(pid) == "systemd":
                    return pid
            time.sleep(0.05)
        raise ContainerError(self._boot_failure("no container PID 1"))

    def _wait_until_booted(self) -> None:
        """Poll `systemctl is-system-running`; its --wait fails when asked too early."""
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            if self._popen is None or self._popen.poll() is not None:
                raise ContainerError(self._boot_failure("systemd-nspawn exited"))
            try:
                state = self.run(
                    ["systemctl", "is-system-running"], check=False, timeout=10
                ).stdout.strip()
            except subprocess.TimeoutExpired:
                state = "(systemctl timed out)"
            if state in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise ContainerError(self._boot_failure(f"not booted; last state {state!r}"))

    def _boot_failure(self, what: str) -> str:
        tail = ""
        if self.console_log.exists():
            lines = self.console_log.read_text(errors="replace").splitlines()
            tail = "\n".join(lines[-30:])
        return f"{self.name}: {what} within {self.boot_timeout:.0f}s; console:\n{tail}"

    def _remove_leftovers(self) -> None:
        """Remove our cgroup directories (deepest first) and nspawn's propagate dir."""
        for cgroup in self._cgroups:
            remove_cgroup_tree(cgroup)
        shutil.rmtree(PROPAGATE_DIR / self.name, ignore_errors=True)


class CommandFailed(subprocess.CalledProcessError):
    """A command inside a container failed; str() shows its output, which pytest prints."""

    def __init__(self, container: str, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)
        self.container = container

    def __str__(self) -> str:
        return (
            f"[{self.container}] {' '.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"stdout: {self.stdout}\nstderr: {self.stderr}"
        )


class Process:
    """A PID plus its start time, so that a reused PID is never mistaken for it."""

    def __init__(self, pid: int, start_ticks: int) -> None:
        self.pid = pid
        self.start_ticks = start_ticks

    @classmethod
    def of(cls, pid: int) -> Process | None:
        ticks = start_ticks(pid)
        return cls(pid, ticks) if ticks is not None else None

    def alive(self) -> bool:
        """Still this process, and not a zombie."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[19]) == self.start_ticks

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def cmdline(self) -> list[str]:
        try:
            return Path(f"/proc/{self.pid}/cmdline").read_text().split("\0")
        except OSError:
            return []


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def own_cgroup_hierarchies() -> list[tuple[Path, Path]]:
    """(mount point, our cgroup path relative to it) for the hierarchies nspawn uses.

    Those are the cgroup v2 tree (pure or the hybrid `unified` mount) and the v1
    name=systemd tree when the host has one.
    """
    mounts: dict[str, Path] = {}
    with open("/proc/self/mounts") as handle:
        for line in handle:
            _, point, fstype, options = line.split()[:4]
            if fstype == "cgroup2":
                mounts.setdefault("", Path(point))
            elif fstype == "cgroup" and "name=systemd" in options.split(","):
                mounts.setdefault("name=systemd", Path(point))
    found: list[tuple[Path, Path]] = []
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            key = "" if hierarchy == "0" else controllers
            if key in mounts:
                found.append((mounts[key], Path(path.lstrip("/"))))
    return found


def remove_cgroup_tree(top: Path, timeout: float = 10.0) -> None:
    """rmdir a cgroup and its children, deepest first; retry while processes drain."""
    if not top.exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        try:
            for path in [*dirs, top]:
                path.rmdir()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise ContainerError(f"cannot remove cgroup {top}: {error}") from error
            time.sleep(0.1)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def is_child_of(pid: int, parent: int) -> bool:
    return pid in children(parent)


def namespace_pid(pid: int) -> int | None:
    """The PID that `pid` has in its own (innermost) PID namespace."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        return None
    return None


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
