"""ConnectRate: a GCRA token bucket capping new connections per endpoint (invariant 7)."""

from __future__ import annotations

import itertools
import math
import threading
import uuid
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from iampool.pools._dialer import ConnectRate, connect_rate_for


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unique_host() -> str:
    # connect_rate_for is process-wide: each test gets endpoints no other test touches.
    return f"db-{uuid.uuid4().hex}.example.com"


def test_burst_connects_start_at_once_then_each_waits_exactly_one_interval_more() -> None:
    bucket = ConnectRate(rate=10, burst=3, clock=FakeClock())

    delays = [bucket.reserve() for _ in range(7)]

    assert delays == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3, 0.4])


def test_spacing_after_the_burst_is_one_over_rate() -> None:
    bucket = ConnectRate(rate=200, burst=200, clock=FakeClock())

    delays = [bucket.reserve() for _ in range(1000)]

    assert delays[:200] == [0.0] * 200
    gaps = [later - earlier for earlier, later in itertools.pairwise(delays[200:])]
    assert gaps == pytest.approx([1 / 200] * 799)
    assert delays[-1] == pytest.approx(800 / 200)


def test_idle_time_refills_the_bucket_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = ConnectRate(rate=10, burst=3, clock=clock)
    for _ in range(3):
        bucket.reserve()

    clock.advance(60)  # far longer than needed: the bucket holds at most `burst`

    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_partial_refill_frees_one_slot_per_interval() -> None:
    clock = FakeClock()
    bucket = ConnectRate(rate=10, burst=3, clock=clock)
    for _ in range(3):
        bucket.reserve()

    clock.advance(0.2)

    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.1])


def test_connects_arriving_at_the_rate_never_wait() -> None:
    clock = FakeClock()
    bucket = ConnectRate(rate=50, burst=1, clock=clock)

    delays = []
    for _ in range(100):
        delays.append(bucket.reserve())
        clock.advance(1 / 50)

    assert max(delays) == pytest.approx(0, abs=1e-9)


def test_default_burst_is_one_second_of_rate_and_at_least_one() -> None:
    assert ConnectRate(200).burst == 200
    assert ConnectRate(2.5).burst == 2
    assert ConnectRate(0.5).burst == 1


@pytest.mark.parametrize("rate", [0, -1, -0.5, math.nan, math.inf])
def test_rate_that_is_not_a_positive_number_is_a_value_error(rate: float) -> None:
    with pytest.raises(ValueError, match="connect_rate"):
        ConnectRate(rate)


@pytest.mark.parametrize("rate", [0, -5, math.nan])
def test_connect_rate_for_rejects_an_invalid_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="connect_rate"):
        connect_rate_for(f"{unique_host()}:5432", rate)


@pytest.mark.parametrize("burst", [0, -1])
def test_burst_below_one_is_a_value_error(burst: int) -> None:
    with pytest.raises(ValueError, match="burst"):
        ConnectRate(10, burst=burst)


def test_concurrent_threads_each_reserve_a_distinct_slot() -> None:
    threads, per_thread = 8, 250
    bucket = ConnectRate(rate=1000, burst=1, clock=FakeClock())
    expected_bucket = ConnectRate(rate=1000, burst=1, clock=FakeClock())
    delays: list[float] = []
    delays_lock = threading.Lock()
    start = threading.Barrier(threads)

    def reserve_many() -> None:
        start.wait()
        mine = [bucket.reserve() for _ in range(per_thread)]
        with delays_lock:
            delays.extend(mine)

    workers = [threading.Thread(target=reserve_many) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    # Exactly the slots one thread reserving alone would have got: none shared, none skipped.
    assert sorted(delays) == [expected_bucket.reserve() for _ in range(threads * per_thread)]
    assert len(set(delays)) == threads * per_thread


def test_no_rate_means_no_cap() -> None:
    assert connect_rate_for(f"{unique_host()}:5432", None) is None


def test_pools_to_one_endpoint_share_one_bucket() -> None:
    host = unique_host()
    first = connect_rate_for(f"{host}:5432", 5)
    second = connect_rate_for(f"{host}:5432", 5)

    assert first is second
    assert first is not None
    assert second is not None
    for _ in range(first.burst):
        first.reserve()
    assert second.reserve() > 0  # the second pool sees the first one's connects


def test_each_endpoint_has_its_own_bucket() -> None:
    host = unique_host()
    bucket = connect_rate_for(f"{host}:5432", 5)

    assert connect_rate_for(f"{host}:5433", 5) is not bucket
    assert connect_rate_for(f"{unique_host()}:5432", 5) is not bucket


def test_pools_asking_100_then_5_then_100_each_get_the_rate_they_asked_for() -> None:
    endpoint = f"{unique_host()}:5432"

    first = connect_rate_for(endpoint, 100)
    strict = connect_rate_for(endpoint, 5)
    third = connect_rate_for(endpoint, 100)

    assert first is not None
    assert strict is not None
    assert third is not None
    assert (first.rate, strict.rate, third.rate) == (100, 5, 100)  # no ratchet down to 5
    assert third is first  # the same rate to the same endpoint: one shared cap
    assert strict is not first


def test_a_strict_pool_does_not_slow_a_looser_one_to_the_same_endpoint() -> None:
    endpoint = f"{unique_host()}:3306"
    strict = connect_rate_for(endpoint, 1)
    loose = connect_rate_for(endpoint, 100)
    assert strict is not None
    assert loose is not None
    strict.reserve()  # the strict pool used its one connection of this second

    assert [loose.reserve() for _ in range(100)] == [0.0] * 100


def test_endpoint_bucket_uses_the_requested_rate() -> None:
    bucket = connect_rate_for(f"{unique_host()}:3306", 40)

    assert bucket is not None
    assert (bucket.rate, bucket.burst) == (40, 40)


class TestWaitInVirtualTime:
    """wait() sleeps until the reserved slot, measured on trio's mock clock (no real time)."""

    @pytest.fixture
    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        return ("trio", {"clock": MockClock(autojump_threshold=0)})

    @pytest.mark.anyio
    async def test_concurrent_waiters_start_one_interval_apart_after_the_burst(self) -> None:
        bucket = ConnectRate(rate=4, burst=2, clock=anyio.current_time)
        started = anyio.current_time()
        finished: list[float] = []

        async def connect() -> None:
            await bucket.wait()
            finished.append(anyio.current_time() - started)

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(connect)

        assert sorted(finished) == pytest.approx([0, 0, 0.25, 0.5, 0.75, 1.0])

    @pytest.mark.anyio
    async def test_wait_within_the_burst_does_not_sleep(self) -> None:
        bucket = ConnectRate(rate=1, burst=3, clock=anyio.current_time)
        started = anyio.current_time()

        for _ in range(3):
            await bucket.wait()

        assert anyio.current_time() == started

    @pytest.mark.anyio
    async def test_cancelled_waiter_keeps_its_slot_so_the_cap_still_holds(self) -> None:
        bucket = ConnectRate(rate=1, burst=1, clock=anyio.current_time)
        await bucket.wait()

        with anyio.move_on_after(0.5):
            await bucket.wait()  # reserved t+1, cancelled at t+0.5

        assert bucket.reserve() == pytest.approx(1.5)
