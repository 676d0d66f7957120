"""on_change commands run without the guard's CAP_NET_ADMIN (root: setpriv).

The guard runs as an unprivileged user with CAP_NET_ADMIN in its ambient set, as
systemd's AmbientCapabilities= gives it, and ambient capabilities survive execve.
Here a real process is started that way, and it runs a real command through
ChangeCommands, which prints its own /proc/self/status. Without
drop_ambient_capabilities() the command has CAP_NET_ADMIN (so the set-up is what
it claims to be); with it, the command has no capability and the parent still has
CAP_NET_ADMIN in effect. No namespace is needed: nothing touches an interface.
"""

import json
import subprocess
import sys

import pytest

from tests.netns.conftest import require_root

pytestmark = pytest.mark.netns

CAP_NET_ADMIN = 1 << 12
AS_NOBODY = ("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups")
WITH_NET_ADMIN = ("--inh-caps", "+net_admin", "--ambient-caps", "+net_admin")

# Runs as nobody. Prints one JSON line of its own; the command prints its Cap* lines.
GUARD_LIKE = r"""
import json, select, sys, time
from pgpool_anycast_hook.on_change import ChangeCommands, drop_ambient_capabilities

def caps():
    lines = open("/proc/self/status").read().splitlines()
    return {k: int(v, 16) for k, v in (l.split(":\t") for l in lines) if k.startswith("Cap")}

dropped = drop_ambient_capabilities() if sys.argv[1] == "drop" else None
print(json.dumps({"dropped": dropped, "parent": caps()}), flush=True)
poller, lines = select.poll(), []
commands = ChangeCommands(["/bin/grep", "^Cap", "/proc/self/status"], 10, 1, poller,
                          lambda severity, **fields: lines.append(fields))
commands.start({"PATH": "/usr/bin:/bin"}, time.monotonic())
for fd, _events in poller.poll(10_000):
    commands.reap(fd, time.monotonic())
commands.close(grace=0)
print(json.dumps({"results": [f["result"] for f in lines]}), flush=True)
"""


def run_as_nobody(mode: str) -> tuple[dict[str, object], dict[str, int], list[str]]:
    """(the parent's JSON, the command's Cap* values, the results logged)."""
    require_root()
    out = subprocess.run(
        [*AS_NOBODY, *WITH_NET_ADMIN, sys.executable, "-c", GUARD_LIKE, mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    parent = json.loads(lines[0])
    results = json.loads(lines[-1])["results"]
    child = {k: int(v, 16) for k, v in (line.split(":\t") for line in lines[1:-1])}
    assert set(child) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}, out.stdout
    return parent, child, results


def test_without_the_drop_a_command_would_inherit_cap_net_admin() -> None:
    parent, child, results = run_as_nobody("keep")
    assert results == ["started", "ok"]
    assert parent["dropped"] is None
    assert child["CapAmb"] & CAP_NET_ADMIN and child["CapEff"] & CAP_NET_ADMIN, child


def test_after_the_drop_a_command_has_no_capability_and_the_guard_keeps_its_own() -> None:
    parent, child, results = run_as_nobody("drop")
    assert results == ["started", "ok"]
    assert parent["dropped"] is True
    caps = parent["parent"]
    assert isinstance(caps, dict)
    assert caps["CapEff"] == CAP_NET_ADMIN and caps["CapPrm"] == CAP_NET_ADMIN, caps
    assert caps["CapAmb"] == 0, caps
    assert child["CapEff"] == 0 and child["CapPrm"] == 0 and child["CapAmb"] == 0, child
