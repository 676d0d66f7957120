"""Real netlink: every test gets its own network namespace, never the host's interfaces."""

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HOOK = str(Path(sys.executable).with_name("pgpool-anycast-hook"))
_names = itertools.count()


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "netns tests need root (they create network namespaces); run `make test` as root"
        )


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh namespace with lo up and a veth pair (pah0/pah1) inside it."""
    require_root()
    name = f"pah-t{os.getpid()}-{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "-n", name, "link", "add", "pah0", "type", "veth", "peer", "name", "pah1"],
            check=True,
        )
        subprocess.run(["ip", "-n", name, "link", "set", "pah0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def addresses_in(netns: str, interface: str = "lo") -> set[str]:
    """What the kernel holds, read with `ip -j` (independent of the code under test)."""
    out = subprocess.run(
        ["ip", "-j", "-n", netns, "address", "show", "dev", interface],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {
        f"{a['local']}/{a['prefixlen']}"
        for link in json.loads(out)
        for a in link.get("addr_info", [])
    }


class HookSetup:
    """A config directory that postgres can read, with a status file and state dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.toml"
        self.status_file = root / "pgpool_status"
        self.state_dir = root / "state"
        self.state_dir.mkdir()
        os.chmod(self.state_dir, 0o777)

    def write(self, **settings: object) -> None:
        base: dict[str, object] = {
            "status_file": str(self.status_file),
            "state_dir": str(self.state_dir),
            "syslog_address": str(self.root / "no-syslog-here"),
        }
        base.update(settings)
        lines = [f"{key} = {json.dumps(value)}" for key, value in base.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def run(
        self, netns: str, *args: str, prefix: tuple[str, ...] = (), timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        command = ["ip", "netns", "exec", netns, *prefix, HOOK, "--config", str(self.config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def hook() -> Iterator[HookSetup]:
    root = Path(tempfile.mkdtemp(prefix="pah-test-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        setup = HookSetup(root)
        setup.status_file.write_text("up\nup\n")
        setup.write(addresses=["198.18.2.0/32"])
        yield setup
    finally:
        shutil.rmtree(root, ignore_errors=True)
