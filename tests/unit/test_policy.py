"""policy.verdict, the one answer to "should the addresses be announced?", exhaustively."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook import policy
from pgpool_anycast_hook.policy import Facts, verdict

FLAGS = [True, False]


def test_every_combination() -> None:
    count = 0
    for configured, hold, alive, listening, usable, going in itertools.product(FLAGS, repeat=6):
        judged = verdict(Facts(configured, hold, alive, listening, usable, 0, going))
        wanted = configured and not going and not hold and alive and listening and usable
        assert judged.present is wanted
        assert judged.reason
        count += 1
    assert count == 64


@given(
    configured=st.booleans(),
    hold=st.booleans(),
    alive=st.booleans(),
    listening=st.booleans(),
    usable=st.booleans(),
    going=st.booleans(),
    node=st.integers(0, 127),
)
def test_the_reason_is_the_first_failing_condition(
    configured: bool, hold: bool, alive: bool, listening: bool, usable: bool, going: bool, node: int
) -> None:
    judged = verdict(Facts(configured, hold, alive, listening, usable, node, going))
    checks = [
        (configured, policy.NO_ADDRESSES),
        (not going, policy.PRIMARY_GOING_AWAY.format(node=node)),
        (not hold, policy.HOLD),
        (alive, policy.PGPOOL_DOWN),
        (listening, policy.NOT_LISTENING),
        (usable, policy.PRIMARY_DOWN.format(node=node)),
    ]
    first_failing = next((reason for ok, reason in checks if not ok), None)
    assert judged.reason == (first_failing or policy.SERVES.format(node=node))
    assert judged.present is (first_failing is None)
