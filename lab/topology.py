"""Bring the whole lab up and down. `up` is idempotent; `down` works after any failure.

Order of `up`: the hook's .deb and bal3's pgpool 4.1 .debs (lab/pgpool41.py), namespaces and
links, the router's FRR, PostgreSQL, then the three balancer containers in parallel; ready
when the router has one next hop per balancer (for the IPv6 anycast address too in the BGP
profile). A running lab in the other routing profile (lab/profiles.py) is reused: only the
routing daemons are reconfigured and restarted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from lab import balancers, fallback, frr, netns, pgpool41, postgres, profiles, state
from lab.balancers import Balancer, Follow, Wiring
from lab.hosts import ALL_NETNS, ANYCAST6_PREFIX, BACKENDS, BALANCERS, ROUTER2, SITE_B
from lab.profiles import Profile
from testbed import rootfs

REPO = Path(__file__).resolve().parent.parent
DEB_ENV = "PAH_DEB"  # the same override as tests/systemd
SUITE = "bookworm"
# Sources whose change makes dist/*.deb stale (the lab must run the checkout's hook).
DEB_SOURCES = ("pyproject.toml", "README.md", "pgpool_anycast_hook", "packaging", "conf.d", "docs")
CONVERGE_TIMEOUT = 60.0


def say(message: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Lab:
    """Handles to a running lab: the balancers by name, plus shortcuts used by tests."""

    def __init__(self, balancer_list: list[Balancer], wiring: Wiring, profile: Profile) -> None:
        self.balancers = {b.name: b for b in balancer_list}
        self.wiring = wiring
        self.profile = profile

    def all_next_hops(self) -> set[str]:
        """The router's next hops when all balancers announce: every balancer's address
        on br1, or only site A's in the two-site profile (site B's: site_b_next_hops)."""
        return {
            b.host.ospf_ip
            for b in self.balancers.values()
            if not (self.profile.two_sites and b.name in SITE_B)
        }

    def site_b_next_hops(self) -> set[str]:
        """router2's next hops when all balancers announce (two-site profile only): site
        B's balancers on br2."""
        if not self.profile.two_sites:
            return set()
        return {self.balancers[name].host.site_b_ip for name in SITE_B}

    def all_next_hops6(self) -> set[str]:
        """The router's next hops for the IPv6 anycast /128 when all balancers announce:
        their IPv6 addresses on br1 in the BGP profile, none in the OSPF profiles, and
        none in the manage.sh wiring (the article's script keeps one address, the /32)."""
        if not self.profile.announces_ipv6 or self.wiring is Wiring.REFERENCE:
            return set()
        return {b.host.ospf_ip6 for b in self.balancers.values()}

    def converge(self, timeout: float = CONVERGE_TIMEOUT) -> None:
        """Wait until the router has every balancer for both anycast addresses."""
        frr.wait_next_hops(self.all_next_hops(), timeout)
        frr.wait_next_hops(self.all_next_hops6(), timeout, ANYCAST6_PREFIX)
        if self.profile.two_sites:
            frr.wait_next_hops(self.site_b_next_hops(), timeout, router=ROUTER2)

    def is_nominal(self) -> bool:
        """Every backend runs in its starting role, every pgpool runs with the lab's own
        configuration and all backends attached, three hops."""
        if not all(postgres.is_running(pg) for pg in BACKENDS):
            return False
        if fallback.is_running():  # a test's last resort left behind
            return False
        if not postgres.is_nominal():
            return False
        if any(
            not is_healthy(b) or not b.has_lab_config(self.wiring) for b in self.balancers.values()
        ):
            return False
        if set(frr.next_hops(ANYCAST6_PREFIX)) != self.all_next_hops6():
            return False
        if self.profile.two_sites and set(frr.next_hops(router=ROUTER2)) != self.site_b_next_hops():
            return False
        return set(frr.next_hops()) == self.all_next_hops()

    def restore(self) -> None:
        """Undo what a test or the demo did: pg1's last resort stopped, the starting
        roles (rebuilt after a promotion), the lab's own pgpool.conf and hook settings,
        stopped parts started, backends reattached, the router reconverged. A pgpool
        that is unhealthy, runs a test's configuration or sees its backends rebuilt is
        stopped first (a planned stop: the guard owes no hold-down for it), reconfigured,
        then started afresh."""
        fallback.stop()
        bals = list(self.balancers.values())
        rebuild = not postgres.is_nominal()
        stale = [
            b for b in bals if rebuild or not is_healthy(b) or not b.has_lab_config(self.wiring)
        ]
        run_parallel([b.stop_pgpool for b in stale])
        if rebuild:
            postgres.rebuild_all()
        for pg in BACKENDS:
            if not postgres.is_running(pg):
                postgres.start(pg)
        postgres.wait_streaming(len(BACKENDS) - 1, 30.0)
        run_parallel([partial(b.use_lab_config, self.wiring) for b in stale])
        run_parallel([b.reset_pgpool for b in stale])
        self.converge()

    def set_follow(self, follow: Follow, search_primary_node_timeout: int) -> None:
        """pgpool.conf's follow command and search_primary_node_timeout on every
        balancer (a reload; restore() puts the lab's own back)."""
        run_parallel([
            partial(b.set_pgpool_conf, self.wiring, follow, search_primary_node_timeout)
            for b in self.balancers.values()
        ])  # fmt: skip

    def set_hook_config(self, settings: Mapping[str, str | int | float | bool]) -> None:
        """The hook's settings for a test on every balancer (conf.d/60-test.toml; the
        guard reloads; restore() removes it)."""
        run_parallel(
            [partial(balancers.set_hook_config, b, settings) for b in self.balancers.values()]
        )

    def rewire(self, wiring: Wiring) -> None:
        """Switch every balancer to `wiring` (stop, reconfigure, start), then converge."""
        run_parallel([partial(b.rewire, wiring) for b in self.balancers.values()])
        self.wiring = wiring
        with state.updating() as current:
            current.wiring = wiring.value
        self.converge()

    def set_profile(self, profile: Profile) -> None:
        """Switch the routing daemons of the router (router2 too, for two-site) and of
        each balancer whose routing differs to `profile`, in the running containers
        (pgpool and the guard go on), then converge."""
        say(f"switching the routing profile from {self.profile.value} to {profile.value}")
        started = time.monotonic()
        with state.updating() as current:
            current.ready = False  # a switch that fails half way: rebuilt, not reused
        frr.switch_router(profile)
        changed = [
            b for b in self.balancers.values() if profiles.differs(b.host, self.profile, profile)
        ]
        run_parallel([partial(b.set_profile, profile) for b in changed])
        self.profile = profile
        self.converge()
        with state.updating() as current:
            current.profile = profile.value
            current.ready = True
        say(f"routing profile {profile.value} converged in {time.monotonic() - started:.1f}s")


def is_healthy(bal: Balancer) -> bool:
    """pgpool runs, sees every backend attached, and answers a new connection."""
    if bal.unit_state() != "active":
        return False
    if any(s not in ("up", "waiting") for s in bal.node_states()):
        return False
    return bal.answers()


def up(wiring: Wiring = Wiring.GUARD, profile: Profile = Profile.OSPF) -> Lab:
    """Build the lab, or reuse the running one if every part is still alive."""
    started = time.monotonic()
    reused = attach_running()
    if reused is not None:
        say("lab already up; reusing it")
        try:
            if reused.profile is not profile:
                reused.set_profile(profile)
            if reused.wiring is not wiring:
                reused.rewire(wiring)
            elif not reused.is_nominal():
                say("restoring it to its starting state")
                reused.restore()
            return reused
        except (RuntimeError, TimeoutError, subprocess.SubprocessError) as error:
            say(f"cannot reuse it ({error}); building a new one")
    down(quiet=True)
    deb = hook_deb()
    pgpool_debs = pgpool41.ensure_debs()  # bal3's pgpool 4.1; fails loudly, never skips
    root = rootfs.ensure_root(SUITE)
    state.LAB_DIR.mkdir(parents=True, exist_ok=True)
    state.LAB_DIR.chmod(0o755)
    state.save(state.LabState(wiring=wiring.value, profile=profile.value))
    say("namespaces, bridges and links")
    netns.create_all()
    say(f"router: zebra, bfdd and {frr.ROUTING_DAEMON[profile]} (profile {profile.value})")
    frr.start_router(profile)
    say("PostgreSQL: primary pg1, replicas pg2 and pg3")
    postgres.setup_all()
    say("balancers: booting three systemd containers")
    booted: dict[str, Balancer] = {}

    def bring_up(host_index: int) -> None:
        host = BALANCERS[host_index]
        bal = balancers.boot(host, root)
        booted[host.name] = bal
        bal.configure(deb, wiring, pgpool_debs, profile)

    run_parallel([partial(bring_up, i) for i in range(len(BALANCERS))])
    lab = Lab([booted[b.name] for b in BALANCERS], wiring, profile)
    say("waiting for the router to learn the anycast route from all three")
    lab.converge()
    with state.updating() as current:
        current.ready = True
    say(f"lab up in {time.monotonic() - started:.1f}s")
    return lab


def attach_running() -> Lab | None:
    """The running lab from the state file, if all its processes and containers live."""
    current = state.load()
    if not current.ready or len(current.containers) != len(BALANCERS):
        return None
    if current.profile not in {p.value for p in Profile}:
        return None  # built before the routing profiles (no IPv6 plan): rebuild
    if not all(state.is_alive(p) for p in current.processes):
        return None
    if not all(netns.exists(name) for name in ALL_NETNS):
        return None  # built before a namespace was added to the plan (router2, client2)
    if not all(state.is_alive(c.nspawn) for c in current.containers):
        return None
    # A lab built before bal3 ran pgpool 4.1 (or one whose configure did not finish).
    planned_41 = {h.netns for h in BALANCERS if h.name in balancers.PGPOOL_41}
    if any((c.name in planned_41) != balancers.is_41(c.pgpool) for c in current.containers):
        return None
    root = rootfs.ensure_root(SUITE)
    records = {c.name: c for c in current.containers}
    found = [balancers.attach(h, root, records[h.netns]) for h in BALANCERS]
    return Lab(found, Wiring(current.wiring), Profile(current.profile))


def down(quiet: bool = False) -> None:
    """Stop containers and processes by recorded PID, then empty and delete namespaces."""
    current = state.load()
    if not quiet:
        say("tearing down")
    run_parallel([partial(balancers.stop_recorded, c) for c in current.containers])
    for record in current.processes:
        state.stop_process(record)
    # Anything still inside a lab namespace was started by the lab (the namespaces are
    # ours); a failed run may have left such processes without a state entry.
    for name in ALL_NETNS:
        for pid in netns.pids_in(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for host in BALANCERS:  # containers a failed `up` had not recorded yet
        balancers.remove_leftovers(host.netns)
    netns.delete_all()
    for directory in (
        postgres.PG_DIR,
        fallback.FALLBACK_DIR,
        *(i.directory for i in frr.INSTANCES),
    ):
        shutil.rmtree(directory, ignore_errors=True)
    state.STATE_FILE.unlink(missing_ok=True)


def hook_deb() -> Path:
    """The .deb built from this checkout: $PAH_HOOK_DEB, or dist/, rebuilt when stale."""
    override = os.environ.get(DEB_ENV)
    if override:
        return Path(override)
    built = sorted(glob.glob(str(REPO / "dist/pgpool-anycast-hook_*_all.deb")))
    newest_source = max(newest_mtime(REPO / s) for s in DEB_SOURCES)
    if built and Path(built[-1]).stat().st_mtime >= newest_source:
        return Path(built[-1])
    script = REPO / "packaging/build-deb.sh"
    say(f"building the hook's .deb with {script.relative_to(REPO)}")
    subprocess.run(
        ["bash", str(script)], cwd=REPO, check=True, timeout=900, stdin=subprocess.DEVNULL
    )
    built = sorted(glob.glob(str(REPO / "dist/pgpool-anycast-hook_*_all.deb")))
    if not built:
        raise RuntimeError(f"{script} left no dist/pgpool-anycast-hook_*_all.deb")
    return Path(built[-1])


def newest_mtime(path: Path) -> float:
    if not path.exists():
        return 0.0
    if path.is_file():
        return path.stat().st_mtime
    return max(
        (
            p.stat().st_mtime
            for p in path.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ),
        default=0.0,
    )


def run_parallel(tasks: list[Callable[[], object]]) -> None:
    """Run callables in threads; re-raise the first failure after all have finished."""
    errors: list[BaseException] = []

    def guarded(task: Callable[[], object]) -> None:
        try:
            task()
        except BaseException as error:  # re-raised below, after all threads end
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
