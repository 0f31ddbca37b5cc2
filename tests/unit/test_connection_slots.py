"""ConnectionSlots: never more than max_size connections, opening included; nothing leaks."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from iampool import ConfigError, IamPoolError, PoolClosedError
from iampool.pools._slots import ConnectionSlots

from .fake_servers import FakeServer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # RedshiftPool builds on these slots and is pure anyio: trio users get it too.
    backend: str = request.param
    return backend


class Connection:
    def __init__(self, server: Server, number: int) -> None:
        self.server = server
        self.number = number
        self.closed = False

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True
        self.server.live.discard(self)

    def __repr__(self) -> str:
        return f"Connection({self.number})"


class Server(FakeServer[Connection]):
    def __init__(self, *, gate: anyio.Event | None = None, failures: int = 0) -> None:
        super().__init__(Connection, gate=gate, failures=failures)


def slots_for(server: Server, max_size: int) -> ConnectionSlots[Connection]:
    return ConnectionSlots(server.open, Connection.close, max_size=max_size)


def anything(connection: Connection) -> bool:
    return True


def still_open(connection: Connection) -> bool:
    return not connection.closed


async def test_200_acquirers_never_have_more_than_max_size_open_or_opening() -> None:
    gate = anyio.Event()
    server = Server(gate=gate)
    slots = slots_for(server, max_size=7)
    served = 0

    async def use_once() -> None:
        nonlocal served
        connection = await slots.acquire(still_open)
        assert slots.size <= 7
        await anyio.lowlevel.checkpoint()
        served += 1
        slots.release(connection, reuse=True)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(use_once)
            await anyio.wait_all_tasks_blocked()
            assert (server.opening, slots.size) == (7, 7)  # the other 193 wait for a slot
            gate.set()

    assert served == 200
    assert server.peak == 7
    assert server.opened == 7  # released connections were reused, not reopened
    assert (slots.size, slots.idle, len(server.live)) == (7, 7, 7)


async def test_idle_connections_are_reused_most_recent_first() -> None:
    slots = slots_for(Server(), max_size=3)
    first = await slots.acquire(anything)
    second = await slots.acquire(anything)
    slots.release(first, reuse=True)
    slots.release(second, reuse=True)

    assert await slots.acquire(anything) is second
    assert await slots.acquire(anything) is first


async def test_idle_connection_that_is_not_reusable_is_closed_and_replaced() -> None:
    server = Server()
    slots = slots_for(server, max_size=2)
    stale = await slots.acquire(anything)
    slots.release(stale, reuse=True)

    fresh = await slots.acquire(lambda connection: connection is not stale)

    assert fresh is not stale
    assert stale.closed
    assert (slots.size, server.opened, len(server.live)) == (1, 2, 1)


async def test_release_without_reuse_closes_the_connection() -> None:
    server = Server()
    slots = slots_for(server, max_size=1)
    connection = await slots.acquire(anything)

    slots.release(connection, reuse=False)

    assert connection.closed
    assert (slots.size, slots.idle) == (0, 0)


async def test_releasing_twice_or_a_stranger_does_not_add_capacity() -> None:
    server = Server()
    slots = slots_for(server, max_size=1)
    connection = await slots.acquire(anything)
    slots.release(connection, reuse=True)
    slots.release(connection, reuse=True)
    slots.release(Connection(server, 99), reuse=True)
    held = await slots.acquire(anything)
    second_acquired = anyio.Event()

    async def acquire_second() -> None:
        await slots.acquire(anything)
        second_acquired.set()

    async with anyio.create_task_group() as group:
        group.start_soon(acquire_second)
        await anyio.wait_all_tasks_blocked()
        assert not second_acquired.is_set()  # still one slot only
        slots.release(held, reuse=True)
        await second_acquired.wait()

    assert slots.size == 1


async def test_cancelled_while_waiting_for_a_slot_leaks_nothing() -> None:
    server = Server()
    slots = slots_for(server, max_size=1)
    held = await slots.acquire(anything)

    async with anyio.create_task_group() as group:
        group.start_soon(slots.acquire, anything)
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()

    slots.release(held, reuse=True)
    with anyio.fail_after(5):
        assert await slots.acquire(anything) is held  # the slot came back
    assert (slots.size, server.opened) == (1, 1)


async def test_cancelled_while_opening_leaks_no_slot_and_no_connection() -> None:
    gate = anyio.Event()
    server = Server(gate=gate)
    slots = slots_for(server, max_size=1)

    async with anyio.create_task_group() as group:
        group.start_soon(slots.acquire, anything)
        await anyio.wait_all_tasks_blocked()
        assert (server.opening, slots.size) == (1, 1)
        group.cancel_scope.cancel()

    assert (server.alive, slots.size) == (0, 0)
    gate.set()
    with anyio.fail_after(5):
        connection = await slots.acquire(anything)
    assert (slots.size, server.alive) == (1, 1)
    assert not connection.closed


async def test_failed_open_frees_its_slot_for_a_waiter() -> None:
    gate = anyio.Event()
    server = Server(gate=gate, failures=1)
    slots = slots_for(server, max_size=1)
    failures: list[BaseException] = []
    acquired: list[Connection] = []

    async def acquire_expecting_failure() -> None:
        with pytest.raises(ConnectionRefusedError) as caught:
            await slots.acquire(anything)
        failures.append(caught.value)

    async def acquire() -> None:
        acquired.append(await slots.acquire(anything))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(acquire_expecting_failure)
            await anyio.wait_all_tasks_blocked()
            group.start_soon(acquire)
            await anyio.wait_all_tasks_blocked()
            assert server.opening == 1  # the waiter waits for the only slot
            gate.set()

    assert len(failures) == 1
    assert len(acquired) == 1
    assert (slots.size, server.opened, len(server.live)) == (1, 1, 1)


async def test_prefill_opens_new_connections_until_count_exist() -> None:
    server = Server()
    slots = slots_for(server, max_size=5)
    connection = await slots.acquire(anything)
    slots.release(connection, reuse=True)

    with anyio.fail_after(5):  # used to re-take the idle one forever
        await slots.prefill(3)

    assert (slots.size, slots.idle, server.opened) == (3, 3, 3)


async def test_prefill_counts_connections_in_use() -> None:
    server = Server()
    slots = slots_for(server, max_size=5)
    await slots.acquire(anything)
    await slots.acquire(anything)

    await slots.prefill(3)

    assert (slots.size, slots.idle, server.opened) == (3, 1, 3)


async def test_discard_idle_closes_idle_connections_only() -> None:
    server = Server()
    slots = slots_for(server, max_size=3)
    used = await slots.acquire(anything)
    await slots.prefill(3)

    slots.discard_idle()

    assert (slots.size, slots.idle) == (1, 0)
    assert server.live == {used}  # the connection in use is the one left


async def test_close_closes_idle_connections_and_refuses_acquires() -> None:
    server = Server()
    slots = slots_for(server, max_size=2)
    await slots.prefill(2)

    slots.close()

    assert slots.closing
    assert (slots.size, server.alive) == (0, 0)
    with pytest.raises(RuntimeError, match="closing"):
        await slots.acquire(anything)
    with anyio.fail_after(5):
        await slots.wait_released()


async def test_waiter_for_a_slot_is_refused_when_the_pool_closes() -> None:
    server = Server()
    slots = slots_for(server, max_size=1)
    held = await slots.acquire(anything)
    outcome: list[BaseException] = []

    async def wait_for_slot() -> None:
        with pytest.raises(RuntimeError, match="closing") as caught:
            await slots.acquire(anything)
        outcome.append(caught.value)

    async with anyio.create_task_group() as group:
        group.start_soon(wait_for_slot)
        await anyio.wait_all_tasks_blocked()
        slots.close()
        slots.release(held, reuse=True)  # hands the slot to the waiter, which must refuse

    assert len(outcome) == 1
    assert held.closed
    assert (slots.size, server.alive) == (0, 0)


async def test_wait_released_waits_for_connections_in_use_then_closes_them() -> None:
    server = Server()
    slots = slots_for(server, max_size=2)
    first = await slots.acquire(anything)
    second = await slots.acquire(anything)
    released = anyio.Event()

    async def wait_released() -> None:
        await slots.wait_released()
        released.set()

    async with anyio.create_task_group() as group:
        slots.close()
        group.start_soon(wait_released)
        await anyio.wait_all_tasks_blocked()
        assert not released.is_set()
        slots.release(first, reuse=True)
        await anyio.wait_all_tasks_blocked()
        assert not released.is_set()
        assert first.closed  # released into a closing pool: closed, not idled
        slots.release(second, reuse=True)

    assert released.is_set()
    assert (slots.size, server.alive) == (0, 0)


async def test_connection_opening_when_the_pool_closes_is_closed_and_refused() -> None:
    gate = anyio.Event()
    server = Server(gate=gate)
    slots = slots_for(server, max_size=2)
    refused: list[BaseException] = []
    released = anyio.Event()

    async def acquire() -> None:
        with pytest.raises(RuntimeError, match="closing") as caught:
            await slots.acquire(anything)
        refused.append(caught.value)

    async def wait_released() -> None:
        await slots.wait_released()
        released.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(acquire)
            await anyio.wait_all_tasks_blocked()
            slots.close()
            group.start_soon(wait_released)
            await anyio.wait_all_tasks_blocked()
            assert not released.is_set()  # a connection is still on its way
            gate.set()

    assert len(refused) == 1
    assert released.is_set()
    assert server.opened == 1
    assert (slots.size, server.alive) == (0, 0)


async def test_terminate_closes_every_connection_in_use_or_idle() -> None:
    server = Server()
    slots = slots_for(server, max_size=3)
    used = await slots.acquire(anything)
    await slots.prefill(3)

    slots.terminate()

    assert used.closed
    assert (slots.size, server.alive) == (0, 0)
    slots.release(used, reuse=True)  # the owner gives it back later: nothing happens
    assert slots.size == 0
    with anyio.fail_after(5):
        await slots.wait_released()


@pytest.mark.parametrize("seed", range(5))
async def test_random_cancellations_and_failures_leak_nothing(seed: int) -> None:
    rng = random.Random(seed)
    server = Server()

    async def open_sometimes_failing() -> Connection:
        for _ in range(rng.randrange(3)):
            await anyio.lowlevel.checkpoint()
        if rng.random() < 0.2:
            server.failures = 1
        return await server.open()

    slots = ConnectionSlots(open_sometimes_failing, Connection.close, max_size=5)

    async def client() -> None:
        with anyio.CancelScope() as scope:
            if rng.random() < 0.3:
                cancel_after = rng.randrange(6)

                async def cancel_later() -> None:
                    for _ in range(cancel_after):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                group.start_soon(cancel_later)
            try:
                connection = await slots.acquire(still_open)
            except ConnectionRefusedError:
                return
            try:
                assert slots.size <= 5
                for _ in range(rng.randrange(3)):
                    await anyio.lowlevel.checkpoint()
            finally:
                slots.release(connection, reuse=rng.random() < 0.8)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(client)

    assert server.peak <= 5
    assert slots.size == slots.idle == len(server.live)  # none left in use
    slots.close()
    await slots.wait_released()
    assert server.alive == 0


# --- sizes, filling, closed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_size", "max_size", "fields"),
    [
        (-1, 5, ["min_size"]),
        (0, 0, ["max_size"]),
        (6, 5, ["min_size"]),
        (-1, 0, ["min_size", "max_size"]),
        (1.5, 5, ["min_size"]),
        (True, 5, ["min_size"]),
    ],
)
def test_invalid_sizes_are_a_config_error_naming_each_field(
    min_size: int, max_size: int, fields: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        ConnectionSlots(Server().open, Connection.close, min_size=min_size, max_size=max_size)

    assert caught.value.fields == fields
    assert caught.value.context == "pool size"


async def test_fill_opens_min_size_connections() -> None:
    server = Server()
    slots = ConnectionSlots(server.open, Connection.close, min_size=3, max_size=5)

    await slots.fill()

    assert (slots.size, slots.idle, server.opened) == (3, 3, 3)


async def test_start_that_fails_closes_what_it_opened_and_raises() -> None:
    server = Server()
    slots = ConnectionSlots(server.open, Connection.close, min_size=3, max_size=5)

    async def open_two_then_fail() -> Connection:
        if server.opened == 2:
            raise ConnectionRefusedError("refused")
        return await server.open()

    slots._open = open_two_then_fail
    with pytest.raises(ConnectionRefusedError):
        await slots.start()

    assert server.opened == 2
    assert server.live == set()  # the two that opened were closed
    assert slots.closing
    with pytest.raises(PoolClosedError):
        await slots.acquire(anything)


async def test_acquire_from_a_closing_pool_raises_pool_closed_error() -> None:
    slots = slots_for(Server(), max_size=1)
    slots.close()

    with pytest.raises(PoolClosedError, match="closing pool") as caught:
        await slots.acquire(anything)

    assert isinstance(caught.value, RuntimeError)  # what aiomysql users catch
    assert isinstance(caught.value, IamPoolError)
