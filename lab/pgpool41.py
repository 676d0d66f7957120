"""pgpool-II 4.1.4 from Debian 11 for one lab balancer: three pinned .debs, fetched once.

Why: the hook supports pgpool 4.1 to 4.7, and 4.1 differs where it matters to a
promotion: it names the follow command follow_master_command, has no
backend_clustering_mode, and prints 12 columns in SHOW POOL_NODES. The lab's containers
run Debian 12 (pgpool 4.3.5). Debian 11's pgpool2 4.1.4-3 installs over it with
`dpkg -i` together with the two libraries Debian 12 lacks (libpgpool0, libssl1.1), so
one balancer can run the real 4.1 beside two on 4.3.

The .debs are downloaded once with apt-get into CACHE_DIR. apt gets a sources.list,
lists and cache of its own in a temporary directory there; the host's /etc/apt is only
read (its mirror, its apt.conf.d), never changed. The mirror is the host's
(testbed.rootfs.host_mirror(), or $PAH_DEBIAN_MIRROR); once Debian has moved bullseye to
its archive, set $PAH_DEBIAN_ARCHIVE_MIRROR to that, and it is tried second. Each file
must match its pinned sha256: a mismatch, a missing version or no network fails with
the reason, and the lab does not come up without them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed import rootfs

CACHE_DIR = Path("/var/cache/pgpool-anycast-hook/pgpool-4.1")
SUITE = "bullseye"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCHIVE_ENV = "PAH_DEBIAN_ARCHIVE_MIRROR"
DOWNLOAD_TIMEOUT = 300.0
# package -> (version, file name, sha256); bullseye main after its last point release.
DEBS = {
    "pgpool2": (
        "4.1.4-3",
        "pgpool2_4.1.4-3_amd64.deb",
        "6158883d8f3cd686478ac710aeb06f6da2e7cb0c3ccaaec11cf6010b88e7151c",
    ),
    "libpgpool0": (
        "4.1.4-3",
        "libpgpool0_4.1.4-3_amd64.deb",
        "d0f9e856ee9c9ddf2c556d50fb3c4da9f5e32aad89239b430d4a37c2d21705b4",
    ),
    "libssl1.1": (
        "1.1.1w-0+deb11u1",
        "libssl1.1_1.1.1w-0+deb11u1_amd64.deb",
        "aadf8b4b197335645b230c2839b4517aa444fd2e8f434e5438c48a18857988f7",
    ),
}
LOCK_TIMEOUT = 2 * DOWNLOAD_TIMEOUT + 60.0


def ensure_debs() -> list[Path]:
    """The three .debs in CACHE_DIR, each checked against its sha256; fetched if needed."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with rootfs.exclusive_lock(CACHE_DIR / "fetch.lock", LOCK_TIMEOUT):
        if not all(is_good(CACHE_DIR / name, sha) for _, name, sha in DEBS.values()):
            fetch()
    return [CACHE_DIR / name for _, name, _ in DEBS.values()]


def is_good(path: Path, sha256: str) -> bool:
    return path.is_file() and digest(path) == sha256


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mirrors() -> list[str]:
    found = [rootfs.host_mirror()]
    archive = os.environ.get(ARCHIVE_ENV)
    if archive:
        found.append(archive)
    return found


def fetch() -> None:
    """Download from the first mirror that has them all; raise with every mirror's reason."""
    failures = []
    for mirror in mirrors():
        rootfs.log(f"fetching pgpool 4.1.4 ({', '.join(DEBS)}) from {mirror} {SUITE}")
        try:
            download(mirror)
            return
        except RuntimeError as error:
            failures.append(f"{mirror}: {error}")
    hint = "" if os.environ.get(ARCHIVE_ENV) else f" (set {ARCHIVE_ENV} to Debian's archive)"
    raise RuntimeError(
        f"cannot fetch pgpool 4.1.4 for the lab's bal3{hint}:\n" + "\n".join(failures)
    )


def download(mirror: str) -> None:
    """apt-get update and download with apt state of its own; verify, then move into place."""
    with tempfile.TemporaryDirectory(prefix="apt-", dir=CACHE_DIR) as scratch:
        work = Path(scratch)
        for sub in ("lists/partial", "cache/archives/partial", "parts", "debs"):
            (work / sub).mkdir(parents=True)
        (work / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {SUITE} main\n")
        (work / "status").write_text("")
        options = [
            f"-oDir::Etc::SourceList={work / 'sources.list'}",
            f"-oDir::Etc::SourceParts={work / 'parts'}",
            f"-oDir::Etc::Preferences={work / 'preferences'}",
            f"-oDir::Etc::PreferencesParts={work / 'parts'}",
            f"-oDir::State::Lists={work / 'lists'}",
            f"-oDir::State::Status={work / 'status'}",
            f"-oDir::Cache={work / 'cache'}",
            "-oAcquire::Languages=none",
            "-oAcquire::Check-Valid-Until=false",  # an archived suite's Release has expired
            "-oAPT::Sandbox::User=root",  # the scratch directory is root's
        ]
        apt(options, ["update"], work)
        wanted = [f"{package}={version}" for package, (version, _, _) in DEBS.items()]
        apt(options, ["download", *wanted], work / "debs")
        for _, name, sha256 in DEBS.values():
            got = work / "debs" / name
            if not got.is_file():
                raise RuntimeError(f"apt-get download left no {name}")
            if digest(got) != sha256:
                raise RuntimeError(f"{name}: sha256 {digest(got)}, pinned {sha256}")
        for _, name, _ in DEBS.values():
            shutil.move(work / "debs" / name, CACHE_DIR / name)


def apt(options: list[str], command: list[str], cwd: Path) -> None:
    what = f"apt-get {command[0]}"
    try:
        proc = subprocess.run(
            ["apt-get", *options, *command],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=DOWNLOAD_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: timed out after {DOWNLOAD_TIMEOUT:.0f}s") from None
    # apt-get update exits 0 when a source could not be fetched; its "W:"/"E:" lines say so.
    failed = [line for line in proc.stderr.splitlines() if line.startswith(("E:", "W: Failed"))]
    if proc.returncode != 0 or failed:
        detail = "\n".join((failed or proc.stderr.splitlines())[-10:])
        raise RuntimeError(f"{what}: {detail}")
