"""Time (DESIGN invariant 14): nothing served past its use-by time after a wall-clock jump or a
process freeze; a mint whose deadline passed while the process was frozen restarts.

A jump of the wall clock while the monotonic clock stands still is a laptop's sleep: the fake
clock (the cache's wall clock) moves, from inside the fake AWS call, while the service loop's
monotonic time does not. A freeze is emulated by stalling the service loop's thread (the process
did not run its loop) for longer than the mint's deadline. Tests assert counts and states.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from iampool import AwsIamConfig, CredentialCache, CredentialError, auth_for
from iampool._aws import AwsCredentials, RedshiftLogin
from iampool._cache import mint_context
from iampool._minting import sts_key
from iampool._service import Stopwatch

from .fakes import FakeClock, FakeSource, aws_credentials, wait_until
from .test_cache import ROLE

pytestmark = pytest.mark.anyio

CLUSTER = AwsIamConfig.from_extra(
    {
        "enabled": True,
        "region": "us-east-1",
        "role_arn": "arn:aws:iam::123456789012:role/app-db",
        "db_username": "report",
        "cluster_identifier": "analytics",
        "db_name": "dev",
    }
)
HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"
TWO_HOURS = 7200.0


class SleepingSource(FakeSource):
    """A fake AWS whose next call's answer arrives after a jump of the wall clock (the laptop
    slept with the call in flight), or after a stall of the service loop (a freeze)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.jump_after_assume_role = 0.0
        self.jump_after_login = 0.0
        self.stall_assume_role = 0.0
        self.started = 0  # AssumeRole calls begun (``calls`` counts those that got through)

    async def assume_role(self, **request: Any) -> AwsCredentials:
        self.started += 1
        stall, self.stall_assume_role = self.stall_assume_role, 0.0
        if stall:
            time.sleep(stall)  # noqa: ASYNC251 (the point: the service loop does not run)
            await asyncio.sleep(0.01)  # then the call still waits on its socket
        credentials = await super().assume_role(**request)
        self._jump("jump_after_assume_role")
        return credentials

    async def _login(self, *args: Any) -> RedshiftLogin:
        login = await super()._login(*args)
        self._jump("jump_after_login")
        return login

    def _jump(self, which: str) -> None:
        seconds = getattr(self, which)
        setattr(self, which, 0.0)
        assert isinstance(self.clock, FakeClock)
        self.clock.advance(seconds)


@pytest.fixture
def source(clock: FakeClock) -> SleepingSource:
    return SleepingSource(clock)


async def test_a_token_whose_credentials_expired_in_flight_is_not_served(
    cache: CredentialCache, source: SleepingSource, clock: FakeClock
) -> None:
    source.jump_after_assume_role = TWO_HOURS  # the hour-long credentials expire on the way
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)

    credentials = await auth.credentials()

    assert credentials.expires_at.timestamp() > clock.now  # not the expired first credentials
    assert source.calls == Counter(AssumeRole=2)
    assert cache.stats()["tokens_signed"] == 1  # nothing was signed with the expired ones
    assert await auth.credentials() is credentials


async def test_aws_credentials_that_expired_in_flight_are_minted_again(
    cache: CredentialCache, source: SleepingSource, clock: FakeClock
) -> None:
    source.jump_after_assume_role = TWO_HOURS
    credentials = await aws_credentials(cache, ROLE)
    assert credentials.expires_at is not None
    assert credentials.expires_at > clock.now
    assert credentials.access_key_id == "ASIAFAKE000000000002"


async def test_a_redshift_password_that_expired_in_flight_is_not_served(
    cache: CredentialCache, source: SleepingSource, clock: FakeClock
) -> None:
    source.jump_after_login = TWO_HOURS  # the 15-minute password expires on the way
    auth = auth_for(CLUSTER, cache=cache)

    credentials = await auth.credentials()

    assert credentials.expires_at.timestamp() > clock.now
    assert credentials.password == source.passwords[-1]
    assert len(source.passwords) == 2


async def test_values_that_always_arrive_expired_fail_with_a_clock_hint(
    cache: CredentialCache, source: SleepingSource
) -> None:
    source.lifetime = -10.0  # AWS's clock is hours behind this machine's
    with pytest.raises(CredentialError) as caught:
        await aws_credentials(cache, ROLE)
    assert caught.value.code == "Expired"
    assert "clock" in str(caught.value)
    assert source.calls == Counter(AssumeRole=2)  # one more try, not a loop


def test_a_blocking_lookup_also_refuses_a_value_that_expired_in_flight(
    cache: CredentialCache, source: SleepingSource, clock: FakeClock
) -> None:
    source.jump_after_assume_role = TWO_HOURS
    context = mint_context(cache)
    credentials: AwsCredentials = context.leases.get_blocking(
        sts_key(ROLE), lambda: context.mint_aws_credentials(ROLE)
    )
    assert credentials.expires_at is not None
    assert credentials.expires_at > clock.now
    assert source.calls == Counter(AssumeRole=2)


async def test_a_mint_whose_deadline_passed_during_a_freeze_restarts_instead_of_failing(
    new_cache: Callable[..., CredentialCache], source: SleepingSource
) -> None:
    cache = new_cache(deadline=0.3)
    source.stall_assume_role = 2.8  # longer than the deadline and the freeze threshold

    credentials = await aws_credentials(cache, ROLE)  # old code: "Timed out after 0.3 s"

    assert isinstance(credentials, AwsCredentials)
    assert source.started == 2  # the frozen attempt, then a fresh one
    assert source.calls == Counter(AssumeRole=1)
    assert cache.stats()["errors"] == 0


async def test_a_token_cached_before_the_clock_was_set_back_is_signed_again(
    cache: CredentialCache, source: SleepingSource, clock: FakeClock
) -> None:
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    first = await auth.credentials()
    clock.advance(-3600.0)  # NTP set the clock back an hour: the token's date is ahead

    again = await auth.credentials()

    assert again is not first
    assert again.expires_at.timestamp() == int(clock.now) + 900  # dated by the clock as it is
    assert cache.stats()["tokens_signed"] == 2
    assert await auth.credentials() is again


async def test_a_refresh_backoff_does_not_stretch_when_the_clock_is_set_back(
    cache: CredentialCache, source: SleepingSource, clock: FakeClock
) -> None:
    first = await aws_credentials(cache, ROLE)
    clock.advance(550.0)  # inside the refresh window
    source.failures.append(CredentialError("Throttling.", code="Throttling"))
    assert await aws_credentials(cache, ROLE) is first  # the refresh fails: a 1 s backoff
    await wait_until(lambda: cache.stats()["refresh_failures"] == 1)

    clock.advance(-3600.0)  # the backoff would now end an hour from here
    assert await aws_credentials(cache, ROLE) is first
    await wait_until(lambda: cache.stats()["refreshes"] == 1)  # retried at once
    assert source.calls == Counter(AssumeRole=3)


def test_stopwatch_counts_running_time_and_restarts_after_a_freeze(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("iampool._service.time", _FakeTime(now))
    watch = Stopwatch()
    now[0] += 0.5
    watch.lap(0.5)
    now[0] += 0.7  # late, but within the freeze threshold: a busy machine
    watch.lap(0.5)
    assert watch.elapsed == pytest.approx(1.2)
    assert not watch.froze
    now[0] += 100.0  # SIGSTOP for 100 s
    watch.lap(0.5)
    assert (watch.elapsed, watch.froze) == (0.0, True)
    now[0] += 0.5
    watch.lap(0.5)
    assert watch.elapsed == pytest.approx(0.5)


class _FakeTime:
    def __init__(self, now: list[float]) -> None:
        self._now = now

    def monotonic(self) -> float:
        return self._now[0]
