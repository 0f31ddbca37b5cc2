"""How RedshiftPool's driver calls reach worker threads, with a fake driver connection.

Under asyncio the pool runs redshift-connector calls in threads of its own (never more than
``max_size``), under trio in anyio's worker threads through a limiter of the same size. A
connection keeps one cursor, runs one call at a time, and is closed by the thread still running
a call whose caller was cancelled. The real driver, gateway and server are exercised in
``tests/integration/test_redshift.py``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redshift_connector.error import InterfaceError

from iampool.pools.redshift_connector import RedshiftConnection, _DriverThreads

pytestmark = pytest.mark.anyio

THREAD_PREFIX = "iampool-redshift"


class OperationalError(Exception):
    """Named like redshift-connector's: the pool takes it as a lost connection."""


class Gate:
    """Parks calls in their threads until the test opens it; counts how many are inside."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.inside = 0
        self.peak = 0

    def pass_through(self) -> None:
        with self._lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self._changed.notify_all()
        self._open.wait()
        with self._lock:
            self.inside -= 1

    def wait_until_inside(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.inside >= count, timeout=10)

    def open(self) -> None:
        self._open.set()


class FakeCursor:
    def __init__(self, raw: FakeRaw) -> None:
        self.raw = raw
        self.rows: list[tuple[Any, ...]] = []
        self.redshift_rowcount = -1
        self.description: list[tuple[str]] | None = None

    def execute(self, query: str, args: Any) -> None:
        self.raw.statements.append(query)
        if self.raw.gate is not None:
            self.raw.gate.pass_through()
        if query == "SELECT 1 / 0":
            raise Exception({"S": "ERROR", "V": "ERROR", "C": "22012", "M": "division by zero"})
        if query == "lose the socket":
            raise OperationalError("server socket closed")
        default = [(1,)] if query.startswith("SELECT") else []
        self.rows = list(self.raw.results.get(query, default))
        self.redshift_rowcount = len(self.rows)
        self.description = [("column",)] if self.rows else None

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self.rows = self.rows, []
        return rows


class FakeRaw:
    """A stand-in for a redshift-connector Connection: records what was done to it."""

    def __init__(self, gate: Gate | None = None, *, close_raises: bool = False) -> None:
        self.gate = gate
        self.close_raises = close_raises
        self.results: dict[str, list[tuple[Any, ...]]] = {}
        self.statements: list[str] = []
        self.cursors: list[FakeCursor] = []
        self.events: list[str] = []

    def cursor(self) -> FakeCursor:
        self.cursors.append(FakeCursor(self))
        return self.cursors[-1]

    def close(self) -> None:
        self.events.append("close")
        if self.close_raises:
            raise InterfaceError("connection is closed")


_EARLIER: set[threading.Thread] = set()  # pool threads alive when the current test started


def pool_threads() -> list[threading.Thread]:
    """Pool threads this test started that are still alive."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(THREAD_PREFIX) and thread not in _EARLIER
    ]


@pytest.fixture
async def new_threads() -> AsyncIterator[Callable[[int], _DriverThreads]]:
    """Pools' threads, stopped after the test."""
    # Integration tests run earlier in the same process; a connection they closed may still
    # have its thread on its way out.
    _EARLIER.clear()
    _EARLIER.update(pool_threads())
    made: list[_DriverThreads] = []

    def new(size: int) -> _DriverThreads:
        made.append(_DriverThreads(size))
        return made[-1]

    yield new
    for threads in made:
        await threads.aclose()


def thread_name() -> str:
    return threading.current_thread().name


# -- the threads ------------------------------------------------------------------------------


async def test_asyncio_calls_run_in_the_pools_own_threads_one_more_per_connection_up_to_size(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(3)

    names = {await threads.run(thread_name, connects=True) for _ in range(5)}
    started = len(pool_threads())
    names |= {await threads.run(thread_name) for _ in range(20)}
    await threads.aclose()

    assert started == 3  # five connections opened, three threads: never more than size
    assert names <= {f"{THREAD_PREFIX}-{number}" for number in range(3)}
    assert pool_threads() == []  # aclose() waited for every thread to exit


async def test_concurrent_calls_use_every_thread_and_never_more_than_size(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(4)
    for _ in range(4):
        await threads.run(thread_name, connects=True)
    gate = Gate()

    async with anyio.create_task_group() as group:
        for _ in range(40):
            group.start_soon(threads.run, gate.pass_through)
        await anyio.to_thread.run_sync(gate.wait_until_inside, 4)
        gate.open()

    assert gate.peak == 4


async def test_a_cancelled_caller_stops_waiting_and_its_call_still_finishes_in_its_thread(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(1)
    gate = Gate()
    finished = threading.Event()

    def call() -> None:
        gate.pass_through()
        finished.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(threads.run, call)
            await anyio.to_thread.run_sync(gate.wait_until_inside, 1)
            scope.cancel()
    assert scope.cancelled_caught
    assert not finished.is_set()  # the caller did not wait for the call

    gate.open()
    await threads.aclose()
    assert finished.is_set()  # aclose() waited for it
    assert pool_threads() == []


async def test_an_exception_raised_in_the_thread_reaches_the_caller_unchanged(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(2)
    error = OperationalError("from the driver")

    def fail() -> None:
        raise error

    with pytest.raises(OperationalError) as caught:
        await threads.run(fail, connects=True)
    assert caught.value is error
    assert await threads.run(thread_name) in {f"{THREAD_PREFIX}-0", f"{THREAD_PREFIX}-1"}


async def test_stopped_threads_refuse_new_calls(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(2)
    await threads.run(thread_name, connects=True)
    await threads.aclose()

    with pytest.raises(RuntimeError, match="stopped"):
        await threads.run(thread_name)


async def test_a_connection_opened_for_a_cancelled_caller_is_discarded_not_leaked(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(1)
    gate = Gate()
    received: list[str] = []
    discarded: list[str] = []

    def connect() -> str:
        gate.pass_through()
        return "connection"

    async def open_connection() -> None:
        received.append(await threads.run(connect, connects=True, discard=discarded.append))

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(open_connection)
            await anyio.to_thread.run_sync(gate.wait_until_inside, 1)
            scope.cancel()
            gate.open()  # the caller is gone already
    await threads.aclose()

    assert received == []
    assert discarded == ["connection"]


async def test_a_result_its_caller_received_is_not_discarded(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(1)
    discarded: list[str] = []

    assert await threads.run(lambda: "connection", connects=True, discard=discarded.append) == (
        "connection"
    )
    await threads.aclose()

    assert discarded == []


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_calls_go_through_anyio_threads_no_more_than_size_at_once(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(2)
    gate = Gate()
    names: list[str] = []

    def call() -> None:
        names.append(thread_name())
        gate.pass_through()

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(threads.run, call)
        await anyio.to_thread.run_sync(gate.wait_until_inside, 2)
        gate.open()
    await threads.aclose()

    assert gate.peak == 2
    assert len(names) == 8
    assert not any(name.startswith(THREAD_PREFIX) for name in names)


# -- the connection ---------------------------------------------------------------------------


@pytest.fixture
def threads(new_threads: Callable[[int], _DriverThreads]) -> _DriverThreads:
    return new_threads(2)


async def test_one_cursor_serves_every_call_on_a_connection(threads: _DriverThreads) -> None:
    raw = FakeRaw()
    raw.results["SELECT id FROM t"] = [(1,), (2,)]
    connection = RedshiftConnection(raw, threads)

    assert await connection.fetchval("SELECT 1") == 1
    assert await connection.fetch("SELECT id FROM t") == [(1,), (2,)]
    await connection.execute("INSERT INTO t VALUES (3)")
    assert await connection.fetchrow("SELECT 1") == (1,)

    assert len(raw.cursors) == 1
    assert len(raw.statements) == 4


async def test_a_failed_statement_gets_a_fresh_cursor_and_keeps_the_connection(
    threads: _DriverThreads,
) -> None:
    raw = FakeRaw()
    connection = RedshiftConnection(raw, threads)
    await connection.fetchval("SELECT 1")

    with pytest.raises(Exception, match="division by zero"):
        await connection.fetchval("SELECT 1 / 0")
    assert await connection.fetchval("SELECT 1") == 1

    assert len(raw.cursors) == 2
    assert not connection.is_closed()


async def test_rows_left_unread_are_dropped_with_their_cursor(threads: _DriverThreads) -> None:
    raw = FakeRaw()
    raw.results["SELECT id FROM t"] = [(1,), (2,), (3,)]
    connection = RedshiftConnection(raw, threads)

    assert await connection.fetchrow("SELECT id FROM t") == (1,)
    first = raw.cursors[0]
    await connection.execute("SELECT id FROM t")
    await connection.fetch("SELECT id FROM t")  # all rows read: the cursor is kept
    await connection.fetchval("SELECT 1")

    assert first.rows == [(2,), (3,)]  # still in that cursor, which the connection let go
    assert len(raw.cursors) == 3


async def test_a_lost_connection_is_reported_closed_even_when_the_error_was_caught(
    threads: _DriverThreads,
) -> None:
    connection = RedshiftConnection(FakeRaw(), threads)

    with pytest.raises(OperationalError):
        await connection.execute("lose the socket")

    assert connection.is_closed()


async def test_a_call_on_a_closed_connection_raises_interface_error_and_starts_no_thread(
    threads: _DriverThreads,
) -> None:
    raw = FakeRaw()
    connection = RedshiftConnection(raw, threads)
    connection.close()

    with pytest.raises(InterfaceError, match="connection is closed"):
        await connection.fetchval("SELECT 1")

    assert raw.statements == []
    assert pool_threads() == []


async def test_close_never_raises_and_closes_the_driver_connection_once(
    threads: _DriverThreads,
) -> None:
    raw = FakeRaw(close_raises=True)
    connection = RedshiftConnection(raw, threads)

    connection.close()
    connection.close()

    assert raw.events == ["close"]
    assert connection.is_closed()


async def test_calls_on_one_connection_never_overlap(threads: _DriverThreads) -> None:
    gate = Gate()
    raw = FakeRaw(gate)
    connection = RedshiftConnection(raw, threads)
    await threads.run(thread_name, connects=True)
    await threads.run(thread_name, connects=True)  # two threads: both could take a call

    async with anyio.create_task_group() as group:
        group.start_soon(connection.fetchval, "SELECT 1")
        group.start_soon(connection.fetchval, "SELECT 2")
        await anyio.to_thread.run_sync(gate.wait_until_inside, 1)
        gate.open()

    assert gate.peak == 1
    assert sorted(raw.statements) == ["SELECT 1", "SELECT 2"]


async def test_a_close_during_a_call_is_done_by_that_thread_once_the_call_ends(
    threads: _DriverThreads,
) -> None:
    gate = Gate()
    raw = FakeRaw(gate)
    connection = RedshiftConnection(raw, threads)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(connection.fetchval, "SELECT pg_sleep(60)")
            await anyio.to_thread.run_sync(gate.wait_until_inside, 1)
            scope.cancel()
    connection.close()  # what the pool does with a connection whose caller was cancelled

    assert raw.events == []  # not under the running call's feet
    assert connection.is_closed()
    gate.open()
    await threads.aclose()
    assert raw.events == ["close"]


async def test_a_lone_connection_stops_its_own_thread_when_closed(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(1)
    await threads.run(thread_name, connects=True)
    connection = RedshiftConnection(FakeRaw(), threads, owns_threads=True)
    assert await connection.fetchval("SELECT 1") == 1

    connection.close()

    with pytest.raises(RuntimeError, match="stopped"):
        await threads.run(thread_name)
    await threads.aclose()
    assert pool_threads() == []


async def test_a_lone_connection_dropped_without_close_stops_its_thread(
    new_threads: Callable[[int], _DriverThreads],
) -> None:
    threads = new_threads(1)
    await threads.run(thread_name, connects=True)
    [thread] = pool_threads()
    connection = RedshiftConnection(FakeRaw(), threads, owns_threads=True)
    assert await connection.fetchval("SELECT 1") == 1

    del connection
    gc.collect()

    await anyio.to_thread.run_sync(thread.join, 10)
    assert not thread.is_alive()
