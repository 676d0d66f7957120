"""Exit 0 if a new connection to HOST:PORT answers `select 1` within TIMEOUT seconds.

Runs inside the client namespace: `python3 -m lab.probe HOST PORT TIMEOUT`.
"""

from __future__ import annotations

import sys

from lab import pgwire


def main() -> int:
    host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    try:
        pgwire.query(host, port, "select 1", timeout=timeout)
    except pgwire.QueryFailed as error:
        print(f"{host}:{port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
