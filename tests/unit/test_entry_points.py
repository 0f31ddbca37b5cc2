"""The entry points: the generic create_pool/connect and one typed module per driver.

The typed modules (``iampool.asyncpg``, ``iampool.psycopg``, ...) give a type checker the
driver's own pool type; they accept only their driver's DSNs and share the generic functions'
defaults and driver modules. (That the types are right is checked by mypy over
``tests/typing``.)
"""

from __future__ import annotations

import gc
import importlib
import inspect
import sys
import warnings
from collections import Counter
from typing import Any

import anyio
import pytest
from sqlalchemy.engine import URL
from trio.testing import MockClock

import iampool
from iampool import ConfigError, CredentialCache, MissingExtraError
from iampool.pools import DEFAULT_SIZES, PendingPool, driver_module
from iampool.pools._dsn import SCHEMES
from iampool.sqlalchemy import async_creator

from .fakes import FakeSource

pytestmark = pytest.mark.anyio

AURORA = {"enabled": True, "region": "us-east-1", "db_username": "app"}
HOST = "db.cluster-abc.us-east-1.rds.amazonaws.com"
TYPED = {
    "asyncpg": "iampool.asyncpg",
    "psycopg": "iampool.psycopg",
    "aiomysql": "iampool.aiomysql",
    "asyncmy": "iampool.asyncmy",
    "redshift_connector": "iampool.redshift",
}

MODULES = {
    "asyncpg": "iampool.pools.asyncpg",
    "psycopg": "iampool.pools.psycopg",
    "aiomysql": "iampool.pools.aiomysql",
    "asyncmy": "iampool.pools.asyncmy",
    "redshift_connector": "iampool.pools.redshift_connector",
}


def test_every_scheme_names_a_driver_with_a_module_and_default_sizes() -> None:
    drivers = {driver for _, driver in SCHEMES.values()}

    assert drivers == set(DEFAULT_SIZES) == set(TYPED)
    for driver in drivers:
        module = driver_module(driver)
        assert inspect.iscoroutinefunction(module.create_pool)
        assert inspect.iscoroutinefunction(module.connect)


@pytest.mark.parametrize("driver", sorted(TYPED))
def test_typed_create_pool_defaults_to_the_drivers_own_sizes(driver: str) -> None:
    typed = importlib.import_module(TYPED[driver])
    parameters = inspect.signature(typed.create_pool).parameters

    sizes = (parameters["min_size"].default, parameters["max_size"].default)

    assert sizes == DEFAULT_SIZES[driver]  # type: ignore[index]


@pytest.mark.parametrize(
    ("module", "dsn"),
    [
        ("iampool.asyncpg", f"mysql://{HOST}/db"),
        ("iampool.asyncpg", f"postgresql+psycopg://{HOST}/db"),
        ("iampool.psycopg", f"postgresql://{HOST}/db"),
        ("iampool.aiomysql", f"mysql+asyncmy://{HOST}/db"),
        ("iampool.asyncmy", f"mysql://{HOST}/db"),
        ("iampool.redshift", f"postgresql://{HOST}/db"),
    ],
)
@pytest.mark.parametrize("entry", ["create_pool", "connect"])
async def test_typed_entry_points_refuse_another_drivers_dsn_before_connecting(
    module: str, dsn: str, entry: str
) -> None:
    function: Any = getattr(importlib.import_module(module), entry)
    cache = CredentialCache()
    try:
        with pytest.raises(ConfigError, match="entry point serves") as caught:
            await function(dsn, aws_iam=AURORA, cache=cache)
    finally:
        await cache.aclose()

    assert caught.value.fields == ["dsn"]
    assert cache.stats()["misses"] == 0  # nothing was minted


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_the_generic_functions_use_the_module_of_the_schemes_driver(scheme: str) -> None:
    engine, driver = SCHEMES[scheme]
    config = (
        {**AURORA, "cluster_identifier": "c1", "db_name": "dev"} if engine == "redshift" else AURORA
    )
    plan = iampool.pools.resolve(f"{scheme}://{HOST}/dev", config, CredentialCache())

    assert plan.target.driver == driver
    assert plan.driver is driver_module(driver)
    assert driver_module(driver).__name__ == MODULES[driver]


ENTRY_POINTS = [
    ("iampool", f"postgresql://{HOST}/db"),
    ("iampool.asyncpg", f"postgresql://{HOST}/db"),
    ("iampool.psycopg", f"postgresql+psycopg://{HOST}/db"),
    ("iampool.aiomysql", f"mysql://{HOST}/db"),
    ("iampool.asyncmy", f"mysql+asyncmy://{HOST}/db"),
    ("iampool.redshift", f"redshift://{HOST}/dev"),
]
REDSHIFT = {**AURORA, "cluster_identifier": "c1", "db_name": "dev"}


def config_for(dsn: str) -> dict[str, Any]:
    return REDSHIFT if dsn.startswith("redshift") else AURORA


@pytest.mark.parametrize(("module", "dsn"), ENTRY_POINTS)
async def test_async_with_create_pool_reports_a_bad_dsn_not_a_type_error(
    module: str, dsn: str, cache: CredentialCache, source: FakeSource
) -> None:
    create_pool: Any = importlib.import_module(module).create_pool

    with pytest.raises(ConfigError, match="sslmode"):
        async with create_pool(f"{dsn}?sslmode=disable", aws_iam=config_for(dsn), cache=cache):
            pytest.fail("the block must not run")

    assert source.calls == Counter()


@pytest.mark.parametrize(("module", "dsn"), ENTRY_POINTS)
def test_create_pool_left_unawaited_starts_nothing_and_warns_nothing(
    module: str, dsn: str, cache: CredentialCache, source: FakeSource
) -> None:
    create_pool: Any = importlib.import_module(module).create_pool

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pending = create_pool(dsn, aws_iam=config_for(dsn), cache=cache)
        del pending
        gc.collect()

    assert [str(warning.message) for warning in caught] == []  # no "never awaited"
    assert source.calls == Counter()


class FakePool:
    def __init__(self, *, hang: bool = False) -> None:
        self.closed = 0
        self.terminated = 0
        self.hang = hang  # close() waits forever, as for a connection never given back

    def terminate(self) -> None:
        self.terminated += 1


class TestPendingPool:
    """PendingPool with a fake pool: await it, or ``async with`` it (closed on exit), once."""

    @staticmethod
    def pending(*, hang: bool = False) -> tuple[PendingPool[FakePool], list[FakePool]]:
        opened: list[FakePool] = []

        async def open_pool() -> FakePool:
            opened.append(FakePool(hang=hang))
            return opened[-1]

        async def close(pool: FakePool) -> None:
            await anyio.sleep(0.1)  # closing takes a while: a cancellation can cut it short
            if pool.hang:
                await anyio.sleep_forever()
            pool.closed += 1

        return PendingPool(open_pool, close), opened

    async def test_awaiting_gives_the_pool_and_leaves_it_open(self) -> None:
        pending, opened = self.pending()

        pool = await pending

        assert opened == [pool]
        assert pool.closed == 0

    async def test_async_with_gives_the_pool_and_closes_it_once_on_exit(self) -> None:
        pending, opened = self.pending()

        async with pending as pool:
            assert pool.closed == 0

        assert opened == [pool]
        assert pool.closed == 1

    async def test_the_pool_is_closed_when_the_block_raises(self) -> None:
        pending, opened = self.pending()

        with pytest.raises(LookupError):
            async with pending:
                raise LookupError

        assert [pool.closed for pool in opened] == [1]

    async def test_a_cancelled_block_still_closes_the_pool(self) -> None:
        pending, opened = self.pending()

        with anyio.CancelScope() as scope:
            async with pending:
                scope.cancel()  # a timeout around the whole block
                await anyio.sleep_forever()

        assert [(pool.closed, pool.terminated) for pool in opened] == [(1, 0)]

    @pytest.mark.parametrize(
        "anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})]
    )
    async def test_a_cancelled_block_whose_close_hangs_is_terminated_after_5_s(self) -> None:
        pending, opened = self.pending(hang=True)
        started = anyio.current_time()

        with anyio.CancelScope() as scope:
            async with pending:
                scope.cancel()
                await anyio.sleep_forever()

        assert [(pool.closed, pool.terminated) for pool in opened] == [(0, 1)]
        assert anyio.current_time() - started == pytest.approx(5.0)  # the grace, then terminate

    async def test_a_close_cut_short_terminates_the_pool(self) -> None:
        pending, opened = self.pending(hang=True)

        with anyio.move_on_after(0.5):  # cancels the close, not the block
            async with pending:
                pass

        assert [(pool.closed, pool.terminated) for pool in opened] == [(0, 1)]

    async def test_nothing_opens_before_it_is_awaited(self) -> None:
        _, opened = self.pending()

        assert opened == []

    async def test_a_second_start_is_refused_and_opens_no_second_pool(self) -> None:
        pending, opened = self.pending()
        await pending

        with pytest.raises(RuntimeError, match="already awaited"):
            await pending
        with pytest.raises(RuntimeError, match="already awaited"):
            async with pending:
                pass

        assert len(opened) == 1


# A module the driver needs, made unimportable: (DSN, module, extra).
MISSING = [
    (f"postgresql://{HOST}/db", "asyncpg", "postgres"),
    (f"postgresql+psycopg://{HOST}/db", "psycopg_pool", "psycopg"),
    (f"mysql://{HOST}/db", "pymysql", "mysql"),
    (f"mysql+aiomysql://{HOST}/db", "aiomysql", "mysql"),
    (f"mysql+asyncmy://{HOST}/db", "asyncmy", "asyncmy"),
    (f"redshift://{HOST}/dev", "redshift_connector", "redshift"),
]


@pytest.mark.parametrize("entry", ["create_pool", "connect"])
@pytest.mark.parametrize(("dsn", "missing", "extra"), MISSING)
async def test_a_missing_driver_names_the_extra_to_install_before_any_aws_call(
    dsn: str,
    missing: str,
    extra: str,
    entry: str,
    cache: CredentialCache,
    source: FakeSource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # "import missing" now fails
    function: Any = getattr(iampool, entry)

    with pytest.raises(MissingExtraError) as caught:
        await function(dsn, aws_iam=config_for(dsn), cache=cache)

    assert f"pip install 'iampool[{extra}]'" in str(caught.value)
    assert f"pip install '.[{extra}]'" in str(caught.value)
    assert caught.value.name == missing
    assert isinstance(caught.value, ImportError)
    assert isinstance(caught.value, iampool.IamPoolError)
    assert source.calls == Counter()


def test_async_creator_names_the_missing_extra_at_engine_creation(
    cache: CredentialCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "asyncmy", None)

    with pytest.raises(MissingExtraError, match=r"iampool\[asyncmy\]"):
        async_creator(f"mysql+asyncmy://{HOST}/db", aws_iam=AURORA, cache=cache)


def test_async_creator_takes_a_sqlalchemy_url(cache: CredentialCache) -> None:
    url = URL.create("postgresql+asyncpg", username="app", host=HOST, database="db")

    creator = async_creator(
        url.update_query_dict({"sslmode": "verify-full"}), aws_iam=AURORA, cache=cache
    )

    assert inspect.iscoroutinefunction(creator)


@pytest.mark.parametrize(
    ("url", "field", "message"),
    [
        (URL.create("mysql+aiomysql", username="bob", host=HOST), "dsn", "names user 'bob'"),
        (
            URL.create("postgresql+psycopg", host=HOST, query={"sslmode": "allow"}),
            "sslmode",
            "plain",
        ),
        (URL.create("postgresql+asyncpg", database="db"), "dsn", "needs a host"),
    ],
)
def test_async_creator_reads_every_part_of_a_url(
    url: URL, field: str, message: str, cache: CredentialCache, source: FakeSource
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        async_creator(url, aws_iam=AURORA, cache=cache)

    assert caught.value.fields == [field]
    assert source.calls == Counter()


def test_async_creator_refuses_a_url_with_a_password_without_showing_it(
    cache: CredentialCache,
) -> None:
    url = URL.create("mysql+aiomysql", username="app", password="hunter2", host=HOST)

    with pytest.raises(ConfigError, match="must not contain a password") as caught:
        async_creator(url, aws_iam=AURORA, cache=cache)

    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("dsn", "kwargs", "field"),
    [
        (f"postgresql://{HOST}/db", {"ssl": False}, "ssl"),
        (f"mysql://{HOST}/db", {"ssl": "disable"}, "ssl"),
        (f"mysql+asyncmy://{HOST}/db", {"unix_socket": "/run/mysqld.sock"}, "unix_socket"),
        (f"postgresql+psycopg://{HOST}/db", {"sslmode": "disable"}, "sslmode"),
        (f"mysql://{HOST}/db?compress=1", {}, "compress"),
        (f"mysql://{HOST}/db", {"db": "other"}, "db"),
        (f"mysql://{HOST}/db", {"autocomit": True}, "autocomit"),
        (f"postgresql://{HOST}/db", {"comand_timeout": 1}, "comand_timeout"),
        (f"mysql+asyncmy://{HOST}/db", {"pool_recycle": 60}, "pool_recycle"),  # a pool's
    ],
)
def test_async_creator_checks_its_keywords_at_engine_creation(
    dsn: str, kwargs: dict[str, Any], field: str, cache: CredentialCache, source: FakeSource
) -> None:
    with pytest.raises(ConfigError) as caught:
        async_creator(dsn, aws_iam=AURORA, cache=cache, **kwargs)

    assert caught.value.fields == [field]
    assert source.calls == Counter()


def test_async_creator_checks_connect_rate_at_engine_creation(cache: CredentialCache) -> None:
    with pytest.raises(ValueError, match="connect_rate"):
        async_creator(f"postgresql://{HOST}/db", aws_iam=AURORA, cache=cache, connect_rate=0)


@pytest.mark.parametrize(("module", "dsn"), ENTRY_POINTS)
def test_asyncpg_style_keywords_without_a_dsn_are_a_type_error_naming_dsn(
    module: str, dsn: str
) -> None:
    # Documented choice: the DSN stays required (type checkers see it); Python refuses the
    # call before anything starts.
    create_pool: Any = importlib.import_module(module).create_pool

    with pytest.raises(TypeError, match="dsn"):
        create_pool(host=HOST, port=5432, user="app", database="db", aws_iam=config_for(dsn))
