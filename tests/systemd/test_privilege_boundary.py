"""The privilege boundary under a real systemd: postgres can never steer a root run.

The hook runs as postgres with CAP_NET_ADMIN from pgpool2.service (and from an
administrator's own timer running `check`) and as root by hand.
Here, on Debian 12 and 13 with this checkout's .deb installed, configured and its
drop-in active (pgpool2.service started and stopped once, so that systemd has applied
StateDirectory= and friends as in production):

1. postgres plants symbolic links (to victims root made in /root and /etc) and FIFOs at
   every name the hook uses in every directory postgres can write; every command run
   as root leaves the victims as they were, never shows their content, and ends within
   its deadline plus a margin, with a documented exit code and no traceback.
2. No configuration source (config.toml, conf.d/, the compiled cache) is writable by
   postgres, the cache directory is root:root and not group/other-writable, and a
   forged cache or configuration written wherever postgres can write changes neither
   what root's `check-config` prints as `addresses` nor what a postgres+CAP_NET_ADMIN
   run adds.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.container import Container
from tests.systemd.test_pgpool_drop_in import ANYCAST, PgpoolUnit

pytestmark = pytest.mark.systemd

HOOK = "/usr/bin/pgpool-anycast-hook"
MAIN_CONFIG = "/etc/pgpool-anycast-hook/config.toml"
CONF_D = "/etc/pgpool-anycast-hook/conf.d"
CACHE_DIR = "/var/cache/pgpool-anycast-hook"
STATE_DIR = "/var/lib/pgpool-anycast-hook"
STATUS_DIR = "/var/log/postgresql"
RUN_DIR = "/var/run/postgresql"
FORGED = "198.51.100.7/32"  # an address root's configuration never lists
SECRET = "victim-secret-4711"
VICTIM_FILE = "/root/pah-victim.json"
VICTIM_ETC = "/etc/pah-victim.conf"
VICTIM_DIR = "/etc/pah-victim-dir"
DOCUMENTED = {0, 1, 70, 75, 77, 78}
MARGIN = 5.0
DEADLINE = 5.0  # the packaged default
DRAIN_EXTRA = 2.0 + 10.0  # drain_seconds + drain_timeout defaults
AS_POSTGRES = ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups"]
WITH_NET_ADMIN = ["--inh-caps", "+net_admin", "--ambient-caps", "+net_admin"]

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("add", "0"),
    ("del", "0"),
    ("clean", "0"),
    ("reconcile",),
    ("status",),
    ("status", "--json"),
    ("disable", "--reason", "t"),
    ("enable",),
    ("drain", "0"),
    ("check",),
    ("check-config",),
)
# Every name the hook uses in each directory postgres may be able to write.
NAMES = {
    STATE_DIR: ("lock", "hold", "check.json"),
    STATUS_DIR: ("pgpool_status",),
    RUN_DIR: ("pgpool.pid", ".s.PGSQL.9999"),
    CACHE_DIR: ("config%2Fetc%2Fpgpool-anycast-hook%2Fconfig.toml.marshal",),
    "/etc/pgpool-anycast-hook": ("config.toml",),
    CONF_D: ("50-test.toml", "99-forged.toml"),
}


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def unit(box: Container, suite_root: tuple[str, Path]) -> Iterator[PgpoolUnit]:
    """pgpool2.service prepared (drop-in active, address configured), started and stopped
    once so that systemd has set up the state and cache directories as in production."""
    pgpool = PgpoolUnit(box, suite_root[0])
    pgpool.prepare()
    pgpool.start()
    pgpool.stop()
    yield pgpool
    if pgpool.state()["ActiveState"] not in ("inactive", "failed"):
        pgpool.stop()


def sh(
    unit: PgpoolUnit, script: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return unit.box.run(["sh", "-c", script, "sh", *args], check=False, timeout=timeout)


def postgres_sh(unit: PgpoolUnit, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A shell as postgres with its groups and no capabilities: the planting user."""
    return unit.box.run([*AS_POSTGRES, "sh", "-c", script, "sh", *args], check=False)


def writable_by_postgres(unit: PgpoolUnit, paths: list[str]) -> list[str]:
    """Those of `paths` that postgres (with its groups) may write."""
    script = 'for p; do [ -e "$p" ] && [ -w "$p" ] && echo "$p"; done; true'
    return postgres_sh(unit, script, *paths).stdout.split()


def bound_for(args: tuple[str, ...]) -> float:
    return DEADLINE + (DRAIN_EXTRA if args[0] == "drain" else 0.0) + MARGIN


def run_root(unit: PgpoolUnit, args: tuple[str, ...]) -> tuple[int | None, str]:
    """One command as root, killed by `timeout` inside if it outlives its bound.

    Returns (exit code or None if it had to be killed, stdout+stderr).
    """
    bound = bound_for(args)
    command = ["timeout", "-s", "KILL", f"{bound:.0f}", HOOK, *args]
    try:
        done = unit.box.run(command, check=False, timeout=bound + 30)
    except subprocess.TimeoutExpired:
        return None, "(nsenter timed out)"
    # timeout(1) exits 124 or 137, or dies of the SIGKILL it sends to its process group.
    code = None if done.returncode in (124, 137, -9) else done.returncode
    return code, done.stdout + done.stderr


def run_check_as_postgres(unit: PgpoolUnit) -> None:
    """`check` as postgres with CAP_NET_ADMIN, as the hook lines run (pgpool is stopped,
    so it reports exit 1); it must end with a documented code and no traceback."""
    done = unit.box.run([*AS_POSTGRES, *WITH_NET_ADMIN, HOOK, "check"], check=False)
    assert done.returncode in DOCUMENTED, unit.explain(f"check: exit {done.returncode}")
    assert "Traceback" not in done.stderr, unit.explain(done.stderr)


def make_victims(unit: PgpoolUnit) -> None:
    text = json.dumps({"reason": SECRET, "state": "UP", "count": 0, "by": SECRET}) + "\n"
    for path, mode in ((VICTIM_FILE, 0o600), (VICTIM_ETC, 0o644)):
        unit.box.write_file(path, text, mode=mode)
    unit.box.run(["mkdir", "-m", "0755", "-p", VICTIM_DIR])


def victims(unit: PgpoolUnit) -> str:
    """Bytes, mode, owner and times of the victims, and what the victim directory holds."""
    script = (
        f'for f in {VICTIM_FILE} {VICTIM_ETC}; do stat -c "%n %a %u:%g %s %Y %Z %i" "$f"; '
        'sha256sum "$f"; done; '
        f'stat -c "%n %a %u:%g %Y" {VICTIM_DIR}; ls -A {VICTIM_DIR}'
    )
    return sh(unit, script).stdout


PLANT = r"""
kind=$1; target=$2; shift 2
for p; do
    rm -rf "$p" 2>/dev/null
    if [ "$kind" = fifo ]; then mkfifo -m 0666 "$p"; else ln -s "$target" "$p"; fi
done
"""


def plantable_names(unit: PgpoolUnit) -> list[str]:
    """Every hook name in a directory postgres can write (must include state_dir's)."""
    dirs = writable_by_postgres(unit, list(NAMES))
    assert STATE_DIR in dirs, unit.explain(f"postgres cannot write {STATE_DIR}: {dirs}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    names = [f"{d}/{n}" for d in dirs for n in NAMES[d]]
    if STATUS_DIR in dirs:
        names.append(f"{STATUS_DIR}/pgpool_status.set-aside-{stamp}")
    return names


def plant(unit: PgpoolUnit, kind: str, target: str, names: list[str]) -> None:
    done = postgres_sh(unit, PLANT, kind, target, *names)
    assert done.returncode == 0, unit.explain(f"planting {kind} failed: {done.stderr}")


def addresses_line(output: str) -> str:
    found = re.search(r"^addresses = (.*)$", output, re.MULTILINE)
    return found.group(1) if found else f"(no addresses line in: {output[-500:]!r})"


def assert_configuration_out_of_reach(unit: PgpoolUnit, when: str) -> None:
    """No configuration source is writable by postgres; the cache dir is root:root, 0755-ish."""
    sources = sh(
        unit,
        f"ls -d /etc/pgpool-anycast-hook {MAIN_CONFIG} {CONF_D} {CONF_D}/* {CACHE_DIR} "
        f"{CACHE_DIR}/* 2>/dev/null; true",
    ).stdout.split()
    assert CACHE_DIR in sources and MAIN_CONFIG in sources, sources
    reachable = writable_by_postgres(unit, sources)
    assert reachable == [], unit.explain(f"{when}: postgres can write configuration: {reachable}")
    owner, mode = sh(unit, f"stat -c '%U:%G %a' {CACHE_DIR}").stdout.split()
    assert owner == "root:root", unit.explain(f"{when}: {CACHE_DIR} is {owner} {mode}")
    assert int(mode, 8) & 0o022 == 0, unit.explain(f"{when}: {CACHE_DIR} mode {mode}")


FORGE_CACHE = r"""
import marshal, os, sys
from pgpool_anycast_hook import config_cache
directory, forged = sys.argv[1], sys.argv[2]
main = "/etc/pgpool-anycast-hook/config.toml"
conf_d = "/etc/pgpool-anycast-hook/conf.d"
files = [main] + sorted(os.path.join(conf_d, n) for n in os.listdir(conf_d) if n.endswith(".toml"))
key = config_cache.cache_key(files)
os.environ[config_cache.CACHE_DIR_ENV] = directory
path = config_cache.cache_path(main)
data = marshal.dumps({"key": key, "settings": {"addresses": [forged]}})
fd = os.open(path + ".forging", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data)
os.close(fd)
os.rename(path + ".forging", path)
print(path)
"""


def forge(unit: PgpoolUnit, place: str) -> None:
    """As postgres: a forged compiled cache, conf.d/ and config.toml in `place`."""
    done = unit.box.run([*AS_POSTGRES, "python3", "-c", FORGE_CACHE, place, FORGED], check=False)
    assert done.returncode == 0, unit.explain(f"forging a cache in {place}: {done.stderr}")
    script = (
        'mkdir -p "$1/conf.d" && printf %s "$2" > "$1/conf.d/99-forged.toml" && '
        'printf %s "$2" > "$1/config.toml"'
    )
    made = postgres_sh(unit, script, place, f'addresses = ["{FORGED}"]\n')
    assert made.returncode == 0, unit.explain(f"forging conf in {place}: {made.stderr}")


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["link to victim", "link to new name", "fifo"])
def test_names_planted_by_postgres_never_steer_a_root_command(unit: PgpoolUnit, kind: str) -> None:
    """postgres plants a link (to a root-only victim, or to a new name in a root-owned
    directory) or a FIFO at every hook name in every directory it can write, afresh
    before each command; each command run as root leaves the victims untouched, never
    prints their content, and ends within its deadline + margin with a documented code."""
    # As when an administrator's own timer runs `check` as the drop-in's hook lines run.
    run_check_as_postgres(unit)
    make_victims(unit)
    names = plantable_names(unit)
    before = victims(unit)
    problems = []
    for index, args in enumerate(COMMANDS):
        if kind == "fifo":
            plant(unit, "fifo", "-", names)
        else:
            target = VICTIM_FILE if index % 2 == 0 else VICTIM_ETC
            if kind == "link to new name":
                target = f"{VICTIM_DIR}/planted"
            plant(unit, "link", target, names)
        started = time.monotonic()
        code, output = run_root(unit, args)
        took = time.monotonic() - started
        after = victims(unit)
        why = None
        if code is None:
            why = f"did not end within {bound_for(args):.0f}s (hung)"
        elif code not in DOCUMENTED:
            why = f"exit {code}"
        elif "Traceback" in output:
            why = "traceback"
        if after != before:
            why = f"changed a victim:\n{before}->\n{after}"
            before = after
        if SECRET in output:
            why = "printed a victim's content"
        if why is not None:
            problems.append(f"{' '.join(args)}: {why} ({took:.1f}s)\n{output[-800:]}")
    sh(unit, f"rm -rf {STATE_DIR}/* {STATE_DIR}/.[!.]*")  # leave the unit a clean state dir
    assert not problems, unit.explain(f"[{kind}] planted at {names}:\n" + "\n".join(problems))


def test_no_configuration_source_is_writable_by_postgres(unit: PgpoolUnit) -> None:
    """config.toml, conf.d/ and its files, the cache directory and its files: none is
    writable by postgres, and the cache directory is root:root and not group/other-
    writable, both after pgpool2.service ran and after `check` ran as postgres with
    CAP_NET_ADMIN (as an administrator's own timer would run it)."""
    first = unit.box.run([HOOK, "check-config"], check=False)  # (re)writes the cache
    assert first.returncode == 0, unit.explain(f"check-config failed: {first.stderr}")
    assert_configuration_out_of_reach(unit, "after pgpool2.service started and stopped")
    run_check_as_postgres(unit)
    unit.box.run([HOOK, "check-config"], check=False)
    assert_configuration_out_of_reach(unit, "after check ran as postgres+CAP_NET_ADMIN")


def test_a_forged_cache_or_conf_written_by_postgres_is_ignored(unit: PgpoolUnit) -> None:
    """postgres writes a compiled cache keyed to root's files (listing an address root
    never configured) and conf.d/config.toml files wherever it can write, the cache
    directory included if it can: root's and a postgres+CAP_NET_ADMIN run's
    `check-config` still print root's `addresses`, and `add` never puts the forged
    address on lo."""
    run_check_as_postgres(unit)
    first = unit.box.run([HOOK, "check-config"], check=False)
    assert first.returncode == 0, unit.explain(f"check-config failed: {first.stderr}")
    expected = addresses_line(first.stdout)
    assert json.loads(expected) == [ANYCAST], unit.explain(first.stdout)

    # Forge, afresh before each user's runs (a root run may replace a forged cache with
    # its own): a compiled cache keyed to root's files, and conf.d files, wherever
    # postgres can write (the cache directory too, should it be able to).
    candidates = [CACHE_DIR, STATE_DIR, STATUS_DIR, RUN_DIR, "/tmp", "/var/tmp", "/dev/shm"]
    places = writable_by_postgres(unit, candidates)
    assert STATE_DIR in places, unit.explain(f"postgres cannot write {STATE_DIR}: {places}")
    users: tuple[tuple[str, list[str]], ...] = (
        ("postgres+CAP_NET_ADMIN", [*AS_POSTGRES, *WITH_NET_ADMIN]),
        ("root", []),
    )
    for who, prefix in users:
        for place in places:
            forge(unit, place)
        shown = unit.box.run([*prefix, HOOK, "check-config"], check=False)
        line = addresses_line(shown.stdout)
        assert FORGED not in shown.stdout + shown.stderr, unit.explain(
            f"{who}'s check-config took the forgery (written in {places}): "
            f"{shown.stdout}{shown.stderr}"
        )
        assert shown.returncode != 0 or line == expected, unit.explain(
            f"{who}'s check-config: addresses {line}, expected {expected}"
        )
        for place in places:
            forge(unit, place)
        added = unit.box.run([*prefix, HOOK, "add", "0"], check=False)
        on_lo = unit.box.addresses("lo")
        unit.box.run([*prefix, HOOK, "del", "0"], check=False)
        assert FORGED not in on_lo, unit.explain(
            f"{who}'s add put the forged {FORGED} on lo: {added.stderr}"
        )
    root_again = unit.box.run([HOOK, "check-config"], check=False)
    assert root_again.returncode == 0, unit.explain(root_again.stderr)
    assert addresses_line(root_again.stdout) == expected, unit.explain(root_again.stdout)
    sh(unit, "rm -rf " + " ".join(shlex.quote(f"{p}/conf.d") for p in places))
