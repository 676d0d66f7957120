"""The three balancers: systemd-nspawn containers (real systemd) joined to lab namespaces,
each running a routing daemon (FRR, or BIRD on bal3 in the BGP profile: lab/profiles.py),
Debian's pgpool2 and the anycast hook installed from the .deb.

`Wiring` decides which program pgpool and the unit call: the packaged hook in its guarded
wiring (pgpool without capabilities, pgpool-anycast-hook-guard.service owning the address;
the lab's default), the packaged hook in its standalone wiring, or
bench/reference/manage-reference.sh wired the way the article wires manage.sh.
`Follow` decides what the hook's wirings put in the follow command
(follow_primary_command; follow_master_command on pgpool 4.1): nothing (the
recommended wiring: pgpool then detaches no standby when it finds a new primary), the
old recommendation `del %d %P` (every standby stays detached after a promotion), or the
user's own follow script (docs/examples/follow-primary.sh), which re-points and
re-attaches the standbys and ends with the hook.

bal3 runs pgpool 4.1.4 from Debian 11 (lab/pgpool41.py), installed over Debian 12's
4.3.5 when its container is configured, so that every test also meets the oldest
pgpool the hook supports. pgpool_conf() renders the same settings for both, under
4.1's names where they differ.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import frr, measure, netns, profiles, state
from lab.hosts import (
    ANYCAST,
    ANYCAST6_PREFIX,
    ANYCAST_PREFIX,
    ANYCAST_PREFIXES,
    BACKENDS,
    PGPOOL_PORT,
    POSTGRES_PORT,
    Host,
)
from testbed import container as testbed_container
from testbed.container import Container

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).with_name("templates")
REFERENCE_SCRIPT = REPO / "bench/reference/manage-reference.sh"
DROP_IN_DIR = "/etc/systemd/system/pgpool2.service.d"
HOOK_DROP_IN = "/usr/share/pgpool-anycast-hook/pgpool2.service.d/pgpool-anycast-hook.conf"
GUARDED_DROP_IN = (
    "/usr/share/pgpool-anycast-hook/pgpool2.service.d/pgpool-anycast-hook-guarded.conf"
)
GUARD_UNIT = "pgpool-anycast-hook-guard.service"
# mode = "guarded", and the lab's guard settings (see lab/README.md).
GUARDED_TOML = "/etc/pgpool-anycast-hook/conf.d/40-lab-guarded.toml"
HOOK = "/usr/bin/pgpool-anycast-hook"
MANAGE_SH = "/etc/pgpool2/manage.sh"
STATUS_FILE = "/var/log/postgresql/pgpool_status"
PCP_USER, PCP_PASSWORD = "pcpadmin", "lab"
STOP_TIMEOUT = 30.0
POLICY_RC_D = "/usr/sbin/policy-rc.d"


# The user's follow script: the shipped example, run with the lab's PCP user. It
# re-points standbys over SQL, so it needs nothing from the backends' hosts.
FOLLOW_EXAMPLE = REPO / "docs/examples/follow-primary.sh"
FOLLOW_SCRIPT = "/etc/pgpool2/follow-primary.sh"
FOLLOW_ARGS = "%d %h %p %m %H %r %P"
FOLLOW_SETTINGS = f"PCP_USER={PCP_USER} REPLICATION_OPTIONS=user=postgres"
POSTGRES_PCPPASS = "/var/lib/postgresql/.pcppass"  # the follow script runs as postgres
# Lab-only (lab/README.md): the default, 300 s, would stall pcp_attach_node.
SEARCH_PRIMARY_NODE_TIMEOUT = 3
# Balancers that run pgpool 4.1 (the .debs of lab/pgpool41.py); the others run the
# root's pgpool, 4.3.
PGPOOL_41 = frozenset({"bal3"})
PGPOOL_VERSION = re.compile(r"pgpool-II version ([0-9][0-9.]*)")


class Follow(enum.Enum):
    """The follow command in the hook's wirings."""

    NONE = "none"  # the recommended wiring: no follow command at all
    HOOK_DEL = "hook del"  # the old recommendation: pgpool detaches every standby
    SCRIPT = "script"  # the user's follow script, which calls the hook last


class Wiring(enum.Enum):
    GUARD = "guard"  # the guarded wiring: pgpool2.service has no capability
    HOOK = "hook"  # the standalone wiring: CAP_NET_ADMIN on pgpool2.service
    REFERENCE = "manage.sh"

    def commands(self, follow: Follow = Follow.NONE) -> dict[str, str]:
        """pgpool.conf's lines: the hook's recommended ones, or the article's for manage.sh."""
        if self in (Wiring.GUARD, Wiring.HOOK):
            follow_command = {
                Follow.NONE: "",
                Follow.HOOK_DEL: f"{HOOK} del %d %P",
                Follow.SCRIPT: f"{FOLLOW_SETTINGS} {FOLLOW_SCRIPT} {FOLLOW_ARGS}",
            }[follow]
            return {
                "failover_command": f"{HOOK} del %d %P",
                "failback_command": f"{HOOK} add %d",
                "follow_command": follow_command,
            }
        return {
            "failover_command": f"{MANAGE_SH} del %d",
            "failback_command": f"{MANAGE_SH} add %d",
            "follow_command": f"{MANAGE_SH} del %d",
        }


def is_41(version: str) -> bool:
    return version.startswith("4.1.")


def follow_setting(version: str) -> str:
    """The follow command's name: 4.2 renamed follow_master_command."""
    return "follow_master_command" if is_41(version) else "follow_primary_command"


def clustering_mode(version: str) -> str:
    """Streaming replication: 4.2 replaced master_slave_mode by backend_clustering_mode
    (each version ignores the other's names and would run in raw mode)."""
    if is_41(version):
        return "master_slave_mode = on\nmaster_slave_sub_mode = 'stream'"
    return "backend_clustering_mode = 'streaming_replication'"


def pgpool_conf(
    wiring: Wiring,
    version: str,
    follow: Follow = Follow.NONE,
    search_primary_node_timeout: int = SEARCH_PRIMARY_NODE_TIMEOUT,
) -> str:
    """The lab's pgpool.conf for a balancer running pgpool `version`."""
    backend = (TEMPLATES / "pgpool-backend.conf").read_text()
    backends = "\n".join(
        backend.format(index=i, host=pg.base_ip, port=POSTGRES_PORT, name=pg.name)
        for i, pg in enumerate(BACKENDS)
    )
    return (
        (TEMPLATES / "pgpool.conf")
        .read_text()
        .format(
            clustering_mode=clustering_mode(version),
            follow_setting=follow_setting(version),
            pgpool_port=PGPOOL_PORT,
            backends=backends,
            search_primary_node_timeout=search_primary_node_timeout,
            **wiring.commands(follow),
        )
    )


class Balancer:
    """One balancer: its namespace plan, its container (booted or attached), and the
    pgpool version it runs ("" until configure() has checked it)."""

    def __init__(self, host: Host, box: Container, pgpool_version: str = "") -> None:
        self.host = host
        self.box = box
        self.pgpool_version = pgpool_version

    @property
    def name(self) -> str:
        return self.host.name

    def run(
        self, cmd: list[str], check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return self.box.run(cmd, check=check, timeout=timeout)

    # -- setup -----------------------------------------------------------------

    def configure(
        self, deb: Path, wiring: Wiring, pgpool_debs: list[Path], profile: profiles.Profile
    ) -> None:
        """The profile's routing daemon, pgpool and the hook inside a freshly booted
        container; pgpool started.
        On a balancer of PGPOOL_41, `pgpool_debs` (pgpool 4.1) replace the root's pgpool
        first; the version pgpool reports is checked and recorded in the lab's state."""
        box = self.box
        box.write_file("/etc/hostname", self.host.netns + "\n")
        box.run(["hostname", self.host.netns])  # the journal then names the balancer
        if self.name in PGPOOL_41:
            self.install_debs(pgpool_debs)
        self.pgpool_version = self.installed_pgpool_version()
        if (self.name in PGPOOL_41) != is_41(self.pgpool_version):
            raise RuntimeError(f"{self.name}: runs pgpool {self.pgpool_version}, not as planned")
        with state.updating() as current:
            for record in current.containers:
                if record.name == self.host.netns:
                    record.pgpool = self.pgpool_version
        # pgpool2.service Wants= postgresql.service; no local PostgreSQL belongs here.
        box.run(["systemctl", "mask", "--now", "postgresql.service"])
        self.set_profile(profile)
        box.write_file("/etc/pgpool2/pcp.conf", f"{PCP_USER}:{md5_hex(PCP_PASSWORD)}\n", 0o640)
        box.run(["chown", "root:postgres", "/etc/pgpool2/pcp.conf"])
        box.write_file("/root/.pcppass", f"*:9898:{PCP_USER}:{PCP_PASSWORD}\n", 0o600)
        box.copy_in(deb, "/tmp/" + deb.name, 0o644)
        box.run(["dpkg", "-i", "/tmp/" + deb.name], timeout=120)
        # Both anycast addresses in every profile: the hook's configuration never
        # depends on the routing daemon (the OSPF profile announces the /32 only).
        addresses = ", ".join(f'"{prefix}"' for prefix in ANYCAST_PREFIXES)
        box.write_file(
            "/etc/pgpool-anycast-hook/conf.d/50-lab.toml", f"addresses = [{addresses}]\n"
        )
        box.copy_in(REFERENCE_SCRIPT, MANAGE_SH, 0o755)
        self.rewire(wiring, start=True)

    def set_profile(self, profile: profiles.Profile) -> None:
        """The routing daemon and configuration of `profile` (lab/profiles.py)."""
        profiles.configure_balancer(self.box, self.host, profile)

    def install_debs(self, debs: list[Path]) -> None:
        """dpkg -i over the root's pgpool (a downgrade, in the container's overlay only).
        A policy-rc.d keeps the packages' scripts from restarting pgpool2 meanwhile."""
        self.stop_pgpool()
        self.box.write_file(POLICY_RC_D, "#!/bin/sh\nexit 101\n", 0o755)
        inside = ["/tmp/" + deb.name for deb in debs]
        for deb, path in zip(debs, inside, strict=True):
            self.box.copy_in(deb, path, 0o644)
        self.run(["dpkg", "-i", "--force-confdef", "--force-confold", *inside], timeout=120)
        self.run(["rm", "-f", POLICY_RC_D, *inside])

    def installed_pgpool_version(self) -> str:
        """From `pgpool --version`: "4.1.4", "4.3.5", ..."""
        proc = self.run(["pgpool", "--version"])
        found = PGPOOL_VERSION.search(proc.stdout + proc.stderr)
        if found is None:
            raise RuntimeError(f"{self.name}: no version in {proc.stdout + proc.stderr!r}")
        return found.group(1)

    def rewire(self, wiring: Wiring, start: bool = True) -> None:
        """Stop pgpool, switch drop-in and pgpool.conf commands to `wiring`, start again."""
        box = self.box
        self.stop_pgpool()
        box.run(["systemctl", "stop", GUARD_UNIT], timeout=60)
        box.run(["rm", "-rf", DROP_IN_DIR, GUARDED_TOML])
        box.run(["mkdir", "-p", DROP_IN_DIR])
        box.copy_in(TEMPLATES / "pgpool2-lab.conf", DROP_IN_DIR + "/00-lab.conf", 0o644)
        if wiring is Wiring.GUARD:
            box.copy_in(TEMPLATES / "lab-guarded.toml", GUARDED_TOML, 0o644)
            box.run(["ln", "-s", GUARDED_DROP_IN, DROP_IN_DIR + "/"])
        elif wiring is Wiring.HOOK:
            box.run(["ln", "-s", HOOK_DROP_IN, DROP_IN_DIR + "/"])
        else:
            box.copy_in(TEMPLATES / "manage-reference.conf", DROP_IN_DIR + "/manage.conf", 0o644)
        box.write_file("/etc/pgpool2/pgpool.conf", self.pgpool_conf(wiring), 0o640)
        box.run(["chown", "root:postgres", "/etc/pgpool2/pgpool.conf"])
        box.run(["systemctl", "daemon-reload"])
        if wiring is Wiring.GUARD:
            box.run([HOOK, "check-config"])  # root refreshes the configuration cache
        # Every wiring removes the address when pgpool stops; make sure nothing is left.
        for prefix in ANYCAST_PREFIXES:
            box.run(["ip", "addr", "del", prefix, "dev", "lo"], check=False)
        if start:
            self.start_pgpool()

    # -- pgpool ----------------------------------------------------------------

    def start_pgpool(self) -> None:
        self.run(["systemctl", "reset-failed", "pgpool2"], check=False)
        self.run(["systemctl", "start", "pgpool2"], timeout=100)

    def stop_pgpool(self) -> None:
        self.run(["systemctl", "stop", "pgpool2"], timeout=100)

    def restart_pgpool(self) -> None:
        self.run(["systemctl", "reset-failed", "pgpool2"], check=False)
        self.run(["systemctl", "restart", "pgpool2"], timeout=100)

    def pgpool_main_pid(self) -> int:
        """MainPID of pgpool2.service, as seen inside the container (0 if not running)."""
        out = self.run(["systemctl", "show", "-p", "MainPID", "--value", "pgpool2"]).stdout
        return int(out.strip() or 0)

    def kill_pgpool(self) -> float:
        """kill -9 the pgpool main process (a crash); returns time.monotonic() of the kill.

        The signal is sent from here to the host's view of the PID, so the returned
        instant is the kill itself, not the start of a command inside the container.
        """
        return self.signal_pgpool(signal.SIGKILL)

    def unit_state(self, unit: str = "pgpool2") -> str:
        return self.run(["systemctl", "is-active", unit], check=False).stdout.strip()

    def guard_main_pid(self) -> int:
        """MainPID of the guard's unit inside the container (0 if not running)."""
        out = self.run(["systemctl", "show", "-p", "MainPID", "--value", GUARD_UNIT]).stdout
        return int(out.strip() or 0)

    def signal_guard(self, signum: int) -> float:
        """Send `signum` to the guard from the host; returns time.monotonic() of the send."""
        return self._signal_main(GUARD_UNIT, self.guard_main_pid(), signum)

    def signal_pgpool(self, signum: int) -> float:
        """Send `signum` to pgpool's main process from the host; returns when it was sent."""
        return self._signal_main("pgpool2", self.pgpool_main_pid(), signum)

    def _signal_main(self, unit: str, inside: int, signum: int) -> float:
        if inside <= 0:
            raise RuntimeError(f"{self.name}: {unit} is not running")
        host_pid = host_pid_of(self.box.pid1, inside)
        sent_at = time.monotonic()
        os.kill(host_pid, signum)
        return sent_at

    def pgpool_host_pids(self) -> list[int]:
        """Host PIDs of every pgpool process of this container: main and children.

        Found through the host's /proc: the container's PID namespace and the name
        "pgpool" (pgpool's children keep it; their titles are in cmdline only).
        """
        return processes_named(self.box.pid1, "pgpool")

    def signal_all_pgpool(self, signum: int) -> float:
        """Send `signum` to every pgpool process of the container; returns when it was sent."""
        pids = self.pgpool_host_pids()
        if not pids:
            raise RuntimeError(f"{self.name}: no pgpool process")
        sent_at = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # a child that just exited
                os.kill(pid, signum)
        return sent_at

    def pcp(self, tool: str, node_id: int, check: bool = True) -> str:
        """Run a pcp_* tool for one backend over pgpool's PCP socket (password from .pcppass)."""
        command = [tool, "-h", "/var/run/postgresql", "-p", "9898", "-U", PCP_USER, "-w"]
        return self.run([*command, "-n", str(node_id)], check=check).stdout.strip()

    def attach_node(self, node_id: int) -> str:
        return self.pcp("pcp_attach_node", node_id)

    def node_info(self, node_id: int) -> str:
        return self.pcp("pcp_node_info", node_id, check=False)

    def node_states(self) -> list[str]:
        """pgpool's view of each backend: "up", "waiting", "down" (pcp_node_info, one
        node at a time: 4.1's has no -a)."""
        infos = [self.node_info(i).split() for i in range(len(BACKENDS))]
        return [info[4] for info in infos if len(info) > 4]

    def pool_nodes(self) -> list[dict[str, str]]:
        """pgpool's SHOW POOL_NODES, one dict per backend by column name (psql inside the
        container, over pgpool's own socket); [] while pgpool does not answer."""
        proc = self.run(
            ["psql", "-X", "--csv", "-h", "/var/run/postgresql", "-p", str(PGPOOL_PORT),
             "-U", "postgres", "-d", "postgres", "-c", "show pool_nodes"],
            check=False, timeout=30,
        )  # fmt: skip
        if proc.returncode != 0:
            return []
        return list(csv.DictReader(proc.stdout.splitlines()))

    def node_roles(self) -> list[tuple[str, str]]:
        """(status, role) of each backend as pgpool shows them, by node id."""
        return [(n["status"], n["role"]) for n in self.pool_nodes()]

    def pgpool_setting(self, name: str) -> str:
        """`PGPOOL SHOW name` (the value pgpool runs with), "" if it does not answer."""
        proc = self.run(
            ["psql", "-X", "-A", "-t", "-h", "/var/run/postgresql", "-p", str(PGPOOL_PORT),
             "-U", "postgres", "-d", "postgres", "-c", f"pgpool show {name}"],
            check=False, timeout=30,
        )  # fmt: skip
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def pgpool_conf(
        self,
        wiring: Wiring,
        follow: Follow = Follow.NONE,
        search_primary_node_timeout: int = SEARCH_PRIMARY_NODE_TIMEOUT,
    ) -> str:
        """The lab's pgpool.conf for this balancer's pgpool version."""
        return pgpool_conf(wiring, self.pgpool_version, follow, search_primary_node_timeout)

    def follow_setting(self) -> str:
        """follow_primary_command, or follow_master_command on pgpool 4.1."""
        return follow_setting(self.pgpool_version)

    def set_pgpool_conf(
        self,
        wiring: Wiring,
        follow: Follow = Follow.NONE,
        search_primary_node_timeout: int = SEARCH_PRIMARY_NODE_TIMEOUT,
    ) -> bool:
        """Write pgpool.conf for `follow` and reload a running pgpool (both settings are
        reloadable); wait until pgpool runs with it. Returns whether anything changed."""
        if follow is Follow.SCRIPT:
            self.box.copy_in(FOLLOW_EXAMPLE, FOLLOW_SCRIPT, 0o755)
            self.box.write_file(POSTGRES_PCPPASS, f"*:9898:{PCP_USER}:{PCP_PASSWORD}\n", 0o600)
            self.run(["chown", "postgres:postgres", POSTGRES_PCPPASS])
        text = self.pgpool_conf(wiring, follow, search_primary_node_timeout)
        if self.run(["cat", "/etc/pgpool2/pgpool.conf"], check=False).stdout == text:
            return False
        self.box.write_file("/etc/pgpool2/pgpool.conf", text, 0o640)
        self.run(["chown", "root:postgres", "/etc/pgpool2/pgpool.conf"])
        if self.unit_state() != "active":
            return True
        self.run(["systemctl", "reload", "pgpool2"])
        wanted = wiring.commands(follow)["follow_command"]
        deadline = time.monotonic() + 20
        while not (
            self.pgpool_setting(self.follow_setting()) == wanted
            and self.pgpool_setting("search_primary_node_timeout").removesuffix("s")
            == str(search_primary_node_timeout)  # 4.3 shows "10s", 4.1 "10"
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: pgpool did not reload its new pgpool.conf")
            time.sleep(0.2)
        return True

    def has_lab_config(self, wiring: Wiring) -> bool:
        """pgpool.conf is the lab's own for `wiring`, and no test's hook settings are left."""
        conf = self.run(["cat", "/etc/pgpool2/pgpool.conf"], check=False).stdout
        if conf != self.pgpool_conf(wiring):
            return False
        return self.run(["test", "-e", HOOK_TEST_TOML], check=False).returncode != 0

    def use_lab_config(self, wiring: Wiring) -> None:
        """Back to the lab's own pgpool.conf (reloaded) and hook settings."""
        self.set_pgpool_conf(wiring)
        clear_hook_config(self)

    def reset_pgpool(self) -> None:
        """Back to nominal: stopped, pgpool_status removed (all backends up), started."""
        self.stop_pgpool()
        self.run(["rm", "-f", STATUS_FILE])
        self.start_pgpool()

    def answers(self, timeout: float = 3.0) -> bool:
        """A new connection to this pgpool's own address from the client gets an answer.

        Catches a pgpool whose children are all stuck, which systemd still calls active.
        """
        return measure.answers(self.host.base_ip, PGPOOL_PORT, timeout)

    def has_anycast(self) -> bool:
        return ANYCAST_PREFIX in self.box.addresses("lo")

    def has_anycast6(self) -> bool:
        return ANYCAST6_PREFIX in self.box.addresses("lo")

    def write_status_file(self, text: str) -> None:
        self.box.write_file(STATUS_FILE, text, 0o644)
        self.run(["chown", "postgres:postgres", STATUS_FILE])

    def journal_cursor(self) -> str:
        """A position in the container's journal, for `unit_log(after=...)`."""
        out = self.run(["journalctl", "-n", "0", "--show-cursor"], check=False).stdout
        return out.rsplit("-- cursor: ", 1)[-1].strip() if "-- cursor: " in out else ""

    def unit_log(self, after: str = "") -> list[str]:
        """pgpool2.service's journal lines (pgpool, systemd, the hook), after a cursor."""
        cmd = ["journalctl", "--no-pager", "-q", "-o", "short-precise", "-u", "pgpool2",
               "-u", GUARD_UNIT]  # fmt: skip
        if after:
            cmd.append(f"--after-cursor={after}")
        return self.run(cmd, check=False).stdout.splitlines()

    def hook_lines(self, after: str = "") -> list[str]:
        """What the hook (or manage-reference.sh) and systemd said about pgpool2, in order.

        The hook logs each run to syslog and to stderr (both land in the journal); each
        run is shown once.
        """
        shown: list[str] = []
        seen: set[str] = set()
        for line in self.unit_log(after):
            if "pgpool-anycast-hook[" in line or "manage-reference" in line:
                tail = line.split("]: ", 1)[-1].removeprefix("pgpool-anycast-hook: ")
                if tail in seen:
                    continue
                seen.add(tail)
                shown.append(line)
            elif "systemd[1]" in line and "obsolete" not in line:
                shown.append(line)
        return shown


def host_pid_of(pid1: int, inside: int) -> int:
    """The host PID of the process that has PID `inside` in the container of `pid1`."""
    pid_ns = os.readlink(f"/proc/{pid1}/ns/pid")
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            nspid = next(
                line for line in status.read_text().splitlines() if line.startswith("NSpid:")
            ).split()[1:]
            if int(nspid[-1]) == inside and os.readlink(status.parent / "ns/pid") == pid_ns:
                return int(nspid[0])
        except (OSError, StopIteration, ValueError):
            continue
    raise RuntimeError(f"no host PID for PID {inside} of container PID 1 {pid1}")


def processes_named(pid1: int, comm: str) -> list[int]:
    """Host PIDs of the processes called `comm` in the PID namespace of container `pid1`."""
    pid_ns = os.readlink(f"/proc/{pid1}/ns/pid")
    found: list[int] = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() != comm:
                continue
            if os.readlink(entry / "ns/pid") == pid_ns:
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return sorted(found)


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# -- containers across processes ------------------------------------------------
# `lab up` exits while the containers keep running; `lab down` (or a test session)
# later finds them through the state file. testbed.Container keeps its nspawn handle
# in memory only, so these helpers attach to, and stop, a container by its PIDs.


NSPAWN_SETTINGS_DIR = Path("/run/systemd/nspawn")


def settings_file(name: str) -> Path:
    return NSPAWN_SETTINGS_DIR / f"{name}.nspawn"


def boot(host: Host, root: Path) -> Balancer:
    # nspawn keeps CAP_NET_ADMIN only with --private-network, not when joining a
    # namespace; zebra and the hook need it. A trusted per-machine settings file adds it
    # (testbed.Container has no option for it yet; see the lab's report).
    NSPAWN_SETTINGS_DIR.mkdir(parents=True, exist_ok=True)
    settings_file(host.netns).write_text("[Exec]\nCapability=CAP_NET_ADMIN\n")
    box = Container(host.netns, root, netns=host.netns, stop_timeout=STOP_TIMEOUT)
    box.start()
    nspawn_pid = parent_pid(box.pid1)
    record = state.ContainerRecord(
        name=host.netns,
        nspawn=state.ProcessRecord(host.netns, nspawn_pid, state.start_ticks(nspawn_pid) or 0),
        pid1=box.pid1,
    )
    with state.updating() as current:
        current.containers = [c for c in current.containers if c.name != record.name]
        current.containers.append(record)
    return Balancer(host, box)


def attach(host: Host, root: Path, record: state.ContainerRecord) -> Balancer:
    """A Balancer for a container booted by an earlier process (commands only)."""
    box = Container(host.netns, root, netns=host.netns, stop_timeout=STOP_TIMEOUT)
    box._pid1 = record.pid1  # testbed has no public attach; see the lab's report
    return Balancer(host, box, record.pgpool)


def stop_recorded(record: state.ContainerRecord) -> None:
    """Orderly poweroff through nspawn's PID, bounded; then SIGKILL; then clean up."""
    if state.is_alive(record.nspawn):
        os.kill(record.nspawn.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while state.is_alive(record.nspawn) and time.monotonic() < deadline:
            time.sleep(0.1)
        if state.is_alive(record.nspawn) and parent_pid(record.pid1) == record.nspawn.pid:
            os.kill(record.pid1, signal.SIGKILL)
    remove_leftovers(record.name)


def container_cgroups(name: str) -> list[Path]:
    """The cgroups testbed.Container puts a container's nspawn into (one per hierarchy)."""
    return [
        mount / relative / f"pah-nspawn-{name}"
        for mount, relative in testbed_container.own_cgroup_hierarchies()
    ]


def remove_leftovers(name: str) -> None:
    """After a run that died at any point: end what is left in the container's cgroups
    (every process there belongs to it), then remove cgroups and nspawn's files."""
    deadline = time.monotonic() + 10
    while True:
        pids = {pid for cgroup in container_cgroups(name) for pid in cgroup_pids(cgroup)}
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for cgroup in container_cgroups(name):
        testbed_container.remove_cgroup_tree(cgroup)
    settings_file(name).unlink(missing_ok=True)
    propagate = testbed_container.PROPAGATE_DIR / name
    if propagate.exists():
        subprocess.run(["rm", "-rf", str(propagate)], check=False, timeout=30)


def cgroup_pids(cgroup: Path) -> set[int]:
    if not cgroup.exists():
        return set()
    found: set[int] = set()
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            found.update(int(p) for p in procs.read_text().split())
    return found


def parent_pid(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


# -- planned-stop orders (bench/drain_orders) -------------------------------------
# Three ways to stop pgpool on a hook-wired balancer for a planned stop and start.
# Each is set with two files of its own, a conf.d toml and a drop-in that sorts after
# the packaged one; clear_stop_order() removes both and any serving route left over.

STOP_ORDER_TOML = "/etc/pgpool-anycast-hook/conf.d/60-stop-order.toml"
STOP_ORDER_DROP_IN = DROP_IN_DIR + "/zz-stop-order.conf"
# An empty ExecStop= drops the packaged `drain`: systemd signals pgpool at once.
NO_DRAIN_DROP_IN = "[Service]\nExecStop=\n"
SERVING_PROTOCOL = "177"  # pgpool_anycast_hook.serving_routes.SERVING_PROTOCOL


class StopOrder(enum.Enum):
    STOP_THEN_WITHDRAW = "a. stop, then withdraw (manage.sh)"
    WITHDRAW_THEN_STOP = "b. withdraw, then stop"
    DRAIN = "c. drain, serving_route"


def set_stop_order(
    bal: Balancer, order: StopOrder, drain_seconds: float = 1.0, drain_timeout: float = 5.0
) -> None:
    """Configure `order` on a balancer wired with Wiring.HOOK; pgpool keeps running."""
    serving = order is StopOrder.DRAIN
    bal.box.write_file(
        STOP_ORDER_TOML,
        f"serving_route = {'true' if serving else 'false'}\n"
        f"drain_seconds = {drain_seconds:g}\ndrain_timeout = {drain_timeout:g}\n",
    )
    if serving:
        bal.run(["rm", "-f", STOP_ORDER_DROP_IN])
    else:
        bal.box.write_file(STOP_ORDER_DROP_IN, NO_DRAIN_DROP_IN)
    bal.run(["systemctl", "daemon-reload"])
    if serving:
        bal.run([HOOK, "reconcile"])  # adds the serving route beside the address
    else:
        remove_serving_route(bal)  # the hook leaves them alone with serving_route off


def clear_stop_order(bal: Balancer) -> None:
    """Back to the lab's own configuration (the packaged drop-in, no serving route)."""
    bal.run(["rm", "-f", STOP_ORDER_TOML, STOP_ORDER_DROP_IN])
    bal.run(["systemctl", "daemon-reload"])
    remove_serving_route(bal)


def stop_and_start(bal: Balancer, order: StopOrder) -> None:
    """One planned stop and start of pgpool, in `order` (set with set_stop_order)."""
    if order is StopOrder.DRAIN:
        bal.restart_pgpool()  # ExecStop= drain 0, then SIGINT, then ExecStopPost= del 0
        return
    if order is StopOrder.WITHDRAW_THEN_STOP:
        bal.run([HOOK, "del", "0"])
    bal.stop_pgpool()
    bal.start_pgpool()


def serving_route_text(bal: Balancer) -> str:
    """`ip route show table local proto 177` in the balancer's namespace."""
    return netns.ns_run(
        bal.host.netns, ["ip", "route", "show", "table", "local", "proto", SERVING_PROTOCOL]
    ).stdout.strip()


def has_serving_route(bal: Balancer) -> bool:
    return any(
        line.split()[:2] == ["local", ANYCAST] for line in serving_route_text(bal).splitlines()
    )


def remove_serving_route(bal: Balancer) -> None:
    if has_serving_route(bal):
        netns.ns_run(
            bal.host.netns,
            ["ip", "route", "del", "local", ANYCAST_PREFIX, "dev", "lo", "table", "local",
             "proto", SERVING_PROTOCOL],
        )  # fmt: skip


def zebra_route_text(bal: Balancer) -> str:
    """What FRR's zebra on the balancer holds for the anycast /32 (vtysh)."""
    return bal.run(["vtysh", "-c", f"show ip route {ANYCAST_PREFIX}"]).stdout.strip()


def zebra_route_protocols(bal: Balancer) -> list[str]:
    """The protocols of zebra's routes for the anycast /32: "connected", "ospf", ..."""
    out = bal.run(["vtysh", "-c", f"show ip route {ANYCAST_PREFIX} json"]).stdout
    return sorted(r["protocol"] for r in json.loads(out or "{}").get(ANYCAST_PREFIX, []))


@dataclass
class DrainFacts:
    """What FRR and the kernel held while the router's route lacked the victim (drain)."""

    router_hops: list[str]
    router_has_victim: bool
    serving_route: str  # `ip route show table local proto 177` on the victim
    has_serving_route: bool
    address_on_lo: bool
    zebra_protocols: list[str]  # of zebra's routes for the /32 on the victim
    zebra_text: str  # `vtysh -c 'show ip route 198.18.2.0/32'` on the victim
    unit_state: str  # "deactivating": ExecStop= (drain) still runs


def drain_facts(victim: Balancer) -> DrainFacts:
    """Taken while the router's route lacks `victim`, during its drain."""
    router_hops = frr.next_hops()
    return DrainFacts(
        router_hops=router_hops,
        router_has_victim=victim.host.ospf_ip in router_hops,
        serving_route=serving_route_text(victim),
        has_serving_route=has_serving_route(victim),
        address_on_lo=victim.has_anycast(),
        zebra_protocols=zebra_route_protocols(victim),
        zebra_text=zebra_route_text(victim),
        unit_state=victim.unit_state(),
    )


# -- the guard's settings in a test (guarded wiring) --------------------------------
# A test overrides lease, interval, serving_route, ... with one conf.d file of its own,
# which sorts after the lab's; clear_guard_settings() removes it. The guard re-reads its
# configuration on `systemctl reload` (SIGHUP); root refreshes the cache first.

GUARD_TEST_TOML = "/etc/pgpool-anycast-hook/conf.d/70-lab-test.toml"
GUARD_STATE_FILE = "/run/pgpool-anycast-hook/guard.json"


def guard_status(bal: Balancer) -> dict[str, object]:
    """The guard's guard.json (what `status` shows), or {} while there is none."""
    out = bal.run(["cat", GUARD_STATE_FILE], check=False).stdout
    try:
        data = json.loads(out)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def set_guard_settings(bal: Balancer, toml: str, lease: float) -> None:
    """Write the test's conf.d file, reload the guard, wait until it runs with `lease`."""
    bal.box.write_file(GUARD_TEST_TOML, toml)
    reload_guard(bal, lease)


def clear_guard_settings(bal: Balancer, lease: float) -> None:
    """Remove the test's conf.d file; the running guard (if any) goes back to `lease`."""
    bal.run(["rm", "-f", GUARD_TEST_TOML])
    if bal.unit_state(GUARD_UNIT) == "active":
        reload_guard(bal, lease)
    else:
        bal.run([HOOK, "check-config"])


def reload_guard(bal: Balancer, lease: float, timeout: float = 10.0) -> None:
    """Reload the guard; wait for its `event=reload` line and guard.json's `lease`."""
    bal.run([HOOK, "check-config"])  # root refreshes the configuration cache
    cursor = bal.journal_cursor()
    bal.run(["systemctl", "reload", GUARD_UNIT])
    deadline = time.monotonic() + timeout
    while not (
        any("event=reload" in line for line in bal.unit_log(cursor))
        and guard_status(bal).get("lease") == lease
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{bal.name}: the guard did not reload with lease = {lease:g}")
        time.sleep(0.2)


# -- the hook's settings in a test (either wiring) ------------------------------------
# Promotion tests set primary_node_id, announce_when, ... in a conf.d file of their own,
# which sorts after the lab's; clear_hook_config() removes it.

HOOK_TEST_TOML = "/etc/pgpool-anycast-hook/conf.d/60-test.toml"


def toml_text(settings: Mapping[str, str | int | float | bool]) -> str:
    """Top-level TOML keys, one a line (the few value types the tests use)."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value!r}")
    return "".join(line + "\n" for line in lines)


def set_hook_config(bal: Balancer, settings: Mapping[str, str | int | float | bool]) -> None:
    """Write the test's conf.d file; check it (root refreshes the configuration cache, and
    a key this version does not know fails here, loudly); reload a running guard."""
    bal.box.write_file(HOOK_TEST_TOML, toml_text(settings))
    apply_hook_config(bal)


def clear_hook_config(bal: Balancer) -> bool:
    """Remove the test's conf.d file, if any, and apply that. Returns whether there was one."""
    if bal.run(["test", "-e", HOOK_TEST_TOML], check=False).returncode != 0:
        return False
    bal.run(["rm", "-f", HOOK_TEST_TOML])
    apply_hook_config(bal)
    return True


def apply_hook_config(bal: Balancer, timeout: float = 10.0) -> None:
    """check-config as root, then `systemctl reload` of a running guard (SIGHUP), waiting
    for its `event=reload result=ok` line. The standalone hook reads it on its next run."""
    proc = bal.run([HOOK, "check-config"], check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{bal.name}: pgpool-anycast-hook check-config refused "
            f"{bal.run(['cat', HOOK_TEST_TOML], check=False).stdout!r}: "
            f"{(proc.stdout + proc.stderr).strip()}"
        )
    if bal.unit_state(GUARD_UNIT) != "active":
        return
    cursor = bal.journal_cursor()
    bal.run(["systemctl", "reload", GUARD_UNIT])
    deadline = time.monotonic() + timeout
    while not any("event=reload" in line and "result=ok" in line for line in bal.unit_log(cursor)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{bal.name}: the guard did not reload its configuration")
        time.sleep(0.2)
