"""CredentialCache: single flight, refresh ahead, expiry caps, LRU, deadlines, loops and threads.

Fetches run on the cache's service thread; the fake source is gated from the test (see fakes.py)
and a fake clock moves time. Tests assert counts and states, never durations.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest

from iampool import (
    AwsIamConfig,
    ConfigError,
    CredentialCache,
    CredentialError,
    _cache,
    auth_for,
    default_cache,
)
from iampool._aws import AwsCredentials
from iampool._cache import mint_context
from iampool._leases import Lease

from .fakes import (
    FakeClock,
    FakeSource,
    Gate,
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
        "external_id": "ext-7f3a9c",
        "db_username": "app",
    }
)
HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"
SERVICE_THREAD = "iampool-credentials"


# -- single flight ---------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_herd_of_1000_callers_makes_one_assume_role_call_and_signs_one_token(
    cache: CredentialCache, source: FakeSource
) -> None:
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    results = []

    async def connect() -> None:
        results.append(await auth.credentials())

    source.gate.close()
    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(connect)
        await anyio.wait_all_tasks_blocked()
        assert results == []  # every caller is waiting on the one fetch
        source.gate.open()

    assert source.calls == Counter(AssumeRole=1)
    stats = cache.stats()
    assert (stats["sts_calls"], stats["tokens_signed"]) == (1, 1)
    assert len(results) == 1000
    assert all(credentials is results[0] for credentials in results)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_cancelling_half_of_1000_waiters_does_not_cancel_the_shared_fetch(
    cache: CredentialCache, source: FakeSource
) -> None:
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    results = []
    scopes = [anyio.CancelScope() for _ in range(1000)]

    async def connect(scope: anyio.CancelScope) -> None:
        with scope:
            results.append(await auth.credentials())

    source.gate.close()
    async with anyio.create_task_group() as tg:
        for scope in scopes:
            tg.start_soon(connect, scope)
        await anyio.wait_all_tasks_blocked()
        for scope in scopes[::2]:
            scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert source.finished == 0  # the fetch is still waiting at the gate, not cancelled
        source.gate.open()

    assert all(scope.cancelled_caught for scope in scopes[::2])
    assert not any(scope.cancelled_caught for scope in scopes[1::2])
    assert len(results) == 500
    assert all(credentials is results[0] for credentials in results)
    assert source.calls == Counter(AssumeRole=1)
    assert source.finished == 1


class HookedClock(FakeClock):
    """A fake clock that runs a hook on the next read from the arming thread, and counts that
    thread's reads after it."""

    def __init__(self) -> None:
        super().__init__()
        self._hook: tuple[threading.Thread, Callable[[], None]] | None = None
        self._armed_by: threading.Thread | None = None
        self.reads_after_hook = 0

    def on_next_read(self, hook: Callable[[], None]) -> None:
        self._armed_by = threading.current_thread()
        self._hook = (self._armed_by, hook)
        self.reads_after_hook = 0

    def __call__(self) -> float:
        if self._armed_by is threading.current_thread():
            if self._hook is not None:
                hook, self._hook = self._hook[1], None
                hook()
            else:
                self.reads_after_hook += 1
        return self.now


async def test_caller_arriving_as_a_fetch_lands_takes_its_value_without_starting_another(
    new_cache: Callable[..., CredentialCache],
) -> None:
    # The race: a caller's lock-free look finds no usable value; before it takes the lock, the
    # fetch in flight lands. Under the lock it must find that value, not start a second fetch.
    clock = HookedClock()
    cache = new_cache(clock=clock)
    gate = Gate()
    minting = threading.Event()
    minted: list[str] = []

    async def mint() -> Lease[str]:
        minted.append(f"value-{len(minted) + 1}")
        value = minted[-1]
        minting.set()
        await gate.passage()
        return Lease(value, clock() + 600)

    assert await leases(cache).get("key", mint) == "value-1"
    clock.advance(600)  # expired: callers wait for the next fetch
    gate.close()
    minting.clear()
    first_caller: list[str] = []
    fetching = threading.Thread(
        target=lambda: first_caller.append(asyncio.run(leases(cache).get("key", mint)))
    )
    fetching.start()  # a caller on another thread starts the fetch, which waits at the gate
    assert await anyio.to_thread.run_sync(minting.wait, 5)
    landed: list[bool] = []

    def land_the_fetch() -> None:
        # The caller's lock-free look reads the clock: here the fetch lands and its caller
        # returns, before this caller takes the lock.
        gate.open()
        fetching.join(5)
        landed.append(not fetching.is_alive())

    clock.on_next_read(land_the_fetch)
    arriving = await leases(cache).get("key", mint)

    assert landed == [True]
    assert clock.reads_after_hook >= 1  # it went on to the lock: the race was reached
    assert first_caller == [arriving] == ["value-2"]
    stats = cache.stats()
    assert (stats["misses"], stats["hits"]) == (2, 1)  # the arriving caller's is a hit
    await settle(cache)  # a fetch started by that call would have reached the mint
    assert minted == ["value-1", "value-2"]


async def test_fetch_whose_waiters_were_all_cancelled_still_completes_and_is_cached(
    cache: CredentialCache, source: FakeSource
) -> None:
    source.gate.close()
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(aws_credentials, cache, ROLE)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    source.gate.open()
    await wait_until(lambda: source.finished == 1)

    first = await aws_credentials(cache, ROLE)
    assert await aws_credentials(cache, ROLE) is first
    assert source.calls == Counter(AssumeRole=1)


async def test_failed_fetch_fails_every_waiter_with_the_same_error_and_is_not_cached(
    cache: CredentialCache, source: FakeSource
) -> None:
    error = CredentialError(
        "Unable to assume IAM role arn:aws:iam::123456789012:role/app-db in us-east-1: "
        "AccessDenied.",
        code="AccessDenied",
    )
    source.failures.append(error)
    errors: list[CredentialError] = []

    async def connect() -> None:
        try:
            await aws_credentials(cache, ROLE)
        except CredentialError as exc:
            errors.append(exc)

    source.gate.close()
    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(connect)
        await anyio.wait_all_tasks_blocked()
        source.gate.open()

    assert len(errors) == 1000
    assert all(exc is error for exc in errors)
    assert source.calls == Counter(AssumeRole=1)
    stats = cache.stats()
    assert (stats["errors"], stats["size"]) == (1, 0)

    credentials = await aws_credentials(cache, ROLE)  # the failure was not cached
    assert isinstance(credentials, AwsCredentials)
    assert source.calls == Counter(AssumeRole=2)


async def test_fetch_that_never_finishes_fails_with_timeout_after_the_deadline(
    new_cache: Callable[..., CredentialCache], source: FakeSource
) -> None:
    cache = new_cache(deadline=0.2)
    source.hang = True
    with pytest.raises(CredentialError) as caught:
        await aws_credentials(cache, ROLE)
    assert caught.value.code == "Timeout"
    assert "Timed out after 0.2 s" in str(caught.value)
    assert "arn:aws:iam::123456789012:role/app-db" in str(caught.value)
    assert "ext-7f3a9c" not in str(caught.value)  # the key's external id stays out

    source.hang = False
    await aws_credentials(cache, ROLE)  # the timeout was not cached either
    assert source.calls == Counter(AssumeRole=2)
    assert cache.stats()["errors"] == 1


# -- refresh ahead ---------------------------------------------------------------------------


async def test_refresh_window_serves_the_cached_value_while_one_background_refresh_runs(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    first = await aws_credentials(cache, ROLE)
    clock.advance(550)  # ttl 600, refresh margin 60: inside the refresh window
    served = []

    async def connect() -> None:
        served.append(await aws_credentials(cache, ROLE))

    source.gate.close()
    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(connect)
        await anyio.wait_all_tasks_blocked()
        assert len(served) == 100  # nobody waited for the refresh
        source.gate.open()
    assert all(credentials is first for credentials in served)

    await wait_until(lambda: cache.stats()["refreshes"] == 1)
    assert cache.stats()["misses"] == 1  # only the very first call waited
    second = await aws_credentials(cache, ROLE)
    assert second.access_key_id != first.access_key_id
    await settle(cache)
    assert source.calls == Counter(AssumeRole=2)


async def test_failed_background_refresh_keeps_serving_and_retries_only_after_a_backoff(
    cache: CredentialCache,
    source: FakeSource,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="iampool")

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "iampool" and r.levelno == logging.WARNING]

    first = await aws_credentials(cache, ROLE)
    clock.advance(550)
    for _ in range(2):
        source.failures.append(
            CredentialError("Unable to assume IAM role app-db: Throttling.", code="Throttling")
        )

    assert await aws_credentials(cache, ROLE) is first
    await wait_until(lambda: len(warnings()) == 1)
    assert "Throttling" in warnings()[0].getMessage()
    assert cache.stats()["refresh_failures"] == 1
    for _ in range(10):
        assert await aws_credentials(cache, ROLE) is first
    await settle(cache)
    assert source.calls == Counter(AssumeRole=2)  # no retry before the 1 s backoff

    clock.advance(1.0)
    assert await aws_credentials(cache, ROLE) is first  # retries, fails again
    await wait_until(lambda: len(warnings()) == 2)
    clock.advance(1.0)
    assert await aws_credentials(cache, ROLE) is first
    await settle(cache)
    assert source.calls == Counter(AssumeRole=3)  # the backoff doubled to 2 s

    clock.advance(1.0)
    assert await aws_credentials(cache, ROLE) is first  # this refresh succeeds
    await wait_until(lambda: cache.stats()["refreshes"] == 1)
    assert (await aws_credentials(cache, ROLE)).access_key_id != first.access_key_id
    assert source.calls == Counter(AssumeRole=4)
    assert cache.stats()["refresh_failures"] == 2
    assert cache.stats()["errors"] == 0


async def test_refresh_retries_back_off_doubling_from_1_s_up_to_30_s(
    cache: CredentialCache, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="iampool")  # a warning per failed refresh
    attempts = 0

    async def mint() -> Lease[str]:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            raise CredentialError("Unable to refresh: Throttling.", code="Throttling")
        # Still worth serving long after its ttl, while its refreshes fail.
        return Lease("value", clock() + 600, valid_until=clock() + 86_400)

    assert await leases(cache).get("key", mint) == "value"
    clock.advance(550)  # due for refresh

    def failed(count: int) -> Callable[[], bool]:
        return lambda: cache.stats()["refresh_failures"] == count

    assert await leases(cache).get("key", mint) == "value"  # starts the first refresh
    for failures, backoff in enumerate([1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30], start=1):
        await wait_until(failed(failures))
        clock.advance(backoff - 0.001)
        assert await leases(cache).get("key", mint) == "value"
        await settle(cache)  # a refresh started by that call would have reached the mint
        assert attempts == failures + 1, f"retried before the {backoff} s backoff"
        clock.advance(0.001)
        assert await leases(cache).get("key", mint) == "value"
        await settle(cache)
        assert attempts == failures + 2, f"no retry {backoff} s after failure {failures}"

    assert cache.stats()["errors"] == 0


@pytest.mark.parametrize(
    ("lifetime", "usable_for"),
    [
        (3600.0, 600.0),  # long session: the ttl decides
        (300.0, 240.0),  # expires before the ttl: expiry minus the 60 s margin
        (120.0, 90.0),  # very short: the margin shrinks to a quarter of the life
    ],
)
async def test_credentials_are_never_served_past_ttl_or_expiry_minus_the_margin(
    cache: CredentialCache,
    source: FakeSource,
    clock: FakeClock,
    lifetime: float,
    usable_for: float,
) -> None:
    source.lifetime = lifetime
    first = await aws_credentials(cache, ROLE)
    source.gate.close()  # a background refresh started now cannot land

    clock.advance(usable_for - 0.5)
    assert await without_waiting(lambda: aws_credentials(cache, ROLE)) == [first]
    clock.advance(1.0)
    assert await without_waiting(lambda: aws_credentials(cache, ROLE)) == []  # must wait

    source.gate.open()
    renewed = await aws_credentials(cache, ROLE)
    assert renewed.access_key_id != first.access_key_id
    assert source.calls == Counter(AssumeRole=2)


async def test_default_chain_credentials_without_expiry_are_reused_for_a_bounded_time(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    same_account = AwsIamConfig.from_extra(
        {"enabled": True, "region": "eu-west-1", "db_username": "app"}
    )
    first = await aws_credentials(cache, same_account)
    assert first.source == "default chain"
    source.gate.close()

    clock.advance(539)  # treated as valid 600 s, minus the 60 s margin
    assert await without_waiting(lambda: aws_credentials(cache, same_account)) == [first]
    clock.advance(2)
    assert await without_waiting(lambda: aws_credentials(cache, same_account)) == []
    source.gate.open()
    await aws_credentials(cache, same_account)
    assert source.calls == Counter(DefaultChain=2)
    assert cache.stats()["sts_calls"] == 0


# -- keys and bounds -------------------------------------------------------------------------


async def test_configurations_differing_in_a_key_field_never_share_credentials(
    cache: CredentialCache, source: FakeSource
) -> None:
    variants = [
        ROLE,
        AwsIamConfig.from_extra({**ROLE.to_dict(), "external_id": "ext-other"}),
        AwsIamConfig.from_extra({**ROLE.to_dict(), "region": "eu-west-1"}),
        AwsIamConfig.from_extra(
            {**ROLE.to_dict(), "role_arn": "arn:aws:iam::123456789012:role/other"}
        ),
    ]
    seen = {(await aws_credentials(cache, config)).access_key_id for config in variants}
    assert len(seen) == 4
    assert source.calls == Counter(AssumeRole=4)
    # A field outside the key (the database user) shares the role's credentials.
    await aws_credentials(cache, AwsIamConfig.from_extra({**ROLE.to_dict(), "db_username": "x"}))
    assert source.calls == Counter(AssumeRole=4)


def minting(clock: FakeClock, minted: Counter[Any], key: Any) -> Callable[[], Awaitable[Any]]:
    async def mint() -> Lease[str]:
        minted[key] += 1
        return Lease(f"value-{key}", clock() + 600)

    return mint


async def test_least_recently_used_entry_is_evicted_beyond_maxsize(
    new_cache: Callable[..., CredentialCache], clock: FakeClock
) -> None:
    cache = new_cache(maxsize=3)
    minted: Counter[str] = Counter()
    for key in "abc":
        await leases(cache).get(key, minting(clock, minted, key))
    await leases(cache).get("a", minting(clock, minted, "a"))  # "a" is now the most recent
    await leases(cache).get("d", minting(clock, minted, "d"))  # evicts "b", the least recent

    stats = cache.stats()
    assert (stats["size"], stats["evictions"]) == (3, 1)
    for key in "acd":
        assert await leases(cache).get(key, minting(clock, minted, key)) == f"value-{key}"
    assert minted == Counter(a=1, b=1, c=1, d=1)
    await leases(cache).get("b", minting(clock, minted, "b"))
    assert minted["b"] == 2


async def test_ten_thousand_keys_stay_bounded_by_maxsize(
    new_cache: Callable[..., CredentialCache], clock: FakeClock
) -> None:
    cache = new_cache(maxsize=1000)
    minted: Counter[int] = Counter()
    for key in range(10_000):
        await leases(cache).get(("key", key), minting(clock, minted, key))
    stats = cache.stats()
    assert (stats["size"], stats["evictions"], stats["misses"]) == (1000, 9000, 10_000)
    assert len(minted) == 10_000


class CountedKey:
    """A cache key that counts how often the table hashes it: the work of moving it around."""

    def __init__(self, name: int, hashed: Counter[str]) -> None:
        self.name = name
        self.hashed = hashed

    def __hash__(self) -> int:
        self.hashed["hashes"] += 1
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountedKey) and other.name == self.name


async def test_an_eviction_does_the_same_bounded_work_whatever_the_size_of_a_hot_table(
    new_cache: Callable[..., CredentialCache], clock: FakeClock
) -> None:
    # Every entry hit since the eviction sweep last passed it may ask for a second chance;
    # granting each one would make one insertion into a hot table cost O(maxsize).
    work = []
    for maxsize in (100, 1000):
        cache = new_cache(maxsize=maxsize)
        hashed: Counter[str] = Counter()
        minted: Counter[Any] = Counter()
        keys = [CountedKey(n, hashed) for n in range(maxsize)]
        for key in keys:
            await leases(cache).get(key, minting(clock, minted, key.name))
        for key in keys:  # every entry is hot
            await leases(cache).get(key, minting(clock, minted, key.name))
        hashed.clear()
        newcomer = CountedKey(maxsize, hashed)
        await leases(cache).get(newcomer, minting(clock, minted, maxsize))
        assert cache.stats()["evictions"] == 1
        work.append(hashed["hashes"])

    assert work[0] == work[1] < 50, f"keys hashed by one insertion, per table size: {work}"


async def test_invalidate_makes_the_next_call_fetch_anew(
    cache: CredentialCache, source: FakeSource, clock: FakeClock
) -> None:
    minted: Counter[str] = Counter()
    await leases(cache).get("k", minting(clock, minted, "k"))
    await leases(cache).get("k", minting(clock, minted, "k"))
    leases(cache).invalidate("k")
    await leases(cache).get("k", minting(clock, minted, "k"))
    assert minted == Counter(k=2)
    leases(cache).invalidate("never-cached")  # no error


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": 0},
        {"token_reuse": -1},
        {"deadline": 0},
        {"deadline": float("nan")},
        {"ttl": float("inf")},
        {"refresh_margin": -1},
        {"expiry_margin": float("nan")},
        {"connect_timeout": 0},
        {"read_timeout": True},
        {"maxsize": 0},
        {"maxsize": 1.5},
        {"max_attempts": 0},
        {"retry_mode": "sometimes"},
    ],
    ids=repr,
)
def test_constructor_rejects_a_setting_that_cannot_work_naming_it(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        CredentialCache(**options)
    assert caught.value.fields == list(options)
    assert isinstance(caught.value, ValueError)


def test_constructor_lists_every_bad_setting_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        CredentialCache(ttl=-1, maxsize=0, deadline=float("nan"))
    assert sorted(caught.value.fields) == ["deadline", "maxsize", "ttl"]


# -- loops, threads, shutdown ----------------------------------------------------------------


def test_eight_threads_each_running_asyncio_run_share_one_fetch(
    cache: CredentialCache, source: FakeSource
) -> None:
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    all_waiting = threading.Barrier(9, timeout=30)  # 8 workers and this thread
    results: dict[int, list[Any]] = {}
    failures: list[BaseException] = []

    async def herd() -> list[Any]:
        values = []

        async def connect() -> None:
            values.append(await auth.credentials())

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(connect)
            await anyio.wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(all_waiting.wait)
        return values

    def worker(index: int) -> None:
        try:
            results[index] = asyncio.run(herd())
        except BaseException as exc:
            failures.append(exc)

    source.gate.close()
    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    all_waiting.wait()
    source.gate.open()
    for thread in threads:
        thread.join(30)

    assert failures == []
    values = [value for index in range(8) for value in results[index]]
    assert len(values) == 400
    assert all(value is values[0] for value in values)
    assert source.calls == Counter(AssumeRole=1)
    assert cache.stats()["tokens_signed"] == 1


def test_default_cache_is_one_instance_shared_by_threads_and_their_loops(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, source: FakeSource
) -> None:
    monkeypatch.setattr(_cache, "_default", None)
    start = threading.Barrier(8, timeout=30)
    seen: list[CredentialCache] = []

    def first_use() -> None:
        start.wait()
        seen.append(default_cache())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 8
    assert all(cache is seen[0] for cache in seen)
    assert default_cache() is seen[0]
    seen[0].close()

    # auth_for(cache=None) uses the default cache from every thread's own event loop.
    monkeypatch.setattr(_cache, "_default", CredentialCache(clock=clock, source=source))
    try:
        tokens: list[str] = []

        def connect() -> None:
            auth = auth_for(ROLE, host=HOST, port=5432)
            tokens.append(asyncio.run(auth.credentials()).password)

        threads = [threading.Thread(target=connect) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(tokens) == 8
        assert len(set(tokens)) == 1
        assert source.calls == Counter(AssumeRole=1)
    finally:
        default_cache().close()


def test_callers_loops_close_cleanly_while_shared_fetches_outlive_them(
    cache: CredentialCache,
    source: FakeSource,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    auth = auth_for(ROLE, host=HOST, port=5432, cache=cache)

    async def abandon_a_waiter() -> None:
        task = asyncio.create_task(auth.credentials())
        await anyio.wait_all_tasks_blocked()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() == {asyncio.current_task()}

    async def start_a_refresh() -> None:
        await auth.credentials()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    source.gate.close()
    asyncio.run(abandon_a_waiter())  # the loop closes while the fetch waits at the gate
    source.gate.open()
    first = asyncio.run(auth.credentials())

    clock.advance(550)  # token and credentials both due for a refresh
    source.gate.close()
    asyncio.run(start_a_refresh())  # the loop closes while the refresh waits at the gate
    source.gate.open()
    second = asyncio.run(wait_for_refreshes(cache, 2, auth))
    gc.collect()

    assert second is not first
    assert second.expires_at > first.expires_at  # signed after the clock moved
    assert source.calls == Counter(AssumeRole=2)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def wait_for_refreshes(cache: CredentialCache, count: int, auth: Any) -> Any:
    await wait_until(lambda: cache.stats()["refreshes"] == count)
    return await auth.credentials()


async def test_failed_fetches_leave_no_unretrieved_task_exception_on_the_service_loop(
    cache: CredentialCache,
    source: FakeSource,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    source.failures.append(CredentialError("Unable to assume IAM role: AccessDenied."))
    with pytest.raises(CredentialError):
        await aws_credentials(cache, ROLE)
    await aws_credentials(cache, ROLE)
    clock.advance(550)
    source.failures.append(CredentialError("Unable to assume IAM role: Throttling."))
    await aws_credentials(cache, ROLE)  # a background refresh that fails, awaited by nobody
    await wait_until(lambda: cache.stats()["refresh_failures"] == 1)
    await cache.aclose()
    gc.collect()
    assert [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING] == []


async def test_close_stops_the_service_thread_and_a_reused_cache_keeps_its_source(
    cache: CredentialCache, source: FakeSource
) -> None:
    before = {t for t in threading.enumerate() if t.name == SERVICE_THREAD}
    await aws_credentials(cache, ROLE)
    started = {t for t in threading.enumerate() if t.name == SERVICE_THREAD} - before
    assert len(started) == 1

    await cache.aclose()
    assert not any(thread.is_alive() for thread in started)
    assert source.closed == 1
    assert cache.stats()["size"] == 0

    await aws_credentials(cache, ROLE)  # starts afresh with the same (fake) source
    assert source.calls == Counter(AssumeRole=2)


async def test_closing_the_cache_fails_waiters_with_a_closed_error(
    cache: CredentialCache, source: FakeSource
) -> None:
    source.hang = True
    errors: list[CredentialError] = []

    async def connect() -> None:
        try:
            await aws_credentials(cache, ROLE)
        except CredentialError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(connect)
        await anyio.wait_all_tasks_blocked()
        await cache.aclose()
    assert [exc.code for exc in errors] == ["Closed"] * 3


async def test_a_lookup_made_on_the_service_loop_is_started_there_without_a_thread_hop(
    cache: CredentialCache, source: FakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An RDS token's mint (on the service loop) needs the STS credentials: a nested lookup.
    hops: list[object] = []

    async def mint_token() -> Lease[str]:
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            hops.append(args[0])
            return original(*args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
        try:
            credentials = await aws_credentials(cache, ROLE)  # a miss: STS is called
        finally:
            monkeypatch.undo()
        return Lease(credentials.access_key_id, cache_clock() + 60)

    cache_clock = mint_context(cache).clock
    assert await leases(cache).get("token", mint_token) == "ASIAFAKE000000000001"
    assert source.calls == Counter(AssumeRole=1)
    assert hops == []  # started and awaited on the service loop itself


def test_a_cache_collected_without_close_stops_its_service_thread_and_closes_its_source(
    source: FakeSource,
) -> None:
    before = set(threading.enumerate())
    cache = CredentialCache(source=source)
    asyncio.run(aws_credentials(cache, ROLE))
    [thread] = [t for t in set(threading.enumerate()) - before if t.name == SERVICE_THREAD]
    del cache
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()
    assert source.closed == 1


async def test_a_herd_on_one_loop_is_woken_with_one_thread_crossing(
    cache: CredentialCache, source: FakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    crossings: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        crossings.append(callback)
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    source.gate.close()
    results: list[AwsCredentials] = []

    async def call() -> None:
        results.append(await aws_credentials(cache, ROLE))

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(call)
        await wait_until(lambda: source.calls["AssumeRole"] == 1)
        source.gate.open()

    assert len(results) == 1000
    assert len(crossings) == 1  # one hop into this loop for the whole herd, not 1000


def test_every_kind_of_key_is_described_without_the_external_id(cache: CredentialCache) -> None:
    from iampool._leases import describe
    from iampool._minting import sts_key

    redshift = auth_for(
        {**ROLE.to_dict(), "cluster_identifier": "analytics", "db_name": "dev"}, cache=cache
    )
    rds = auth_for(ROLE, host=HOST, port=5432, cache=cache)
    keys = [sts_key(ROLE), rds._key, redshift._key, redshift._endpoint_key]  # type: ignore[attr-defined]

    descriptions = [describe(key) for key in keys]
    assert descriptions[:2] == [
        "AWS credentials for arn:aws:iam::123456789012:role/app-db in us-east-1",
        f"the RDS token for app at {HOST}:5432",
    ]
    assert all("analytics" in text for text in descriptions[2:])
    assert not [text for text in descriptions if ROLE.external_id in text]
