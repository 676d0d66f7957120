"""desired_presence for every combination of the five facts."""

import itertools

from pgpool_anycast_hook.desired_state import Facts, desired_presence


def test_every_combination() -> None:
    count = 0
    for configured, hold, alive, listening, usable in itertools.product([True, False], repeat=5):
        desire = desired_presence(Facts(configured, hold, alive, listening, usable, 0))
        assert desire.present is (configured and not hold and alive and listening and usable)
        assert desire.reason
        count += 1
    assert count == 32


def test_reasons_name_the_first_failing_condition() -> None:
    assert desired_presence(Facts(False, True, False, False, False)).reason == (
        "no addresses configured"
    )
    assert "hold" in desired_presence(Facts(True, True, False, False, False)).reason
    assert "not running" in desired_presence(Facts(True, False, False, True, True)).reason
    assert "connections" in desired_presence(Facts(True, False, True, False, True)).reason
    assert "node 2 down" in desired_presence(Facts(True, False, True, True, False, 2)).reason
    assert desired_presence(Facts(True, False, True, True, True)).present
