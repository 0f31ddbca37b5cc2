"""Reliability of the credential core (issue 8): AWS failing past the ttl, cancellation storms,
and fork.

The fake source is gated from the test and a fake clock moves time (see fakes.py); tests assert
counts and states. Forking tests run the child's half in the child and read its exit status.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest

from iampool import AwsIamConfig, CredentialCache, CredentialError, auth_for
from iampool._aws import AwsCredentials
from iampool._leases import Lease
from iampool._minting import sts_key

from .fakes import (
    START,
    FakeClock,
    FakeSource,
    aws_credentials,
    leases,
    settle,
    wait_until,
    without_waiting,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")

ROLE = AwsIamConfig.from_extra(
    {
        "enabled": True,
        "region": "us-east-1",
        "role_arn": "arn:aws:iam::123456789012:role/app-db",
        "db_username": "app",
    }
)
OTHER_ROLE = AwsIamConfig.from_extra({**ROLE.to_dict(), "role_arn": ROLE.role_arn + "-other"})
HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"
SERVICE_THREAD = "iampool-credentials"


class ArrivalSource(FakeSource):
    """A ``FakeSource`` that says when an AssumeRole call has reached it (from any thread)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.arrived = threading.Event()

    async def assume_role(self, **request: Any) -> AwsCredentials:
        self.arrived.set()
        return await super().assume_role(**request)


@pytest.fixture
def source(clock: FakeClock) -> Iterator[ArrivalSource]:
    source = ArrivalSource(clock)
    yield source
    source.gate.open()


@pytest.fixture
def cache(clock: FakeClock, source: FakeSource) -> Iterator[CredentialCache]:
    cache = CredentialCache(clock=clock, source=source)
    yield cache
    cache.close()


def throttled() -> CredentialError:
    return CredentialError(
        f"Unable to assume IAM role {ROLE.role_arn} in us-east-1: Throttling: Rate exceeded.",
        code="Throttling",
    )


def asyncio_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "asyncio" and record.levelno >= logging.WARNING
    ]


# -- AWS failing past the ttl (scenarios 1 and 2) ---------------------------------------------


async def test_credentials_past_the_ttl_are_served_while_refreshes_fail_never_past_expiry(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    first = await aws_credentials(cache, ROLE)  # lives 3600 s: valid until 3540 (60 s margin)
    source.failures.extend(throttled() for _ in range(100))

    clock.advance(550)  # the refresh window: a background refresh starts, and fails
    assert await aws_credentials(cache, ROLE) is first
    await wait_until(lambda: cache.stats()["refresh_failures"] == 1)
    for failures, moment in enumerate((650, 1000, 2000, 3539), start=2):  # ttl 600 < t < 3540
        clock.now = START + moment
        for _ in range(10):  # served at once; one refresh each time the backoff has passed
            assert await without_waiting(lambda: aws_credentials(cache, ROLE)) == [first]
        await wait_until(lambda: cache.stats()["refresh_failures"] == failures)  # noqa: B023

    await settle(cache)
    assert source.calls == Counter(AssumeRole=1 + 5)  # one per due retry, not per caller
    assert cache.stats()["errors"] == 0

    clock.now = START + 3541  # the credentials' own expiry minus the margin: no more
    with pytest.raises(CredentialError) as caught:
        await aws_credentials(cache, ROLE)
    assert caught.value.code == "Throttling"
    assert cache.stats()["errors"] == 1

    source.failures.clear()  # STS is back
    renewed = await aws_credentials(cache, ROLE)
    assert renewed.access_key_id != first.access_key_id
    assert await aws_credentials(cache, ROLE) is renewed


async def test_a_caller_that_waited_past_the_ttl_on_a_failed_refresh_gets_the_valid_value(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    first = await aws_credentials(cache, ROLE)
    clock.advance(601)  # idle through the refresh window: past the ttl, the caller waits
    source.failures.append(throttled())
    assert await aws_credentials(cache, ROLE) is first  # the refresh failed; the value still works

    stats = cache.stats()
    assert (stats["misses"], stats["refresh_failures"], stats["errors"]) == (2, 1, 0)
    # Until the 1 s backoff ends, nobody waits on AWS again.
    assert await without_waiting(lambda: aws_credentials(cache, ROLE)) == [first]
    assert source.calls == Counter(AssumeRole=2)


async def test_an_invalidated_value_is_never_served_when_minting_its_successor_fails(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    await aws_credentials(cache, ROLE)
    clock.advance(601)
    leases(cache).invalidate(sts_key(ROLE))  # e.g. the database refused what it signed
    source.failures.append(throttled())
    with pytest.raises(CredentialError, match="Throttling"):
        await aws_credentials(cache, ROLE)
    assert cache.stats()["errors"] == 1


async def test_a_lease_without_valid_until_is_never_served_past_usable_until(
    cache: CredentialCache, clock: FakeClock
) -> None:
    mints = 0

    async def mint() -> Lease[str]:
        nonlocal mints
        mints += 1
        if mints > 1:
            raise throttled()
        return Lease("token", clock() + 10)  # like an RDS token: no life beyond its reuse

    assert await leases(cache).get("token-key", mint) == "token"
    clock.advance(11)
    with pytest.raises(CredentialError):
        await leases(cache).get("token-key", mint)


# -- cancellation storm (scenario 6) ----------------------------------------------------------


@pytest.mark.parametrize("fetch_fails", [False, True], ids=["fetch-succeeds", "fetch-fails"])
async def test_cancelling_500_of_1000_tasks_on_a_cold_key_leaves_no_warning_and_no_task(
    cache: CredentialCache,
    source: FakeSource,
    caplog: pytest.LogCaptureFixture,
    fetch_fails: bool,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    if fetch_fails:
        source.failures.append(throttled())
    source.gate.close()
    tasks = [asyncio.create_task(auth.credentials()) for _ in range(1000)]
    await anyio.wait_all_tasks_blocked()
    for task in tasks[::2]:
        task.cancel()
    await anyio.wait_all_tasks_blocked()
    assert all(task.cancelled() for task in tasks[::2])
    assert source.finished == 0  # the shared fetch still waits at the gate, not cancelled
    source.gate.open()

    outcomes = await asyncio.gather(*tasks[1::2], return_exceptions=True)
    if fetch_fails:
        assert all(isinstance(outcome, CredentialError) for outcome in outcomes)
        assert all(outcome is outcomes[0] for outcome in outcomes)  # one error, shared
    else:
        assert all(outcome is outcomes[0] for outcome in outcomes)
        assert cache.stats()["tokens_signed"] == 1
    assert source.calls == Counter(AssumeRole=1)

    await cache.aclose()
    del tasks, outcomes
    gc.collect()
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}
    assert not [t for t in set(threading.enumerate()) - threads_before if t.name == SERVICE_THREAD]
    assert asyncio_warnings(caplog) == []


# -- fork (a fetch in flight at the fork must not hang the child) -----------------------------

CHILD_TIMEOUT = 10  # seconds; the child is killed (SIGALRM) if it hangs


def run_in_child(work: Callable[[], bool]) -> int:
    """Fork; the child runs ``work()`` and exits 0 if it returned True, 1 if False, 2 on an
    exception. Returns the child's exit code (negative: killed by that signal)."""
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a multi-threaded process may deadlock: the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's half; coverage does not follow os._exit
        code = 2
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a hang ends in SIGALRM, reported
            signal.alarm(CHILD_TIMEOUT)
            code = 0 if work() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_mints_anew_when_the_fork_cut_a_fetch_short(
    cache: CredentialCache, source: ArrivalSource
) -> None:
    source.gate.close()
    parent_results: list[AwsCredentials] = []
    parent = threading.Thread(
        target=lambda: parent_results.append(asyncio.run(aws_credentials(cache, ROLE)))
    )
    parent.start()
    assert source.arrived.wait(10)  # the fetch is in flight, parked at the gate

    def child() -> bool:
        source.gate.open()  # the child's copy; the parked fetch did not come along
        credentials = asyncio.run(aws_credentials(cache, ROLE))
        again = asyncio.run(aws_credentials(cache, ROLE))
        return again is credentials and source.calls["AssumeRole"] == 2

    exit_code = run_in_child(child)
    source.gate.open()
    parent.join(10)

    assert exit_code == 0, f"the child exited with {exit_code} (-14: hung until SIGALRM)"
    assert len(parent_results) == 1  # the parent's own fetch completed as usual
    assert source.calls == Counter(AssumeRole=1)  # the child's call happened in the child


def test_a_forked_child_keeps_minted_values_and_ignores_locks_held_at_the_fork(
    cache: CredentialCache, source: FakeSource
) -> None:
    warm = asyncio.run(aws_credentials(cache, ROLE))

    def child() -> bool:
        same = asyncio.run(aws_credentials(cache, ROLE))  # minted before the fork: still cached
        other = asyncio.run(aws_credentials(cache, OTHER_ROLE))  # needs the locks and a loop
        return same is warm and other.source.endswith(OTHER_ROLE.role_arn or "")

    # Another thread of the parent may hold these at the moment of the fork (a fetch landing,
    # the service loop starting); the child's copies would stay locked forever.
    with leases(cache)._lock, cache._service._lock:
        exit_code = run_in_child(child)
    assert exit_code == 0, f"the child exited with {exit_code} (-14: hung until SIGALRM)"
    assert source.calls == Counter(AssumeRole=1)
