"""psycopg 3 and asyncmy (DESIGN §6, "every other driver"): iampool vs the bare driver.

Same method as ``bench_pool.py`` (whose helpers and report this script reuses): per driver,
``SELECT 1`` throughput of 64 workers on a pool of 10, and new-connection latency with a warm
cache, each against the driver's own pool / connect with a static password (one IAM token minted
up front) through the same ``IamGateway`` and TLS context, in the same run. Rounds interleave and
rotate; the medians of per-round ratios are reported, with an A/A control (a second bare pool or
connect) showing how far noise alone moves a ratio.

- psycopg: ``iampool.create_pool("postgresql+psycopg://...")`` (the real
  ``psycopg_pool.AsyncConnectionPool`` with iampool's ``kwargs`` callable and connection class)
  vs ``psycopg_pool.AsyncConnectionPool`` with static ``kwargs``;
- asyncmy: ``iampool.create_pool("mysql+asyncmy://...")`` (``asyncmy.Pool`` with a
  ``password_creator``) vs ``asyncmy.create_pool`` with a static password.

Run: ``.venv/bin/python benchmarks/bench_drivers.py`` (about 90 s). Prints numbers, never secrets.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import asyncmy
import psycopg
from psycopg_pool import AsyncConnectionPool

import iampool
from bench_pool import (
    BASELINE,
    CONNECTS,
    CONTROL,
    IAMPOOL,
    MYSQL_UPSTREAM,
    PG_UPSTREAM,
    POOL_SIZE,
    REGION,
    ROUNDS,
    SLICE_S,
    USER,
    EngineResult,
    Pool,
    aws_work,
    compare_connects,
    compare_rates,
    report,
    start_gateway,
    static_token,
)
from iampool import AwsIamConfig, CredentialCache
from iampool.testing import FakeAws, IamGateway


async def psycopg_select_1(pool: Pool) -> None:
    async with pool.connection() as connection:
        cursor = await connection.execute("SELECT 1")
        await cursor.fetchone()


async def asyncmy_select_1(pool: Pool) -> None:
    async with pool.acquire() as connection, connection.cursor() as cursor:
        await cursor.execute("SELECT 1")
        await cursor.fetchone()


def scheme_dsn(scheme: str, gateway: IamGateway) -> str:
    return f"{scheme}://{gateway.dsn(USER).split('://', 1)[1]}"


async def bench_psycopg(
    gateway: IamGateway, config: AwsIamConfig, cache: CredentialCache, token: str
) -> EngineResult:
    dsn = scheme_dsn("postgresql+psycopg", gateway)
    static = {
        "host": gateway.host,
        "port": gateway.port,
        "user": USER,
        "dbname": gateway.upstream.database,
        "password": token,
        "sslmode": "verify-full",
        "sslrootcert": str(gateway.ca_path),
    }
    pools: dict[str, Any] = {}
    try:
        pools[IAMPOOL] = await iampool.create_pool(
            dsn, aws_iam=config, cache=cache, min_size=POOL_SIZE, max_size=POOL_SIZE
        )
        for side in (BASELINE, CONTROL):
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                kwargs=static, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False
            )
            await pool.open(wait=True)
            pools[side] = pool
        before, logins = aws_work(cache), gateway.accepted
        throughput = await compare_rates(pools, psycopg_select_1, ROUNDS, SLICE_S)
        logins = gateway.accepted - logins
    finally:
        for pool in pools.values():
            await pool.close()

    async def close(connection: Any) -> None:
        await connection.close()

    connects = await compare_connects(
        {
            IAMPOOL: lambda: iampool.connect(dsn, aws_iam=config, cache=cache),
            BASELINE: lambda: psycopg.AsyncConnection.connect(**static),
            CONTROL: lambda: psycopg.AsyncConnection.connect(**static),
        },
        close,
    )
    return EngineResult("psycopg", throughput, None, connects, logins, aws_work(cache) - before)


async def bench_asyncmy(
    gateway: IamGateway, config: AwsIamConfig, cache: CredentialCache, token: str
) -> EngineResult:
    tls = gateway.client_ssl_context()
    dsn = scheme_dsn("mysql+asyncmy", gateway)
    static = {
        "host": gateway.host,
        "port": gateway.port,
        "user": USER,
        "database": gateway.upstream.database,
        "password": token,
        "ssl": tls,
    }
    pools: dict[str, Any] = {}
    try:
        pools[IAMPOOL] = await iampool.create_pool(
            dsn, aws_iam=config, cache=cache, min_size=POOL_SIZE, max_size=POOL_SIZE, ssl=tls
        )
        for side in (BASELINE, CONTROL):
            pools[side] = await asyncmy.create_pool(minsize=POOL_SIZE, maxsize=POOL_SIZE, **static)
        before, logins = aws_work(cache), gateway.accepted
        throughput = await compare_rates(pools, asyncmy_select_1, ROUNDS, SLICE_S)
        logins = gateway.accepted - logins
    finally:
        for pool in pools.values():
            pool.close()
            await pool.wait_closed()

    async def close(connection: Any) -> None:
        await connection.ensure_closed()

    connects = await compare_connects(
        {
            IAMPOOL: lambda: iampool.connect(dsn, aws_iam=config, cache=cache, ssl=tls),
            BASELINE: lambda: asyncmy.connect(**static),
            CONTROL: lambda: asyncmy.connect(**static),
        },
        close,
    )
    return EngineResult("asyncmy", throughput, None, connects, logins, aws_work(cache) - before)


async def run(
    aws: FakeAws, pg: IamGateway, mysql: IamGateway
) -> tuple[dict[str, EngineResult], iampool.CacheStats]:
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": REGION,
            "role_arn": aws.create_role("bench-drivers"),
            "db_username": USER,
        }
    )
    cache = CredentialCache()
    try:
        results = {
            "psycopg": await bench_psycopg(pg, config, cache, await static_token(config, pg)),
            "asyncmy": await bench_asyncmy(mysql, config, cache, await static_token(config, mysql)),
        }
        return results, cache.stats()
    finally:
        await cache.aclose()


def main() -> int:
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    with FakeAws(region=REGION) as aws, aws.export_env():
        pg = start_gateway("postgresql", PG_UPSTREAM, aws)
        try:
            mysql = start_gateway("mysql", MYSQL_UPSTREAM, aws)
            try:
                results, stats = asyncio.run(run(aws, pg, mysql))
            finally:
                mysql.stop()
        finally:
            pg.stop()
    print(f"{CONNECTS} connects per side; pools of {POOL_SIZE}.")
    report(results, stats, time.perf_counter() - started, (load_at_start, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
