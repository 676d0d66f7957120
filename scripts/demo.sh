#!/bin/bash
# Set everything up on a fresh Debian 12 machine (run as root), build the .deb,
# bring up the article's topology (router, three pgpool balancers under real
# systemd, PostgreSQL primary and two replicas, a client, a second site), and
# narrate it in every routing profile in turn: OSPF (ECMP, a pgpool crash and its
# recovery), eBGP + BFD over IPv4 and IPv6 (BIRD on bal3; the same story), and two
# sites (each site's clients on its own balancers, site A failing over to site B and
# back). The lab is torn down at the end. Arguments go to `python -m lab demo`
# instead: `--profile ospf|bgp|two-site` for one profile, `--keep`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dev.sh
bash packaging/build-deb.sh
if [ "$#" -eq 0 ]; then
    set -- --profile all
fi
exec /opt/pgpool-anycast-hook-dev/bin/python -m lab demo "$@"
