"""Real systemd test bed: cached Debian roots (rootfs) and nspawn containers (container).

Used by tests/systemd and by the lab. See rootfs.ensure_root and container.Container.
"""
