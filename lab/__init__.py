"""The article's topology on one machine: router, three pgpool balancers, PostgreSQL, client.

Everything runs inside network namespaces this package creates (names start with `lab-`);
the balancers are systemd-nspawn containers booting real systemd. `python3 -m lab up|demo|down`.
"""
