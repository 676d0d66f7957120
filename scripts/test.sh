#!/bin/bash
# The whole test suite, from a fresh Debian 12 machine (run as root):
# Debian packages and the dev venv, lint, the .deb (with lintian), then pytest:
# unit, real netlink in namespaces, real pgpool/PostgreSQL, real systemd in
# systemd-nspawn containers (Debian 12 and 13), and the FRR/pgpool/PostgreSQL lab.
# Extra arguments go to one pytest run instead, e.g. `scripts/test.sh tests/unit -q`.
#
# The whole suite runs in three pytest runs, to stay well inside CI's time on two cores:
# the lab alone first (its bounds are about the router's and pgpool's timing), then
# tests/netns + tests/pgpool beside tests/unit + tests/systemd (the second one's output
# follows the first's). The containers' Debian roots are built (or unpacked from the
# cache) while the linters run. Exit status: the first failure's, else 0.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=/opt/pgpool-anycast-hook-dev/bin
bash scripts/setup-dev.sh
pytest=("$venv/python" -m pytest -v -p no:cacheprovider)

roots_log=$(mktemp /tmp/pah-roots.XXXXXX)
side_log=$(mktemp /tmp/pah-tests.XXXXXX)
trap 'rm -f "$roots_log" "$side_log"' EXIT
if [ $# -eq 0 ]; then
    "$venv/python" - >"$roots_log" 2>&1 <<'EOF' &
from concurrent.futures import ThreadPoolExecutor
from testbed import rootfs
with ThreadPoolExecutor(len(rootfs.SUITES)) as pool:
    for root in pool.map(rootfs.ensure_root, rootfs.SUITES):
        print(f"root ready: {root}")
EOF
    roots=$!
fi
"$venv/ruff" check pgpool_anycast_hook tests testbed lab bench/hook_latency bench/failover bench/drain_orders bench/guard_cost bench/host_failure
"$venv/ruff" format --check pgpool_anycast_hook tests testbed lab
"$venv/mypy" pgpool_anycast_hook testbed lab
bash packaging/build-deb.sh
if [ $# -gt 0 ]; then
    exec "${pytest[@]}" "$@"
fi
# A failed build shows again, with its log, in the tests that need the root.
wait "$roots" || echo "test.sh: building the Debian roots failed: $(tail -n 5 "$roots_log")" >&2

status=0
"${pytest[@]}" tests/lab || status=$?
"${pytest[@]}" tests/netns tests/pgpool >"$side_log" 2>&1 &
side=$!
"${pytest[@]}" tests/unit tests/systemd || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
side_status=0
wait "$side" || side_status=$?
echo "=== tests/netns tests/pgpool (ran beside tests/unit tests/systemd) ==="
cat "$side_log"
[ "$status" -ne 0 ] || status=$side_status
exit "$status"
