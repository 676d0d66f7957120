"""The operator's maintenance hold: a small file in state_dir.

While it exists the addresses stay withdrawn across restarts, reboots and
failback events; `add`, `reconcile` and `check` respect it. It lives in state_dir
(not /run) so that a reboot does not lift it. That directory is postgres's, so the
file is read and written through safe_files.py; whatever postgres puts there can
only ever withdraw (a hold), never announce.
"""

import os
import time
from typing import NamedTuple

from pgpool_anycast_hook.safe_files import read_regular, replace_file

HOLD_FILE = "hold"
MAX_HOLD_BYTES = 4096


class Hold(NamedTuple):
    reason: str
    since: str  # UTC, ISO 8601
    by: str


def hold_path(state_dir: str) -> str:
    return os.path.join(state_dir, HOLD_FILE)


def read_hold(state_dir: str) -> Hold | None:
    """The hold, or None. An unreadable or garbled hold file still counts as a hold."""
    path = hold_path(state_dir)
    if not os.path.lexists(path):
        return None
    import json  # only when a hold file exists

    try:
        data = json.loads(read_regular(path, MAX_HOLD_BYTES))
        return Hold(
            str(data.get("reason", ""))[:200], str(data.get("since", ""))[:40],
            str(data.get("by", ""))[:40],
        )  # fmt: skip
    except (OSError, ValueError, AttributeError, RecursionError) as error:
        return Hold(f"unreadable hold file ({error})"[:200], "", "")


def write_hold(state_dir: str, reason: str, by: str) -> Hold:
    import json

    hold = Hold(reason, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), by)
    replace_file(hold_path(state_dir), (json.dumps(hold._asdict()) + "\n").encode(), 0o664)
    return hold


def clear_hold(state_dir: str) -> bool:
    """Remove the hold; True if there was one."""
    try:
        os.unlink(hold_path(state_dir))
        return True
    except FileNotFoundError:
        return False
