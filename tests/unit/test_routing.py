"""status --routing's frame: the configuration keys, the bounded runner, the "unknown"
answers when no daemon can be asked, and how drift reaches the report and the exit code.

The daemons themselves are in tests/netns/test_routing.py; here nothing but small real
subprocesses and Unix sockets in a temporary directory.
"""

import ipaddress
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook import routing, status_report
from pgpool_anycast_hook.config import Config, validate
from pgpool_anycast_hook.errors import ConfigError, ExitCode
from pgpool_anycast_hook.routing import RoutingAnswer, ask

A4 = ipaddress.ip_interface("198.18.2.0/32")
A6 = ipaddress.ip_interface("2001:db8:250::1/128")


@pytest.mark.parametrize(
    "key,value",
    [
        ("routing_daemon", "quagga"),
        ("routing_daemon", 1),
        ("routing_timeout", 0),
        ("routing_timeout", 31),
        ("routing_timeout", True),
        ("frr_vty_socket", "run/frr"),
        ("frr_vty_socket", ""),
        ("bird_socket", "bird.ctl"),
    ],
)
def test_bad_routing_keys(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        validate({key: value}, "/etc/x.toml")


def test_routing_defaults() -> None:
    config = Config()
    assert (config.routing_daemon, config.routing_timeout) == ("auto", 2.0)
    assert (config.frr_vty_socket, config.bird_socket) == ("/run/frr", "/run/bird/bird.ctl")
    typed = validate({"routing_daemon": "bird", "routing_timeout": 0.5}, "/etc/x.toml")
    assert typed == {"routing_daemon": "bird", "routing_timeout": 0.5}


def _config(tmp_path: Path, **settings: Any) -> Config:
    base: dict[str, Any] = {
        "addresses": (A4, A6),
        "frr_vty_socket": str(tmp_path / "frr"),
        "bird_socket": str(tmp_path / "bird" / "bird.ctl"),
    }
    base.update(settings)
    return Config(**base)


def test_none_is_not_asked(tmp_path: Path) -> None:
    answer = ask(_config(tmp_path, routing_daemon="none"), [A4.network])
    assert answer.state == "off" and answer.announced_by == {}


@pytest.mark.parametrize(
    "daemon,reason",
    [
        ("auto", "no routing daemon found"),
        ("frr", "no directory"),
        ("bird", "nothing listens on"),
    ],
)
def test_nothing_to_ask_is_unknown(tmp_path: Path, daemon: str, reason: str) -> None:
    answer = ask(_config(tmp_path, routing_daemon=daemon), [A4.network])
    assert answer.state == "unknown" and reason in answer.detail


def test_stale_frr_sockets_are_unknown(tmp_path: Path) -> None:
    (tmp_path / "frr").mkdir()
    for name in ("zebra", "ospfd"):  # bound once, nobody listening now: refused
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(tmp_path / "frr" / f"{name}.vty"))
        stale.close()
    answer = ask(_config(tmp_path, routing_daemon="auto"), [A4.network])
    assert (answer.daemon, answer.state) == ("frr", "unknown")
    assert "no daemon answers" in answer.detail


def test_zebra_alone_announces_nothing(tmp_path: Path) -> None:
    (tmp_path / "frr").mkdir()
    zebra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    zebra.bind(str(tmp_path / "frr" / "zebra.vty"))
    zebra.listen(4)
    try:
        answer = ask(_config(tmp_path), [A4.network, A6.network])
    finally:
        zebra.close()
    assert (answer.daemon, answer.state) == ("frr", "ok")
    assert answer.announced_by == {A4.network: (), A6.network: ()}
    assert "none of ospfd, ospf6d, bgpd" in answer.detail


def test_runner_bounds_time_and_output() -> None:
    assert routing._run(["/bin/echo", "hi"], routing._Clock(5.0)) == (0, "hi\n", "")
    started = time.monotonic()
    with pytest.raises(routing._Unknown, match="did not answer within routing_timeout"):
        routing._run(["/bin/sleep", "30"], routing._Clock(0.3))
    assert time.monotonic() - started < 3.0
    with pytest.raises(routing._Unknown, match="answered over"):
        routing._run(["/usr/bin/yes"], routing._Clock(10.0))
    with pytest.raises(routing._Unknown, match="cannot run"):
        routing._run(["/nonexistent/vtysh"], routing._Clock(1.0))


def _seen(present: dict[Any, bool]) -> Any:
    return SimpleNamespace(presence=SimpleNamespace(addresses=present))


def test_drift_both_ways_and_unknown() -> None:
    answer = RoutingAnswer("frr", "ok", "asked ospfd", {A4.network: (), A6.network: ("ospf6",)})
    report = status_report.routing_report(answer, _seen({A4: True, A6: False}))
    assert report["drift"] == [
        {"address": str(A4), "problem": "present but not announced"},
        {"address": str(A6), "problem": "announced but absent"},
    ]
    assert report["matches"] is False
    data = {"matches": True, "routing": report}
    assert status_report.exit_code(data) == ExitCode.DRIFT
    assert "DRIFT" in status_report._routing_row(report)

    unknown = RoutingAnswer(
        "bird", "unknown", "permission denied: x (the user needs group bird)", {}
    )
    report = status_report.routing_report(unknown, _seen({A4: True}))
    assert report["matches"] is None and report["drift"] == []
    assert status_report.exit_code({"matches": True, "routing": report}) == ExitCode.OK
    assert status_report.exit_code({"matches": False, "routing": report}) == ExitCode.DRIFT
    assert status_report._routing_row(report).startswith("bird: unknown (permission denied")
    assert status_report._announced(None, A4.network) == {}  # without --routing: no keys
    assert status_report._announced(unknown, A4.network) == {
        "announced": None,
        "announced_by": None,
    }

    consistent = RoutingAnswer("frr", "ok", "asked bgpd", {A4.network: ("bgp to 10.0.0.2",)})
    report = status_report.routing_report(consistent, _seen({A4: True}))
    assert report["matches"] is True
    assert status_report.exit_code({"matches": True, "routing": report}) == ExitCode.OK
    assert status_report.exit_code({"matches": True, "routing": None}) == ExitCode.OK


def test_auto_prefers_frr(tmp_path: Path) -> None:
    (tmp_path / "frr").mkdir()
    (tmp_path / "bird").mkdir()
    listeners = []
    for path in (tmp_path / "frr" / "zebra.vty", tmp_path / "bird" / "bird.ctl"):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4)
        listeners.append(listener)
    try:
        assert ask(_config(tmp_path), [A4.network]).daemon == "frr"
        (tmp_path / "frr" / "zebra.vty").unlink()
        answer = ask(_config(tmp_path, routing_timeout=0.5), [A4.network])
        assert answer.daemon == "bird"
        assert answer.state == "unknown"  # a listener that never greets: a hung BIRD
        assert "did not answer within routing_timeout" in answer.detail
    finally:
        for listener in listeners:
            listener.close()


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=6))
def test_drift_is_exactly_presence_against_announcement(pairs: list[tuple[bool, bool]]) -> None:
    addresses = [ipaddress.ip_interface(f"198.18.2.{i}/32") for i in range(len(pairs))]
    present = {a: p for a, (p, _) in zip(addresses, pairs, strict=True)}
    by = {a.network: ("ospf",) if n else () for a, (_, n) in zip(addresses, pairs, strict=True)}
    report = status_report.routing_report(RoutingAnswer("frr", "ok", "", by), _seen(present))
    assert report["matches"] is all(p == n for p, n in pairs)
    assert len(report["drift"]) == sum(p != n for p, n in pairs)
