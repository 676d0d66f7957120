#!/bin/bash
# Install everything the tests, the benchmarks and the demo need on a Debian 12 host,
# and (re)install this checkout into the development virtualenv.
# Idempotent; run as root. The venv lives under /opt so that the postgres user can
# execute it (tests run the hook as postgres, the way pgpool does).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "$0: run as root (it installs Debian packages; the tests create network namespaces" \
         "and containers), e.g. sudo bash $0" >&2
    exit 1
fi
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${PAH_VENV:-/opt/pgpool-anycast-hook-dev}
stamp=/var/lib/pgpool-anycast-hook-dev.apt-stamp

apt_packages=(
    # the hook's runtime dependencies, as Debian ships them (the .deb's Depends)
    python3 python3-venv python3-pip python3-click python3-pyroute2 python3-psutil python3-systemd
    python3-psycopg python3-prometheus-client
    python3-pytest python3-hypothesis
    # real components the tests drive
    iproute2 procps util-linux libcap2-bin pgpool2 postgresql postgresql-contrib frr bird2
    prometheus-node-exporter
    nftables  # the lab's fallback host redirects pgpool's port to PostgreSQL's (lab/fallback.py)
    debootstrap systemd-container zstd
    # building and checking the .deb
    debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
    python3-wheel lintian devscripts fakeroot
    # benchmarks
    hyperfine bsdextrautils
)
if [ ! -e "$stamp" ] || [ "$(cat "$stamp")" != "${apt_packages[*]}" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian would start pgpool2, PostgreSQL and FRR on the host as it installs them;
    # the tests start their own instances in namespaces and containers. A policy-rc.d
    # that says "no" keeps the host's services down (removed again afterwards).
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
    fi
    # With Recommends, as the machines the suite was developed and measured on have them
    # (debootstrap, for one, recommends the archive keyring it verifies Release files with).
    apt-get install -y -qq "${apt_packages[@]}" >/dev/null
    if [ -n "$own_policy" ]; then rm -f "$policy"; fi
    echo "${apt_packages[*]}" > "$stamp"
fi

if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check pytest hypothesis ruff mypy
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall "$here"
chmod -R a+rX "$venv"
