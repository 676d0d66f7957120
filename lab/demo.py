"""`python3 -m lab demo`: the article's topology, its ECMP spread, a pgpool crash and its
recovery, told step by step with the router's route table before and after. In the BGP
profile the same for the IPv6 anycast address beside the IPv4 one. In the two-site
profile: each site's clients on their own site's balancers, then site A's pgpools
stopped, its clients served across the inter-site link by site B, and back."""

from __future__ import annotations

import time
from collections import Counter

from lab import frr, netns, postgres
from lab.balancers import Balancer, Wiring
from lab.hosts import (
    ANYCAST,
    ANYCAST6,
    ANYCAST6_PREFIX,
    ANYCAST_PREFIX,
    BALANCERS,
    CLIENT,
    CLIENT2,
    PGPOOL_PORT,
    ROUTER,
    ROUTER2,
    ROUTER2_SITE_IP,
    SITE_A,
    SITE_B,
    SITE_COST,
    Host,
    backend_by_ip,
    balancer_by_ip,
)
from lab.measure import RouteWatch
from lab.topology import Lab, run_parallel

CONNECTIONS = 30
WHO_ANSWERED = "select host(inet_client_addr()), host(inet_server_addr())"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"   {line}")


def psql_who(
    target: str = ANYCAST, timeout: int = 3, client: Host = CLIENT
) -> tuple[str, str] | str:
    """One new psql connection from a client to an anycast address: who answered."""
    argv = [
        "env", f"PGCONNECT_TIMEOUT={timeout}", str(postgres.PG_BIN / "psql"),
        "-X", "-A", "-t", "-F", " ", "-h", target, "-p", str(PGPOOL_PORT),
        "-U", "postgres", "-c", WHO_ANSWERED,
    ]  # fmt: skip
    proc = netns.ns_run(client.netns, argv, check=False, timeout=timeout + 10)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
    client_addr, server_addr = proc.stdout.split()
    return balancer_by_ip(client_addr), backend_by_ip(server_addr)


def spread(count: int, target: str = ANYCAST, client: Host = CLIENT) -> Counter[str]:
    """`count` connections, one table row each; returns how many each balancer served."""
    print(f"   {'#':>3}  {'balancer (inet_client_addr)':<28} backend (inet_server_addr)")
    per_balancer: Counter[str] = Counter()
    for index in range(1, count + 1):
        answer = psql_who(target, client=client)
        if isinstance(answer, str):
            print(f"   {index:>3}  FAILED: {answer}")
            per_balancer["failed"] += 1
            continue
        balancer, backend = answer
        per_balancer[balancer] += 1
        print(f"   {index:>3}  {balancer:<28} {backend}")
    summary = ", ".join(
        f"{name} {per_balancer[name]}"
        for name in [b.name for b in BALANCERS] + ["failed"]
        if per_balancer[name]
    )
    print(f"   -> {summary}")
    return per_balancer


def settled_state(bal: Balancer, timeout: float = 30.0) -> str:
    """pgpool2.service's state once its stop sequence (ExecStopPost) is over, bounded."""
    deadline = time.monotonic() + timeout
    state = bal.unit_state()
    while state in ("active", "deactivating") and time.monotonic() < deadline:
        time.sleep(0.1)
        state = bal.unit_state()
    return state


def show_routes(lab: Lab) -> None:
    show(f"$ ip route show {ANYCAST_PREFIX}")
    show(frr.route_text())
    if lab.profile.announces_ipv6:
        show(f"$ ip -6 route show {ANYCAST6_PREFIX}")
        show(frr.route_text(ANYCAST6_PREFIX))


def run(lab: Lab) -> None:
    if lab.profile.two_sites:
        run_two_sites(lab)
        return
    victim = lab.balancers["bal1"]
    how = {
        "ospf": "OSPF (FRR, BFD on every adjacency)",
        "bgp": "eBGP over IPv4 and IPv6 (FRR on bal1 and bal2, BIRD 2 on bal3; BFD on "
        "every session)",
    }[lab.profile.value]
    step(f"Routing profile {lab.profile.value}: the balancers announce through {how}")
    step("The router's route to the anycast address: one next hop per balancer (ECMP)")
    show("(in the router's namespace)")
    show_routes(lab)

    step(f"{CONNECTIONS} separate connections from the client to {ANYCAST}:{PGPOOL_PORT}")
    spread(CONNECTIONS)
    if lab.profile.announces_ipv6:
        step(f"{CONNECTIONS} more over IPv6, to [{ANYCAST6}]:{PGPOOL_PORT}")
        spread(CONNECTIONS, ANYCAST6)

    step(f"Crash: kill -9 of the pgpool main process on {victim.name}")
    cursor = victim.journal_cursor()
    with RouteWatch(duration=60) as watch:
        main_pid = victim.pgpool_main_pid()
        killed_at = victim.kill_pgpool()
        show(f"killed pgpool main process (PID {main_pid} inside {victim.name})")
        dropped_at, _ = watch.wait_for(
            lambda h: victim.host.ospf_ip not in h, 30.0, after=killed_at
        )
    show(
        f"the router dropped {victim.host.ospf_ip} {1000 * (dropped_at - killed_at):.0f} ms "
        "after the kill"
    )
    show(f"pgpool2.service is now: {settled_state(victim)}")
    if lab.wiring is Wiring.GUARD:
        show("The guard held a pidfd on pgpool's main process and withdrew the moment it")
        show("became readable; systemd's ExecStopPost `del` came after and found nothing")
        show("left to withdraw. What the guard and the unit logged:")
    else:
        show("systemd ran the drop-in's ExecStopPost; what the unit logged:")
    show("\n".join(victim.hook_lines(cursor)))
    show_routes(lab)

    step("New connections keep working through the two other balancers")
    spread(10)

    step(f"Recovery: systemctl start pgpool2 on {victim.name}")
    show("(Debian's unit and the drop-in have no Restart=; an operator, or a Restart=on-failure")
    show(" drop-in of your own, starts it again. ExecStartPost waits until pgpool accepts")
    if lab.wiring is Wiring.GUARD:
        show(" connections and tells the guard. After a crash the guard owes a hold-down: it")
        show(" announces once its own probe has answered check_rise (2) times in a row and")
        show(" pgpool then stayed healthy for hold_down (5 s) without a break.)")
    else:
        show(" connections, then announces the address.)")
    cursor = victim.journal_cursor()
    with RouteWatch(duration=120) as watch:
        started_at = time.monotonic()
        victim.start_pgpool()
        back_at, _ = watch.wait_for(lambda h: victim.host.ospf_ip in h, 60.0, after=started_at)
    show(
        f"the router has {victim.host.ospf_ip} again {1000 * (back_at - started_at):.0f} ms "
        "after `systemctl start` began"
    )
    show("\n".join(victim.hook_lines(cursor)))
    show_routes(lab)

    step(f"{CONNECTIONS} connections again")
    spread(CONNECTIONS)


def show_site_routes() -> None:
    """Both routers' routes to the anycast /32: each site's own view."""
    for router, site in ((ROUTER, "A"), (ROUTER2, "B")):
        show(f"$ ip route show {ANYCAST_PREFIX}   (on {router.name}, site {site})")
        show(frr.route_text(router=router))


def run_two_sites(lab: Lab) -> None:
    """The two-site story: locality, site A's pgpools stopped and its clients served by
    site B, then site A back."""
    site_a = [lab.balancers[name] for name in SITE_A]
    step(
        f"Two sites: {', '.join(SITE_A)} behind the router (site A), {', '.join(SITE_B)} "
        f"behind router2 (site B), OSPF area 0 over an inter-site link of cost {SITE_COST}"
    )
    show("Every balancer announces the same external route; each router prefers the")
    show("balancers it reaches at the lower cost, its own site's.")
    show_site_routes()

    step(f"{CONNECTIONS} connections from site A's client, 10 from site B's client2")
    spread(CONNECTIONS)
    spread(10, client=CLIENT2)

    step(f"Site A goes away: systemctl stop pgpool2 on {' and '.join(SITE_A)}")
    with RouteWatch(duration=90) as watch:
        stopped_at = time.monotonic()
        run_parallel([bal.stop_pgpool for bal in site_a])
        crossed_at, _ = watch.wait_for(
            lambda hops: hops == [ROUTER2_SITE_IP], 30.0, after=stopped_at
        )
    show(
        f"the router sends the anycast address to router2 {1000 * (crossed_at - stopped_at):.0f}"
        " ms after the stop began (the drains' withdrawals, then OSPF)"
    )
    show_site_routes()

    step("Site A's clients are served across the inter-site link, by site B")
    spread(10)

    step(f"Site A is back: systemctl start pgpool2 on {' and '.join(SITE_A)}")
    site_a_hops = {bal.host.ospf_ip for bal in site_a}
    with RouteWatch(duration=90) as watch:
        started_at = time.monotonic()
        run_parallel([bal.start_pgpool for bal in site_a])
        back_at, _ = watch.wait_for(lambda hops: set(hops) == site_a_hops, 60.0, after=started_at)
    show(f"both site A balancers are next hops again {1000 * (back_at - started_at):.0f} ms later")
    show_site_routes()

    step(f"{CONNECTIONS} connections from site A's client again")
    spread(CONNECTIONS)
