"""Debian roots for systemd-nspawn containers, built once and cached by content hash.

`ensure_root(suite)` returns a directory holding a Debian root (debootstrap minbase plus
systemd, pgpool2, PostgreSQL, FRR, BIRD 2 and the hook's Python dependencies). Building takes
minutes, so the result is kept twice:

- a zstd tarball under /var/cache/pgpool-anycast-hook/roots/<suite>-<hash>.tar.zst,
  which survives a wiped /var/lib and is what CI machines keep between runs;
- an unpacked directory under /var/lib/pgpool-anycast-hook-testbed/roots/<suite>-<hash>/,
  which containers boot read-only (`--volatile=overlay`), so several share one root.

The hash covers the suite, the package list and build-root.sh, so changing any of them
builds a new root instead of silently reusing an old one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

SUITES = ("bookworm", "trixie")

PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "procps",
    "libcap2-bin",
    "pgpool2",
    "postgresql",
    "postgresql-client",
    "python3-click",
    "python3-pyroute2",
    "python3-psutil",
    "python3-systemd",
    "python3-psycopg",
    "python3-prometheus-client",
    "prometheus-node-exporter",
    "frr",
    "bird2",  # the lab's bal3 in the BGP profile (lab/profiles.py)
    "iputils-ping",
)

CACHE_DIR = Path("/var/cache/pgpool-anycast-hook/roots")
ROOTS_DIR = Path("/var/lib/pgpool-anycast-hook-testbed/roots")
BUILD_SCRIPT = Path(__file__).with_name("build-root.sh")

BUILD_TIMEOUT = 1200.0  # one debootstrap with postgresql and frr: about 2-4 minutes here
PACK_TIMEOUT = 300.0
LOCK_TIMEOUT = BUILD_TIMEOUT + PACK_TIMEOUT + 60.0
MIRROR_ENV = "PAH_DEBIAN_MIRROR"


def log(message: str) -> None:
    """Progress goes to stderr so that `pytest -s` and the lab show what takes time."""
    print(f"[testbed {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def root_name(suite: str) -> str:
    """`<suite>-<hash>`: the hash covers everything that decides the root's content."""
    digest = hashlib.sha256()
    digest.update(suite.encode() + b"\0")
    digest.update("\n".join(PACKAGES).encode() + b"\0")
    digest.update(BUILD_SCRIPT.read_bytes())
    return f"{suite}-{digest.hexdigest()[:16]}"


def ensure_root(suite: str) -> Path:
    """Return the unpacked root for `suite`, building or unpacking it if needed.

    Safe to call from several processes at once: one builds, the others wait on a lock.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    name = root_name(suite)
    root = ROOTS_DIR / name
    tarball = CACHE_DIR / f"{name}.tar.zst"
    if is_complete(root):
        return root
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    ROOTS_DIR.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(CACHE_DIR / f"{name}.lock", LOCK_TIMEOUT):
        if is_complete(root):
            return root
        if tarball.exists():
            unpack(tarball, root)
        else:
            build(suite, tarball, root)
    return root


def is_complete(root: Path) -> bool:
    """A root counts only once unpacking finished; the rename to `root` is the last step."""
    return (root / "usr/lib/systemd/systemd").exists() or (root / "lib/systemd/systemd").exists()


def build(suite: str, tarball: Path, root: Path) -> None:
    """debootstrap into a scratch directory, pack it, then rename it into place.

    Each rename publishes a finished result, so an interrupted build leaves no half root
    or half tarball behind under the names that ensure_root trusts.
    """
    mirror = host_mirror()
    ensure_debootstrap_script(suite)
    scratch = ROOTS_DIR / f".build-{root.name}-{os.getpid()}-{threading.get_ident()}"
    build_log = ROOTS_DIR / f"{root.name}.build.log"
    partial = tarball.with_name(f"{tarball.name}.partial-{os.getpid()}-{threading.get_ident()}")
    remove_tree(scratch)
    started = time.monotonic()
    log(f"building {suite} root from {mirror} (log: {build_log}); takes a few minutes")
    try:
        with build_log.open("wb") as out:
            # A private mount namespace: debootstrap's /proc and /sys mounts in the
            # scratch root vanish with it, even if the build is killed on timeout.
            run_bounded(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    str(BUILD_SCRIPT),
                    suite,
                    mirror,
                    str(scratch),
                    ",".join(PACKAGES),
                ],
                BUILD_TIMEOUT,
                stdout=out,
                what=f"debootstrap {suite}",
                log_file=build_log,
            )
        log(f"{suite} root built in {time.monotonic() - started:.0f}s; packing {tarball}")
        pack_started = time.monotonic()
        with partial.open("wb") as out:
            run_bounded(
                [
                    "sh",
                    "-c",
                    'tar -C "$1" --numeric-owner --xattrs --xattrs-include="*" '
                    "--acls -cf - . | zstd -q -T0 -3",
                    "sh",
                    str(scratch),
                ],
                PACK_TIMEOUT,
                stdout=out,
                what=f"packing {suite} root",
            )
        partial.rename(tarball)
        size_mb = tarball.stat().st_size / 1e6
        log(f"packed {tarball.name} ({size_mb:.0f} MB) in {time.monotonic() - pack_started:.0f}s")
        remove_tree(root)
        scratch.rename(root)
    finally:
        remove_tree(scratch)
        partial.unlink(missing_ok=True)


def unpack(tarball: Path, root: Path) -> None:
    """Unpack into a scratch directory, then rename: a half-unpacked root is never used."""
    scratch = ROOTS_DIR / f".unpack-{root.name}-{os.getpid()}-{threading.get_ident()}"
    remove_tree(scratch)
    remove_tree(root)
    scratch.mkdir(parents=True)
    started = time.monotonic()
    log(f"unpacking {tarball.name} into {root}")
    try:
        run_bounded(
            [
                "sh",
                "-c",
                'zstd -q -dc "$1" | tar -C "$2" --numeric-owner --xattrs '
                '--xattrs-include="*" --acls -xpf -',
                "sh",
                str(tarball),
                str(scratch),
            ],
            PACK_TIMEOUT,
            what=f"unpacking {tarball.name}",
        )
        scratch.rename(root)
    finally:
        remove_tree(scratch)
    log(f"unpacked in {time.monotonic() - started:.0f}s")


def ensure_debootstrap_script(suite: str) -> None:
    """An older debootstrap may not know trixie yet; its recipe is sid's, as in newer ones."""
    scripts = Path("/usr/share/debootstrap/scripts")
    if not (scripts / suite).exists() and (scripts / "sid").exists():
        log(f"debootstrap has no {suite} script; linking it to sid's")
        (scripts / suite).symlink_to("sid")


def host_mirror() -> str:
    """The Debian mirror the host's apt uses (or $PAH_DEBIAN_MIRROR), never a guessed host.

    Reads deb822 `.sources` files and one-line `sources.list` entries, and takes the first
    `deb` entry for a main suite (not -security, -updates or -backports).
    """
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override
    apt_dir = Path("/etc/apt")
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in [*sorted((apt_dir / "sources.list.d").glob("*.sources")), *files]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found = (
            mirror_from_deb822(text) if path.suffix == ".sources" else mirror_from_one_line(text)
        )
        if found:
            return found
    raise RuntimeError(f"no Debian mirror found in /etc/apt; set {MIRROR_ENV}")


def is_main_suite(suite: str) -> bool:
    return "-" not in suite and "/" not in suite


def mirror_from_deb822(text: str) -> str | None:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        if not any(is_main_suite(s) for s in fields.get("suites", "").split()):
            continue
        uris = fields.get("uris", "").split()
        if uris and "security" not in uris[0]:
            return uris[0]
    return None


def mirror_from_one_line(text: str) -> str | None:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["deb"]:
            continue
        words = [w for w in words[1:] if not w.startswith("[")]  # drop [options]
        if len(words) >= 2 and is_main_suite(words[1]) and "security" not in words[0]:
            return words[0]
    return None


def run_bounded(
    argv: list[str],
    timeout: float,
    *,
    what: str,
    stdout: int | IO[bytes] = subprocess.DEVNULL,
    log_file: Path | None = None,
) -> None:
    """Run argv in its own process group; on timeout end that group (by its PID) and fail."""
    proc = subprocess.Popen(
        argv,
        stdout=stdout,
        stderr=subprocess.STDOUT if log_file else subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        raise RuntimeError(f"{what}: timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        detail = err.decode(errors="replace") if err else ""
        if log_file is not None:
            detail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{what}: exit {proc.returncode}\n{detail}")


def remove_tree(path: Path) -> None:
    """Remove a scratch tree without following symlinks out of it (a root has many).

    Refuses when something is mounted inside, rather than deleting through the mount.
    """
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mounts") as mounts:
        inside = [m.split()[1] for m in mounts if m.split()[1].startswith(prefix)]
    if inside:
        raise RuntimeError(f"not removing {path}: mounts inside: {', '.join(inside)}")
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@contextmanager
def exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """flock with a bound: another process building the same root is waited for, not forever."""
    deadline = time.monotonic() + timeout
    with path.open("a") as handle:
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{path} held by another process for {timeout:.0f}s"
                    ) from None
                if not announced:
                    log(f"waiting for another process building {path.stem}")
                    announced = True
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
