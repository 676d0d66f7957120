"""`status`: what is, what should be, and whether they match; as a table or as JSON.

The JSON keys are a stable interface for monitoring; add keys, never rename them.
Exit 0 when the actual state matches the desired state, DRIFT (1) when not. With
`--routing` also DRIFT when the routing daemon's export disagrees with an address
(present but not announced, or announced but absent); a daemon that could not be
asked ("unknown") is shown but leaves the exit code alone: it is no evidence of drift.
"""

import json
from typing import TYPE_CHECKING, Any

from pgpool_anycast_hook.check_state import CheckState
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.errors import ExitCode
from pgpool_anycast_hook.observation import Observation, guard_record
from pgpool_anycast_hook.pool_view import ViewState, to_record

if TYPE_CHECKING:  # routing.py (subprocess, selectors) loads only with --routing
    from pgpool_anycast_hook.routing import RoutingAnswer


def report(
    config: Config,
    seen: Observation,
    check: CheckState | None,
    routing: "RoutingAnswer | None" = None,
) -> dict[str, Any]:
    desire = seen.desire(config)
    primary = config.primary_node_id
    actual = seen.presence.state() if config.addresses else "absent"
    wanted = "present" if desire.present else "absent"
    routes = seen.presence.serving_routes
    nodes = [
        {"node": i, "record": record.decode("ascii", "replace").strip(), "up": up}
        for i, (record, up) in enumerate(zip(seen.status.records, seen.status.up, strict=False))
    ]
    return {
        "interface": config.interface,
        "addresses": [
            {
                "address": str(address),
                "present": present,
                "serving_route": None if routes is None else routes.get(address, False),
                **_announced(routing, address.network),
            }
            for address, present in seen.presence.addresses.items()
        ],
        "pgpool": {
            "pid_file": seen.settings.pid_file,
            "pid": seen.pid,
            "alive": seen.alive,
            "port": seen.settings.port,
            "listening": str(seen.listening) if seen.listening else None,
        },
        "pgpool_status": {
            "file": seen.status_file,
            "format": seen.status.format.value,
            "note": seen.status.note,
            "nodes": nodes,
            "primary_node_id": "auto" if primary is None else primary,
            "primary_usable": None if primary is None else seen.status.node_usable(primary),
        },
        "announce_when": config.announce_when,
        "pool_nodes": None if seen.view.state is ViewState.OFF else to_record(seen.view),
        "hold": seen.hold._asdict() if seen.hold else None,
        "check": None if check is None else {"state": check.health.value, "count": check.streak},
        "mode": config.mode,
        "guard": guard_report(config) if config.mode == "guarded" else None,
        "desired": wanted,
        "reason": desire.reason,
        "reason_code": desire.code,
        "actual": actual,
        "matches": actual == wanted,
        "routing": None if routing is None else routing_report(routing, seen),
    }


def _announced(routing: "RoutingAnswer | None", network: Any) -> dict[str, Any]:
    """Per address, with --routing only: null unless the daemon was asked and answered."""
    if routing is None:
        return {}
    if routing.state != "ok":
        return {"announced": None, "announced_by": None}
    by = routing.announced_by.get(network, ())
    return {"announced": bool(by), "announced_by": list(by)}


def routing_report(routing: "RoutingAnswer", seen: Observation) -> dict[str, Any]:
    """`routing`: the daemon's answer; `matches` is null when it could not be asked."""
    drift = []
    if routing.state == "ok":
        for address, present in seen.presence.addresses.items():
            announced = bool(routing.announced_by.get(address.network))
            if present and not announced:
                drift.append({"address": str(address), "problem": "present but not announced"})
            elif announced and not present:
                drift.append({"address": str(address), "problem": "announced but absent"})
    return {
        "daemon": routing.daemon or None,
        "state": routing.state,
        "detail": routing.detail,
        "drift": drift,
        "matches": None if routing.state != "ok" else not drift,
    }


def guard_report(config: Config) -> dict[str, Any] | None:
    """What the guard last wrote into guard.json beside its socket, with the lease left."""
    import time

    from pgpool_anycast_hook.guard_state import lease_left

    data = guard_record(config)
    if data is None:
        return None
    renewed, lease = data.get("renewed_at"), data.get("lease")
    if isinstance(renewed, int | float) and isinstance(lease, int | float):
        data["lease_left"] = round(lease_left(lease, renewed, time.time()), 1)
    else:
        data["lease_left"] = None
    return data


def _routing_row(routing: dict[str, Any]) -> str:
    daemon = routing["daemon"] or "routing daemon"
    if routing["state"] == "off":
        return routing["detail"]
    if routing["state"] == "unknown":
        return f"{daemon}: unknown ({routing['detail']})"
    if routing["drift"]:
        problems = "; ".join(f"{d['address']} {d['problem']}" for d in routing["drift"])
        return f"{daemon}: DRIFT: {problems} ({routing['detail']})"
    return f"{daemon}: announcement matches the addresses ({routing['detail']})"


def _guard_row(guard: dict[str, Any] | None) -> str:
    if guard is None:
        return "not running (no guard.json)"
    last = guard.get("last_transition") or {}
    return (
        f"{guard.get('phase')}, pid {guard.get('pid')}, pgpool pid {guard.get('pgpool_pid')}, "
        f"probe {guard.get('health')} ({guard.get('streak')}), "
        f"lease left {guard.get('lease_left')} s, "
        f"hold-down left {guard.get('hold_down_left')} s; "
        f"last: {last.get('to')} ({last.get('reason')})"
    )


def exit_code(data: dict[str, Any]) -> int:
    routing = data.get("routing")
    announcement_drifts = routing is not None and routing["matches"] is False
    return int(ExitCode.OK if data["matches"] and not announcement_drifts else ExitCode.DRIFT)


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def as_table(data: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    if not data["addresses"]:
        rows.append(("addresses", "none configured"))
    for item in data["addresses"]:
        text = f"{'present' if item['present'] else 'absent'} on {data['interface']}"
        if item["serving_route"] is not None:
            text += f", serving route {'present' if item['serving_route'] else 'absent'}"
        if item.get("announced") is not None:
            by = ", ".join(item["announced_by"])
            text += f", announced ({by})" if item["announced"] else ", not announced"
        rows.append((f"address {item['address']}", text))
    pgpool = data["pgpool"]
    alive = f"alive, pid {pgpool['pid']}" if pgpool["alive"] else "not running"
    rows.append(("pgpool", f"{alive} ({pgpool['pid_file']})"))
    rows.append(("listening", pgpool["listening"] or f"no (port {pgpool['port']})"))
    status = data["pgpool_status"]
    rows.append(("pgpool_status", f"{status['file']} ({status['format']})"))
    for node in status["nodes"]:
        rows.append(
            (
                f"  node {node['node']}",
                f"{'up' if node['up'] else 'down'} ({node['record'] or 'empty'})",
            )
        )
    if status["primary_usable"] is not None:
        usable = "usable" if status["primary_usable"] else "down"
        rows.append((f"primary node {status['primary_node_id']}", usable))
    view = data.get("pool_nodes")
    if view is not None:
        primary = "none" if view["primary"] is None else view["primary"]
        text = f"{view['state']}, primary {primary}, {view['backends_up']} up"
        rows.append(("pool_nodes", text + (f" ({view['error']})" if view["error"] else "")))
        for node in view["nodes"]:
            rows.append((f"  node {node['node_id']}", f"{node['status']} {node['role']}"))
    hold = data["hold"]
    held = f"set {hold['since']} by {hold['by']}: {hold['reason'] or '-'}" if hold else "none"
    rows.append(("hold", held))
    if data["check"] is not None:
        rows.append(("check", f"{data['check']['state']} ({data['check']['count']})"))
    guard = data["guard"]
    if data["mode"] == "guarded":
        rows.append(("guard", _guard_row(guard)))
    rows.append(("desired", f"{data['desired']}: {data['reason']}"))
    rows.append(("actual", f"{data['actual']} ({'matches' if data['matches'] else 'DRIFT'})"))
    if data.get("routing") is not None:
        rows.append(("routing", _routing_row(data["routing"])))
    width = max(len(key) for key, _ in rows)
    return "".join(f"{key.ljust(width)}  {value}\n" for key, value in rows)
