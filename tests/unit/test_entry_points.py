"""The entry points: the generic create_pool/connect and one typed module per driver.

The typed modules (``iampool.asyncpg``, ``iampool.psycopg``, ...) give a type checker the
driver's own pool type; they accept only their driver's DSNs and share the generic functions'
defaults and driver modules. (That the types are right is checked by mypy over
``tests/typing``.)
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

import iampool
from iampool import ConfigError, CredentialCache
from iampool.pools import DEFAULT_SIZES, driver_module
from iampool.pools._dsn import SCHEMES

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
    "asyncpg": "iampool.pools.postgres",
    "psycopg": "iampool.pools.psycopg",
    "aiomysql": "iampool.pools.mysql",
    "asyncmy": "iampool.pools.asyncmy",
    "redshift_connector": "iampool.pools.redshift",
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
    target, _ = iampool.pools.resolve(f"{scheme}://{HOST}/dev", config, CredentialCache())

    assert target.driver == driver
    assert driver_module(target.driver).__name__ == MODULES[driver]
