"""The check's rise/fall machine, checked against a simple model over random runs; and
the guarded mode's `check`, which only probes: it never reaches the addresses or check.json.
"""

import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook import health_check
from pgpool_anycast_hook.check_state import Action, CheckState, Health, action_for, next_state
from pgpool_anycast_hook.config import Config
from pgpool_anycast_hook.run_log import RunLog

Step = tuple[bool, bool]  # (probe ok, hold set)


def run(steps: list[Step], rise: int, fall: int) -> list[CheckState]:
    state = CheckState()
    seen = []
    for ok, hold in steps:
        state = next_state(state, ok, hold, rise, fall)
        seen.append(state)
    return seen


@given(
    steps=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60),
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
)
def test_against_a_model(steps: list[Step], rise: int, fall: int) -> None:
    """Withdrawn exactly after `fall` failures in a row; back exactly after `rise` answers."""
    announced = True  # INIT: pgpool's start-up already announced
    oks = fails = 0
    for (ok, hold), state in zip(steps, run(steps, rise, fall), strict=True):
        if hold:
            announced, oks, fails = False, 0, 0
            assert state == CheckState(Health.DISABLED, 0)
            continue
        oks, fails = (oks + 1, 0) if ok else (0, fails + 1)
        if announced and fails >= fall:
            announced = False
        elif not announced and oks >= rise:
            announced = True
        action = action_for(state)
        if announced:
            assert state.health in (Health.UP, Health.FALLING)
            assert action in (Action.FOLLOW_DESIRED, Action.KEEP)
        else:
            assert state.health in (Health.DOWN, Health.RISING)
            assert action in (Action.WITHDRAW, Action.KEEP)
        if state.health is Health.FALLING:
            assert state.streak == fails < fall
        if state.health is Health.RISING:
            assert state.streak == oks < rise


@given(rise=st.integers(1, 5), fall=st.integers(1, 5))
def test_sigstop_then_sigcont(rise: int, fall: int) -> None:
    states = run([(True, False)] + [(False, False)] * fall + [(True, False)] * rise, rise, fall)
    assert states[0].health is Health.UP
    assert states[fall].health is Health.DOWN and action_for(states[fall]) is Action.WITHDRAW
    assert all(s.health is not Health.DOWN for s in states[:fall])
    assert states[-1].health is Health.UP and action_for(states[-1]) is Action.FOLLOW_DESIRED
    assert all(s.health is Health.RISING for s in states[fall + 1 : -1])


def test_a_blip_shorter_than_fall_changes_nothing() -> None:
    states = run([(True, False), (False, False), (False, False), (True, False)], 2, 3)
    assert [s.health for s in states] == [Health.UP, Health.FALLING, Health.FALLING, Health.UP]
    assert [action_for(s) for s in states[1:3]] == [Action.KEEP, Action.KEEP]


def test_hold_withdraws_at_once_and_lifting_it_rises() -> None:
    states = run([(True, True), (True, False), (True, False)], 2, 3)
    assert [s.health for s in states] == [Health.DISABLED, Health.RISING, Health.UP]
    assert action_for(states[0]) is Action.WITHDRAW


# -- the guarded mode's check: a probe and nothing else ----------------------------------


@pytest.fixture
def answering_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 whose listener answers every SSLRequest with 'N', as pgpool."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            with client:
                client.recv(8)
                client.sendall(b"N")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    server.close()


def refused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connect() is refused)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def guarded_config(tmp_path: Path, port: int) -> Config:
    conf = tmp_path / "pgpool.conf"
    conf.write_text(
        f"port = {port}\nlisten_addresses = 'localhost'\n"
        f"socket_dir = '{tmp_path}'\nunix_socket_directories = '{tmp_path}'\n"
    )
    return Config(
        mode="guarded",
        addresses=(ipaddress.ip_interface("198.18.2.0/32"),),
        pgpool_conf=str(conf),
        state_dir=str(tmp_path),
        check_timeout=1.0,
        syslog_address=str(tmp_path / "no-syslog"),
    )


@pytest.fixture
def nothing_may_act(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way `check` could change an address or its state fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the guarded check tried to act")

    for name in ("withdraw", "follow"):
        monkeypatch.setattr(health_check.announcement, name, forbidden)
    for name in ("run_lock", "save_state", "observe", "withdrawal_mark"):
        monkeypatch.setattr(health_check, name, forbidden)


@pytest.mark.usefixtures("nothing_may_act")
@pytest.mark.parametrize("dry_run", [False, True])
def test_guarded_check_of_an_answering_pgpool_exits_0_and_acts_on_nothing(
    tmp_path: Path, answering_port: int, dry_run: bool
) -> None:
    log = RunLog(action="check")
    code = health_check.run_check(guarded_config(tmp_path, answering_port), dry_run, log)
    assert code == 0
    assert log.emitted is not None
    assert log.emitted["probe"] == "ok" and log.emitted["changed"] == "none"
    assert log.emitted["result"] == "ok" and log.emitted["exit"] == 0
    assert not (tmp_path / health_check.STATE_FILE).exists()


@pytest.mark.usefixtures("nothing_may_act")
def test_guarded_check_of_a_silent_pgpool_exits_1_and_acts_on_nothing(tmp_path: Path) -> None:
    log = RunLog(action="check")
    code = health_check.run_check(guarded_config(tmp_path, refused_port()), False, log)
    assert code == 1
    assert log.emitted is not None
    assert log.emitted["probe"] == "failed" and log.emitted["changed"] == "none"
    assert log.emitted["result"] == "unhealthy" and log.emitted["exit"] == 1
    assert not (tmp_path / health_check.STATE_FILE).exists()


def test_only_the_standalone_check_acts_on_addresses() -> None:
    assert health_check.acts_on_addresses(Config(mode="standalone"))
    assert not health_check.acts_on_addresses(Config(mode="guarded"))
