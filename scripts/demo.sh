#!/bin/bash
# Set everything up on a fresh Debian 12 machine (run as root), build the .deb,
# bring up the article's topology (router, three pgpool balancers under real
# systemd, PostgreSQL primary and two replicas, a client), and narrate ECMP, a
# pgpool crash and its recovery. The lab is torn down at the end. Arguments go to
# `python -m lab demo`: `--profile bgp` (eBGP + BFD, IPv4 and IPv6, BIRD on bal3),
# `--keep`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dev.sh
bash packaging/build-deb.sh
exec /opt/pgpool-anycast-hook-dev/bin/python -m lab demo "$@"
