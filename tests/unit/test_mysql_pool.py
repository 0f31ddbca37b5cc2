"""MySQLPool: aiomysql's pool interface over ConnectionSlots, with fake connections."""

from __future__ import annotations

import asyncio
import logging
import ssl

import anyio
import anyio.lowlevel
import pytest

from iampool import AwsIamConfig, ConfigError, CredentialCache
from iampool.pools import resolve
from iampool.pools._dsn import parse_target
from iampool.pools.aiomysql import MySQLPool, _settings, vet

from .fake_servers import FakeServer

pytestmark = pytest.mark.anyio


class FakeConnection:
    """The part of aiomysql's Connection the pool looks at."""

    def __init__(self, server: MySQLServer, number: int) -> None:
        self.server = server
        self.number = number
        self.last_usage = asyncio.get_running_loop().time()
        self.in_transaction = False
        self._closed = False
        self.fully_closed = asyncio.Event()  # the TLS goodbye ended; set by a test or at once
        self.fully_closed.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self.server.live.discard(self)

    async def wait_closed(self) -> None:
        await self.fully_closed.wait()

    def get_transaction_status(self) -> bool:
        return self.in_transaction

    def __repr__(self) -> str:
        return f"FakeConnection({self.number})"


class MySQLServer(FakeServer[FakeConnection]):
    def __init__(self, *, gate: anyio.Event | None = None, failures: int = 0) -> None:
        super().__init__(FakeConnection, gate=gate, failures=failures)


def pool_for(
    server: MySQLServer, *, minsize: int = 0, maxsize: int = 10, pool_recycle: float = -1
) -> MySQLPool:
    return MySQLPool(server.open, minsize, maxsize, pool_recycle)


async def test_await_acquire_and_release_reuse_the_connection() -> None:
    server = MySQLServer()
    pool = pool_for(server)

    connection = await pool.acquire()
    assert (pool.size, pool.freesize) == (1, 0)
    pool.release(connection)

    assert (pool.size, pool.freesize) == (1, 1)
    assert await pool.acquire() is connection
    assert server.opened == 1


async def test_async_with_acquire_releases_on_exit() -> None:
    server = MySQLServer()
    pool = pool_for(server)

    async with pool.acquire() as connection:
        assert isinstance(connection, FakeConnection)
        assert pool.freesize == 0

    assert (pool.size, pool.freesize) == (1, 1)
    assert not connection.closed


async def test_async_with_acquire_releases_when_the_body_raises_or_is_cancelled() -> None:
    server = MySQLServer()
    pool = pool_for(server)

    with pytest.raises(ZeroDivisionError):
        async with pool.acquire():
            raise ZeroDivisionError
    with anyio.CancelScope() as scope:
        async with pool.acquire():
            scope.cancel()
            await anyio.lowlevel.checkpoint()

    assert (pool.size, pool.freesize, server.opened) == (1, 1, 1)


async def test_release_returns_an_awaitable_future_that_is_already_done() -> None:
    pool = pool_for(MySQLServer())
    connection = await pool.acquire()

    done = pool.release(connection)

    assert isinstance(done, asyncio.Future)
    assert done.done()
    assert done.result() is None
    await done


async def test_200_acquirers_never_have_more_than_maxsize_open_or_opening() -> None:
    gate = anyio.Event()
    server = MySQLServer(gate=gate)
    pool = pool_for(server, maxsize=10)
    served = 0

    async def query() -> None:
        nonlocal served
        async with pool.acquire():
            assert pool.size <= 10
            await anyio.lowlevel.checkpoint()
            served += 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(query)
            await anyio.wait_all_tasks_blocked()
            assert (server.opening, pool.size) == (10, 10)
            gate.set()

    assert served == 200
    assert server.peak == 10
    assert server.opened == 10
    pool.close()
    await pool.wait_closed()
    assert server.alive == 0


async def test_cancelled_acquire_waiting_for_a_slot_leaks_nothing() -> None:
    server = MySQLServer()
    pool = pool_for(server, maxsize=1)
    held = await pool.acquire()

    async with anyio.create_task_group() as group:
        group.start_soon(pool._acquire)
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()

    pool.release(held)
    with anyio.fail_after(5):
        assert await pool.acquire() is held
    assert (pool.size, server.opened) == (1, 1)


async def test_cancelled_acquire_while_opening_leaks_no_slot_and_no_connection() -> None:
    gate = anyio.Event()
    server = MySQLServer(gate=gate)
    pool = pool_for(server, maxsize=1)

    async with anyio.create_task_group() as group:
        group.start_soon(pool._acquire)
        await anyio.wait_all_tasks_blocked()
        assert (server.opening, pool.size) == (1, 1)
        group.cancel_scope.cancel()

    assert (pool.size, server.alive) == (0, 0)
    gate.set()
    with anyio.fail_after(5):
        await pool.acquire()
    assert (pool.size, server.alive) == (1, 1)


async def test_failed_open_frees_its_slot_for_a_waiter() -> None:
    gate = anyio.Event()
    server = MySQLServer(gate=gate, failures=1)
    pool = pool_for(server, maxsize=1)
    outcomes: list[str] = []

    async def acquire() -> None:
        try:
            await pool.acquire()
        except ConnectionRefusedError:
            outcomes.append("refused")
        else:
            outcomes.append("connected")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(acquire)
            await anyio.wait_all_tasks_blocked()
            group.start_soon(acquire)
            await anyio.wait_all_tasks_blocked()
            gate.set()

    assert outcomes == ["refused", "connected"]
    assert (pool.size, server.alive) == (1, 1)


async def test_closed_connection_is_not_reused() -> None:
    server = MySQLServer()
    pool = pool_for(server)
    connection = await pool.acquire()
    pool.release(connection)

    connection.close()  # the server went away while it sat idle
    replacement = await pool.acquire()

    assert replacement is not connection
    assert (pool.size, server.opened) == (1, 2)


async def test_connection_closed_while_in_use_is_dropped_on_release() -> None:
    server = MySQLServer()
    pool = pool_for(server)
    connection = await pool.acquire()
    connection.close()

    pool.release(connection)

    assert (pool.size, pool.freesize) == (0, 0)


async def test_connection_older_than_pool_recycle_is_closed_not_reused() -> None:
    server = MySQLServer()
    pool = pool_for(server, pool_recycle=10)
    connection = await pool.acquire()
    pool.release(connection)

    connection.last_usage -= 11
    replacement = await pool.acquire()

    assert replacement is not connection
    assert connection.closed
    assert (pool.size, server.opened) == (1, 2)


async def test_connection_younger_than_pool_recycle_is_reused() -> None:
    pool = pool_for(MySQLServer(), pool_recycle=10)
    connection = await pool.acquire()
    pool.release(connection)

    connection.last_usage -= 9

    assert await pool.acquire() is connection


async def test_without_pool_recycle_old_connections_are_reused() -> None:
    pool = pool_for(MySQLServer())
    connection = await pool.acquire()
    pool.release(connection)

    connection.last_usage -= 86_400

    assert await pool.acquire() is connection


async def test_connection_released_inside_a_transaction_is_closed_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = MySQLServer()
    pool = pool_for(server)
    connection = await pool.acquire()
    connection.in_transaction = True

    with caplog.at_level(logging.WARNING, logger="iampool"):
        pool.release(connection)

    assert connection.closed
    assert (pool.size, pool.freesize) == (0, 0)
    [record] = [record for record in caplog.records if record.name == "iampool"]
    assert record.levelno == logging.WARNING
    assert "transaction" in record.getMessage()


async def test_release_into_a_closing_pool_closes_the_connection() -> None:
    server = MySQLServer()
    pool = pool_for(server)
    connection = await pool.acquire()
    pool.close()

    pool.release(connection)

    assert connection.closed
    await pool.wait_closed()
    assert pool.closed
    assert server.alive == 0


async def test_wait_closed_waits_for_connections_in_use() -> None:
    server = MySQLServer()
    pool = pool_for(server, maxsize=3)
    first = await pool.acquire()
    second = await pool.acquire()
    pool.release(await pool.acquire())  # one idle
    finished = anyio.Event()

    async def close() -> None:
        pool.close()
        await pool.wait_closed()
        finished.set()

    async with anyio.create_task_group() as group:
        group.start_soon(close)
        await anyio.wait_all_tasks_blocked()
        assert not finished.is_set()
        assert not pool.closed
        assert (pool.size, pool.freesize) == (2, 0)  # the idle one is closed at once
        pool.release(first)
        await anyio.wait_all_tasks_blocked()
        assert not finished.is_set()
        pool.release(second)

    assert pool.closed
    assert server.alive == 0


async def test_acquire_after_close_raises_runtime_error() -> None:
    pool = pool_for(MySQLServer())
    pool.close()

    with pytest.raises(RuntimeError, match="closing"):
        await pool.acquire()
    with pytest.raises(RuntimeError, match="closing"):
        async with pool.acquire():
            pass


async def test_acquire_waiting_when_the_pool_closes_raises_runtime_error() -> None:
    server = MySQLServer()
    pool = pool_for(server, maxsize=1)
    held = await pool.acquire()
    refused: list[RuntimeError] = []

    async def acquire() -> None:
        try:
            await pool.acquire()
        except RuntimeError as exc:
            refused.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(acquire)
        await anyio.wait_all_tasks_blocked()
        pool.close()
        pool.release(held)

    assert len(refused) == 1
    await pool.wait_closed()
    assert server.alive == 0


async def test_wait_closed_before_close_raises_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="before close"):
        await pool_for(MySQLServer()).wait_closed()


async def test_terminate_closes_every_connection_in_use_or_idle() -> None:
    server = MySQLServer()
    pool = pool_for(server, maxsize=3)
    used = await pool.acquire()
    idle = await pool.acquire()
    pool.release(idle)

    pool.terminate()

    assert pool.closed
    assert used.closed
    assert idle.closed
    assert (pool.size, server.alive) == (0, 0)
    assert pool.release(used).done()  # giving it back later is harmless
    assert pool.size == 0


async def test_async_with_pool_closes_it_on_exit() -> None:
    server = MySQLServer()

    async with pool_for(server) as pool, pool.acquire():
        pass

    assert pool.closed
    assert server.alive == 0


async def test_fill_opens_minsize_connections() -> None:
    server = MySQLServer()
    pool = pool_for(server, minsize=3, maxsize=5)

    with anyio.fail_after(5):
        await pool.fill()

    assert (pool.minsize, pool.maxsize) == (3, 5)
    assert (pool.size, pool.freesize, server.opened) == (3, 3, 3)


async def test_clear_closes_idle_connections_without_opening_any() -> None:
    server = MySQLServer()
    pool = pool_for(server, minsize=3, maxsize=3)
    await pool.fill()
    used = await pool.acquire()

    await pool.clear()

    assert (pool.size, pool.freesize) == (1, 0)
    assert server.live == {used}
    assert server.opened == 3


@pytest.mark.parametrize(("minsize", "maxsize"), [(-1, 5), (0, 0), (6, 5)])
def test_invalid_sizes_are_a_config_error_and_a_value_error(minsize: int, maxsize: int) -> None:
    with pytest.raises(ConfigError, match="_size") as caught:
        MySQLPool(MySQLServer().open, minsize, maxsize)

    assert isinstance(caught.value, ValueError)


# --- the keyword arguments each aiomysql connection gets --------------------------------------

CONFIG = AwsIamConfig.from_extra({"enabled": True, "region": "us-east-1", "db_username": "app"})


def test_settings_log_in_as_db_username_with_clear_password_over_tls() -> None:
    plan = resolve(
        "mysql://db.example.com/appdb",
        CONFIG,
        CredentialCache(),
        driver_kwargs={"connect_timeout": 5, "autocommit": True},
    )

    settings = _settings(plan)

    assert settings["host"] == "db.example.com"
    assert settings["port"] == 3306
    assert settings["user"] == "app"
    assert settings["db"] == "appdb"
    assert settings["auth_plugin"] == "mysql_clear_password"
    assert isinstance(settings["ssl"], ssl.SSLContext)
    assert (settings["connect_timeout"], settings["autocommit"]) == (5, True)
    assert "password" not in settings


def test_settings_use_the_callers_ssl_context_as_is() -> None:
    mine = ssl.create_default_context()

    plan = resolve(
        "mysql://db.example.com/appdb", CONFIG, CredentialCache(), driver_kwargs={"ssl": mine}
    )

    settings = _settings(plan)

    assert settings["ssl"] is mine


def test_settings_refuse_ssl_off() -> None:
    with pytest.raises(ConfigError, match="ssl"):
        resolve(
            "mysql://db.example.com/appdb", CONFIG, CredentialCache(), driver_kwargs={"ssl": False}
        )


def test_settings_refuse_keywords_iampool_owns_naming_each() -> None:
    target = parse_target("mysql://db.example.com/appdb", CONFIG)

    with pytest.raises(ConfigError) as caught:
        vet(target, {"password": "secret", "user": "root", "auth_plugin": "x"}, pool=False)

    assert caught.value.fields == ["auth_plugin", "password", "user"]
    assert "secret" not in str(caught.value)


async def test_wait_closed_waits_until_discarded_connections_finished_closing() -> None:
    server = MySQLServer()
    pool = pool_for(server)
    connection = await pool.acquire()
    connection.fully_closed.clear()  # its close_notify exchange is still under way
    pool.release(connection)
    pool.close()
    waiting = asyncio.ensure_future(pool.wait_closed())
    await anyio.wait_all_tasks_blocked()
    assert (connection.closed, waiting.done(), pool.closed) == (True, False, False)
    connection.fully_closed.set()
    await waiting
    assert pool.closed
