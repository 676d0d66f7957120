# Conveniences over scripts/ (the README's commands use the scripts, since a fresh
# Debian 12 machine may not have make). Run as root.
PY := /opt/pgpool-anycast-hook-dev/bin/python

.PHONY: setup test test-fast deb demo lab-down bench

setup:
	bash scripts/setup-dev.sh
test:
	bash scripts/test.sh
test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/netns
deb: setup
	bash packaging/build-deb.sh
demo:
	bash scripts/demo.sh
lab-down:
	$(PY) -m lab down
bench: setup deb
	bench/hook_latency
	bench/failover
