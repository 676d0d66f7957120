#!/bin/bash
# Build one Debian root for the systemd test bed into an empty directory.
# Usage: build-root.sh SUITE MIRROR TARGET PACKAGES(comma-separated)
# testbed/rootfs.py runs this and hashes this file into the cache key, so any change
# here rebuilds the roots. Services are left disabled: the tests start what they need.
set -euo pipefail
suite=$1 mirror=$2 target=$3 packages=$4

# minbase plus what we ask for; debootstrap installs with policy-rc.d "exit 101",
# so no daemon starts on the host while the root is built.
debootstrap --variant=minbase --include="$packages" "$suite" "$target" "$mirror"

# debootstrap copies the host's hostname (real-systemd.md gotcha 5).
echo "pah-$suite" > "$target/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tpah-%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    "$suite" > "$target/etc/hosts"

# The tests decide when pgpool, PostgreSQL, FRR and BIRD run; apt's timers would only
# fail without a network.
for unit in pgpool2.service postgresql.service frr.service bird.service apt-daily.timer apt-daily-upgrade.timer; do
    if [ -e "$target/lib/systemd/system/$unit" ] || [ -e "$target/usr/lib/systemd/system/$unit" ]; then
        chroot "$target" systemctl disable --quiet "$unit"
    fi
done

# Keep the machine-id debootstrap made: an empty one would mean "first boot" and make
# systemd apply presets, enabling the services again. Drop downloaded packages and
# indexes: a booted container has no network anyway.
rm -rf "$target"/var/cache/apt/archives/*.deb "$target"/var/lib/apt/lists/*
echo "root built: $suite in $target"
