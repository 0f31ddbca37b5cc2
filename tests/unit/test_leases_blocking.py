"""``Leases.get_blocking``: ``get()`` for threads without an event loop.

The same hits, single flight, stale-but-valid fallback, errors and counters as ``get()``; only
the waiting differs (the calling thread blocks on the shared flight). The fake source is gated
from the test (see fakes.py); tests assert counts and states, never durations.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.to_thread
import pytest

from iampool import CredentialCache, CredentialError
from iampool._aws import AwsCredentials
from iampool._cache import mint_context
from iampool._leases import Lease
from iampool._minting import sts_key

from .fakes import FakeClock, FakeSource, aws_credentials, leases
from .test_cache import ROLE
from .test_reliability_core import run_in_child

KEY = sts_key(ROLE)


def blocking_credentials(cache: CredentialCache, **options: Any) -> AwsCredentials:
    """The cache's STS credentials for ROLE, fetched the way a thread without a loop would."""
    context = mint_context(cache)
    credentials: AwsCredentials = context.leases.get_blocking(
        KEY, lambda: context.mint_aws_credentials(ROLE), **options
    )
    return credentials


def in_threads(count: int, call: Callable[[], Any]) -> list[Any]:
    """Run ``call`` on ``count`` threads at once; their results, or the exceptions they raised."""

    def guarded() -> Any:
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(count) as threads:
        return list(threads.map(lambda _: guarded(), range(count)))


def blocked(cache: CredentialCache, count: int) -> tuple[threading.Thread, list[Any]]:
    """``count`` threads in ``blocking_credentials(cache)``, each holding its place in the one
    flight (counted as a miss) when this returns; join the thread, then read the list."""
    results: list[Any] = []
    herd = threading.Thread(
        target=lambda: results.extend(in_threads(count, lambda: blocking_credentials(cache)))
    )
    herd.start()
    wait_for(lambda: cache.stats()["misses"] == count)
    return herd, results


def test_a_miss_mints_once_and_the_next_call_is_a_lock_free_hit(
    cache: CredentialCache, source: FakeSource
) -> None:
    first = blocking_credentials(cache)
    assert blocking_credentials(cache) is first
    stats = cache.stats()
    assert (stats["misses"], stats["hits"], stats["sts_calls"]) == (1, 1, 1)
    assert source.calls == Counter(AssumeRole=1)


def test_herd_of_50_threads_makes_one_mint_and_all_get_the_same_value(
    cache: CredentialCache, source: FakeSource
) -> None:
    source.gate.close()
    herd, results = blocked(cache, 50)
    assert results == []
    source.gate.open()
    herd.join(30)

    assert len(results) == 50
    assert all(result is results[0] for result in results)
    assert isinstance(results[0], AwsCredentials)
    assert source.calls == Counter(AssumeRole=1)
    assert cache.stats()["sts_calls"] == 1


@pytest.mark.anyio
async def test_blocked_threads_and_awaiting_tasks_share_one_flight(
    cache: CredentialCache, source: FakeSource
) -> None:
    source.gate.close()
    results: list[Any] = []

    async def task() -> None:
        results.append(await aws_credentials(cache, ROLE))

    async def thread() -> None:
        results.append(await anyio.to_thread.run_sync(blocking_credentials, cache))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(task)
            tg.start_soon(thread)
        while cache.stats()["misses"] < 20:  # noqa: ASYNC110 (counted on other threads)
            await anyio.sleep(0.001)
        source.gate.open()

    assert len(results) == 20
    assert all(result is results[0] for result in results)
    assert source.calls == Counter(AssumeRole=1)


def test_a_timeout_fails_the_waiter_without_cancelling_the_shared_mint(
    cache: CredentialCache, source: FakeSource
) -> None:
    source.gate.close()
    with pytest.raises(CredentialError) as caught:
        blocking_credentials(cache, timeout=0.05)
    assert caught.value.code == "Timeout"
    assert "arn:aws:iam::123456789012:role/app-db" in str(caught.value)
    assert "ext-7f3a9c" not in str(caught.value)  # the key's external id stays out

    source.gate.open()
    landed = blocking_credentials(cache)  # joins the flight the timed-out caller started
    assert source.calls == Counter(AssumeRole=1)
    assert source.finished == 1
    assert landed.access_key_id == "ASIAFAKE000000000001"


def test_a_failed_mint_fails_every_blocked_thread_with_the_same_error_and_is_not_cached(
    cache: CredentialCache, source: FakeSource
) -> None:
    error = CredentialError("Unable to assume IAM role app-db: AccessDenied.", code="AccessDenied")
    source.failures.append(error)
    source.gate.close()
    herd, results = blocked(cache, 20)
    source.gate.open()
    herd.join(30)

    assert len(results) == 20
    assert all(result is error for result in results)
    assert (cache.stats()["errors"], cache.stats()["size"]) == (1, 0)
    assert isinstance(blocking_credentials(cache), AwsCredentials)  # not cached: minted anew
    assert source.calls == Counter(AssumeRole=2)


def test_a_failed_refresh_past_the_ttl_serves_the_still_valid_value(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    first = blocking_credentials(cache)
    clock.advance(650)  # past the 600 s ttl, an hour from expiry: stale but valid
    source.failures.append(CredentialError("Throttling.", code="Throttling"))

    assert blocking_credentials(cache) is first
    stats = cache.stats()
    assert (stats["refresh_failures"], stats["errors"]) == (1, 0)
    clock.advance(1.0)  # past the backoff: served again while a refresh runs, which succeeds
    assert blocking_credentials(cache) is first
    wait_for(lambda: cache.stats()["refreshes"] == 1)
    assert blocking_credentials(cache).access_key_id != first.access_key_id


def test_fresh_waits_for_the_refresh_that_is_due(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    first = blocking_credentials(cache)
    clock.advance(550)  # inside the refresh window
    assert blocking_credentials(cache) is first  # served as is; a refresh starts
    renewed = blocking_credentials(cache, fresh=True)  # waits for that refresh
    assert renewed.access_key_id != first.access_key_id
    assert source.calls == Counter(AssumeRole=2)


def test_closing_the_cache_fails_a_blocked_thread_with_a_closed_error(
    cache: CredentialCache, source: FakeSource
) -> None:
    source.gate.close()
    waiter, errors = blocked(cache, 1)
    cache.close()
    waiter.join(30)
    assert [type(error) for error in errors] == [CredentialError]
    assert errors[0].code == "Closed"


def test_refuses_to_block_the_service_thread_it_would_deadlock(cache: CredentialCache) -> None:
    context = mint_context(cache)

    async def on_the_service_loop() -> str:
        try:
            blocking_credentials(cache)
        except RuntimeError as exc:
            return str(exc)
        return "not refused"

    flight = context.service.submit(on_the_service_loop)
    assert flight.join(30)
    message = flight.result()
    assert "service thread" in message
    assert "await" in message  # says what to do instead


def test_a_forked_child_blocks_on_its_own_mint_with_the_real_service_loop() -> None:
    cache = CredentialCache()  # the real service loop (its AWS source is never used here)
    table = leases(cache)
    gate = threading.Event()

    async def parked() -> Lease[str]:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        return Lease(f"parent {os.getpid()}", 1e12)

    async def minted() -> Lease[str]:
        return Lease(f"minted in {os.getpid()}", 1e12)

    try:
        assert table.get_blocking("warm", minted) == f"minted in {os.getpid()}"  # thread runs
        table.prefetch("cut short", parked)  # in flight at the fork

        def child() -> bool:
            # The parent's flight did not come along; the child mints on a loop of its own.
            value = table.get_blocking("cut short", minted, timeout=5)
            again = table.get_blocking("cut short", minted)
            return value == f"minted in {os.getpid()}" and again is value

        assert run_in_child(child) == 0
    finally:
        gate.set()
        cache.close()


def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait on this thread for work on others to reach a state (polls: counters set no event)."""
    done = threading.Event()
    for _ in range(int(within / 0.001)):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("condition not reached")
