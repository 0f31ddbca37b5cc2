"""The gateway's login throttles (testing/_throttle.py), on an injected clock."""

from __future__ import annotations

import pytest

from iampool.testing._throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rds_counts_distinct_tokens_per_second_and_lets_a_known_token_through() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, reuse_free=True, clock=clock)

    assert [throttle.allows(token) for token in ("a", "b", "c", "a", "b", "a")] == [
        True,
        True,
        False,  # a third distinct token within the second
        True,  # reused: not counted
        True,
        True,
    ]
    clock.now += 1.0  # the second has passed
    assert [throttle.allows(token) for token in ("c", "d", "e")] == [True, True, False]
    clock.now += 900.0  # a token past its 15 minutes counts again
    assert [throttle.allows(token) for token in ("a", "b", "c")] == [True, True, False]


def test_dsql_counts_every_connection_whatever_its_token() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, reuse_free=False, clock=clock)

    assert [throttle.allows("same") for _ in range(5)] == [True, True, True, False, False]
    clock.now += 0.5
    assert throttle.allows("same") is False  # a sliding second
    clock.now += 0.5
    assert [throttle.allows("same") for _ in range(4)] == [True, True, True, False]


def test_a_rate_of_zero_refuses_all_and_a_negative_one_is_an_error() -> None:
    assert LoginThrottle(0, reuse_free=False).allows("x") is False
    with pytest.raises(ValueError, match="login_rate"):
        LoginThrottle(-1, reuse_free=True)
