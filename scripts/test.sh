#!/bin/bash
# The whole test suite, from a fresh Debian 12 machine (run as root):
# Debian packages and the dev venv, lint, the .deb (with lintian), then pytest:
# unit, real netlink in namespaces, real pgpool/PostgreSQL, real systemd in
# systemd-nspawn containers (Debian 12 and 13), and the FRR/pgpool/PostgreSQL lab.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -q`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=/opt/pgpool-anycast-hook-dev/bin
bash scripts/setup-dev.sh
"$venv/ruff" check pgpool_anycast_hook tests testbed lab bench/hook_latency bench/failover bench/drain_orders bench/guard_cost bench/host_failure
"$venv/ruff" format --check pgpool_anycast_hook tests testbed lab
"$venv/mypy" pgpool_anycast_hook testbed lab
bash packaging/build-deb.sh
exec "$venv/python" -m pytest -v -p no:cacheprovider "${@:-tests}"
