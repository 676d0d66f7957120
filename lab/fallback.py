"""The article's bonus in the lab: the PostgreSQL primary pg1 announces the anycast address
as the last resort, for when every balancer has withdrawn.

`start()` gives pg1 what docs/examples/ describe for such a host, and `stop()` takes it
all away again (tests/lab/test_last_resort.py; the other lab tests run without it, since a
fallback route would answer where they expect none):
- FRR zebra + ospfd in lab-pg1, loading the OSPF part of docs/examples/frr-fallback.conf
  (the shipped file up to its BGP section, pg1's address put in for the file's own),
  adjacent to the router over br0: an external type-2 route of metric 100000, worse
  than any balancer's 20. The router runs OSPF on br0 in the OSPF profiles
  (lab/templates/ospf-router.conf); the BGP profile's router runs no ospfd, so the
  fallback is an OSPF-profile feature of the lab.
- The guard with serve = "postgresql": this checkout's console script, run as postgres
  with CAP_NET_ADMIN and nothing else, asking pg1's PostgreSQL over its unix socket as
  the lab's guard role. Its configuration is a root-owned file in a root-owned directory.
- pgpool's port on the anycast address redirected to PostgreSQL's (nftables `redirect`,
  as the pg_hba example says): a client keeps connecting to ANYCAST:PGPOOL_PORT,
  whichever host the router sends it to.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
from pathlib import Path

from lab import frr, netns, postgres, state
from lab.hosts import ANYCAST, ANYCAST_PREFIX, PGPOOL_PORT, POSTGRES_PORT, PRIMARY

EXAMPLE = Path(__file__).resolve().parent.parent / "docs/examples/frr-fallback.conf"
EXAMPLE_ADDRESS = "198.18.0.11"  # the file's own address for the host, replaced by pg1's
BGP_MARKER = "! ---- BGP"
PG1_FRR = frr.PG1_FRR
FALLBACK_DIR = state.LAB_DIR / "fallback"
GUARD_RECORD = "fallback-guard"  # not under PG1_FRR's "pg1-" records
NFT_TABLE = "pah_fallback"
AS_POSTGRES_NET_ADMIN = [
    "setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups",
    "--inh-caps", "+net_admin", "--ambient-caps", "+net_admin",
]  # fmt: skip
# The guard's pace here: withdrawn within postgresql_misses x interval of a stop.
GUARD_SETTINGS: dict[str, object] = {
    "serve": "postgresql",
    "mode": "guarded",
    "interval": 0.2,
    "lease": 3.0,
    "postgresql_timeout": 0.15,
    "postgresql_misses": 3,
    "drain_seconds": 0.0,
    "drain_timeout": 0.0,
    "metrics_file": "",
}


def ospfd_conf() -> str:
    """frr-fallback.conf up to its BGP section (an operator keeps the protocol the
    balancers use), with pg1's address for the file's."""
    text = EXAMPLE.read_text()
    for needed in (BGP_MARKER, EXAMPLE_ADDRESS, "interface eth0\n"):
        if needed not in text:
            raise RuntimeError(f"{EXAMPLE.name} no longer contains {needed.strip()!r}")
    return text.split(BGP_MARKER)[0].replace(EXAMPLE_ADDRESS, PRIMARY.base_ip)


def hook_program() -> str:
    """The checkout's console script, beside the interpreter (the dev venv's)."""
    program = Path(sys.executable).with_name("pgpool-anycast-hook")
    if not program.exists():
        raise RuntimeError(f"no {program}: run scripts/setup-dev.sh and use its venv")
    return str(program)


def guard_config() -> Path:
    """The guard's files: config.toml (root's, 0644, in root's 0755 directory), and a
    directory of postgres's for its socket, guard.json and state."""
    if FALLBACK_DIR.exists():
        shutil.rmtree(FALLBACK_DIR)
    FALLBACK_DIR.mkdir(mode=0o755, parents=True)
    run_dir = FALLBACK_DIR / "run"
    run_dir.mkdir(mode=0o755)
    pg = pwd.getpwnam("postgres")
    os.chown(run_dir, pg.pw_uid, pg.pw_gid)
    settings = {
        **GUARD_SETTINGS,
        "addresses": [ANYCAST_PREFIX],
        "guard_socket": str(run_dir / "guard.sock"),
        "state_dir": str(run_dir),
        "syslog_address": str(FALLBACK_DIR / "no-syslog"),  # stderr, into guard.log
        "postgresql_socket_dir": str(postgres.socket_dir(PRIMARY)),
        "postgresql_port": POSTGRES_PORT,
        "postgresql_user": postgres.GUARD_ROLE,
    }
    config = FALLBACK_DIR / "config.toml"
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    config.chmod(0o644)
    return config


def start() -> None:
    """pg1's routing daemon, its guard and the port redirect (see the module's doc);
    on any failure whatever was started is stopped again."""
    stop()
    try:
        _start()
    except BaseException:
        stop()
        raise


def _start() -> None:
    config = guard_config()
    frr.start_instance(PG1_FRR, {"zebra": "hostname lab-pg1\n", "ospfd": ospfd_conf()})
    frr.start_daemon(PG1_FRR, "zebra")
    frr.start_daemon(PG1_FRR, "ospfd")
    redirect_port()
    argv = [*AS_POSTGRES_NET_ADMIN, hook_program(), "--config", str(config), "guard"]
    netns.start_recorded(GUARD_RECORD, PRIMARY.netns, argv, FALLBACK_DIR / "guard.log")


def stop() -> None:
    """The guard (it withdraws on SIGTERM), pg1's FRR, the redirect; bounded, idempotent."""
    state.stop_matching(lambda name: name == GUARD_RECORD)
    frr.stop_instance(PG1_FRR)
    netns.ns_run(PRIMARY.netns, ["nft", "delete", "table", "ip", NFT_TABLE], check=False)
    # A guard ended before it could withdraw leaves a leased address: remove it now.
    netns.ns_run(PRIMARY.netns, ["ip", "addr", "del", ANYCAST_PREFIX, "dev", "lo"], check=False)


def is_running() -> bool:
    """Whether any part of the fallback is recorded in the lab's state."""
    return any(p.name == GUARD_RECORD or PG1_FRR.owns(p.name) for p in state.load().processes)


def redirect_port() -> None:
    """ANYCAST:PGPOOL_PORT to PostgreSQL's port on pg1 (its own address on the
    incoming interface, where PostgreSQL listens)."""
    rules = (
        f"table ip {NFT_TABLE} {{\n"
        " chain prerouting {\n"
        "  type nat hook prerouting priority dstnat; policy accept;\n"
        f"  ip daddr {ANYCAST} tcp dport {PGPOOL_PORT} redirect to :{POSTGRES_PORT}\n"
        " }\n"
        "}\n"
    )
    netns.ns_run(PRIMARY.netns, ["nft", "-f", "-"], input_text=rules)


def has_address() -> bool:
    """Whether pg1's lo holds the anycast address (the guard announces)."""
    return ANYCAST_PREFIX in netns.addresses(PRIMARY.netns, "lo")


def guard_log() -> str:
    """The end of the guard's stderr, for failure messages."""
    path = FALLBACK_DIR / "guard.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""
