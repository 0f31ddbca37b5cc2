"""New-connection latency with a realistic CA bundle (DESIGN §6; issue 20), per driver and entry
path, against the floor: the bare driver with ONE prebuilt ``SSLContext`` and a static token.

The CA file holds 145 certificates, about the size of the RDS global bundle: throwaway CA
certificates made here (trustme's, built with ``cryptography``), then the test CA of each IAM
gateway in use (one per protocol; the gateways' certificates verify against the file with
``sslmode=verify-full``). Every iampool side reads
it from the DSN (``?sslmode=verify-full&sslrootcert=<file>``), as a deployment does.

Per driver (asyncpg, psycopg, aiomysql, asyncmy), sides measured in interleaved rounds whose
order rotates, each opening ONE new connection per round (closing is not timed):

- ``floor``: the bare driver through the same gateway: ``asyncpg.connect`` / ``aiomysql.connect``
  / ``asyncmy.connect`` with one ``SSLContext`` built from the file before the run; for psycopg,
  bare ``psycopg.AsyncConnection.connect`` with the same conninfo (``sslrootcert`` included:
  libpq cannot take a context); the password is one token minted up front (valid 15 minutes);
- ``control``: the floor again (A/A): how far noise alone moves a ratio in this run;
- ``connect``: ``iampool.connect(dsn)``;
- ``creator``: ``creator()`` of one ``iampool.sqlalchemy.async_creator(dsn)``;
- ``bare pool``: the driver's own pool (``min_size=0, max_size=1``) with the static token and
  one prebuilt context (psycopg_pool: the same conninfo): a pool's new connection, pool
  mechanics included (psycopg_pool opens it in its worker task);
- ``pool``: a new connection of an iampool pool (``min_size=0, max_size=1``): each round the
  connection it gave out is closed before release, so the timed acquire opens a new one; also
  reported against the bare pool of the same round.

Reported per side: the median latency and the median of its per-round ratios to the floor's
connect of the same round; the target after issue 20 is <= 1.05x for every iampool side.

Run: ``.venv/bin/python benchmarks/bench_connect.py [--rounds 60] [--drivers asyncpg,psycopg]``
(about a minute at 60 rounds). ``IAMPOOL_TEST_PG_DSN`` / ``IAMPOOL_TEST_MYSQL_DSN`` name the
upstream servers. Prints numbers, never secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiomysql
import asyncmy
import asyncpg
import psycopg
import trustme

import iampool
import iampool.sqlalchemy
from bench_pool import (
    MYSQL_UPSTREAM,
    PG_UPSTREAM,
    REGION,
    USER,
    rotations,
    start_gateway,
    static_token,
)
from iampool import AwsIamConfig, CredentialCache
from iampool.testing import FakeAws, IamGateway

BUNDLE_SIZE = 145
DRIVERS = ("asyncpg", "psycopg", "aiomysql", "asyncmy")
SCHEMES = {
    "asyncpg": "postgresql",
    "psycopg": "postgresql+psycopg",
    "aiomysql": "mysql+aiomysql",
    "asyncmy": "mysql+asyncmy",
}
FLOOR, CONTROL = "floor", "control (A/A)"
BARE_POOL = "bare pool"
SIDES = (FLOOR, CONTROL, "connect", "creator", BARE_POOL, "pool")
TARGET = 1.05

Open = Callable[[], Awaitable[Any]]  # opens one new connection, returns what to close
Close = Callable[[Any], Awaitable[None]]


# -- the CA bundle ----------------------------------------------------------------------------


def write_bundle(directory: Path, gateway_cas: list[Path]) -> Path:
    """``BUNDLE_SIZE`` certificates: throwaway CAs, then the gateways' CAs."""
    pems = [trustme.CA().cert_pem.bytes() for _ in range(BUNDLE_SIZE - len(gateway_cas))]
    pems += [path.read_bytes() for path in gateway_cas]
    bundle = directory / "ca-bundle.pem"
    bundle.write_bytes(b"".join(pems))
    context = ssl.create_default_context(cafile=str(bundle))
    loaded = len(context.get_ca_certs())
    if loaded != BUNDLE_SIZE:
        raise SystemExit(
            f"bench_connect: the bundle holds {loaded} certificates, not {BUNDLE_SIZE}"
        )
    return bundle


# -- the sides --------------------------------------------------------------------------------


def dsn_for(driver: str, gateway: IamGateway, bundle: Path) -> str:
    database = gateway.upstream.database
    return (
        f"{SCHEMES[driver]}://{USER}@{gateway.host}:{gateway.port}/{database}"
        f"?sslmode=verify-full&sslrootcert={quote(str(bundle), safe='/')}"
    )


def floor_opener(driver: str, gateway: IamGateway, bundle: Path, token: str) -> Open:
    """The bare driver with one prebuilt context (psycopg: the same conninfo) and the token."""
    context = ssl.create_default_context(cafile=str(bundle))  # verify-full: CA and host name
    host, port, database = gateway.host, gateway.port, gateway.upstream.database
    if driver == "asyncpg":
        return lambda: asyncpg.connect(
            host=host, port=port, user=USER, database=database, password=token, ssl=context
        )
    if driver == "psycopg":
        return lambda: psycopg.AsyncConnection.connect(
            host=host, port=port, user=USER, dbname=database, password=token,
            sslmode="verify-full", sslrootcert=str(bundle),
        )  # fmt: skip
    if driver == "aiomysql":
        return lambda: aiomysql.connect(
            host=host, port=port, user=USER, db=database, password=token, ssl=context,
            auth_plugin="mysql_clear_password",
        )  # fmt: skip
    return lambda: asyncmy.connect(
        host=host, port=port, user=USER, database=database, password=token, ssl=context
    )


async def bare_pool(driver: str, gateway: IamGateway, bundle: Path, token: str) -> Any:
    """The driver's own pool (``min_size=0, max_size=1``) with the static token and one prebuilt
    context: the floor of a pool's new connection, pool mechanics included."""
    from psycopg_pool import AsyncConnectionPool

    context = ssl.create_default_context(cafile=str(bundle))
    host, port, database = gateway.host, gateway.port, gateway.upstream.database
    if driver == "asyncpg":
        return await asyncpg.create_pool(
            host=host, port=port, user=USER, database=database, password=token, ssl=context,
            min_size=0, max_size=1,
        )  # fmt: skip
    if driver == "psycopg":
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            kwargs={
                "host": host, "port": port, "user": USER, "dbname": database, "password": token,
                "sslmode": "verify-full", "sslrootcert": str(bundle),
            },
            min_size=0, max_size=1, open=False,
        )  # fmt: skip
        await pool.open()
        return pool
    if driver == "aiomysql":
        return await aiomysql.create_pool(
            host=host, port=port, user=USER, db=database, password=token, ssl=context,
            auth_plugin="mysql_clear_password", minsize=0, maxsize=1,
        )  # fmt: skip
    return await asyncmy.create_pool(
        host=host, port=port, user=USER, database=database, password=token, ssl=context,
        minsize=0, maxsize=1,
    )  # fmt: skip


async def close_connection(driver: str, connection: Any) -> None:
    if driver in ("asyncpg", "psycopg"):
        await connection.close()
    else:
        await connection.ensure_closed()


class PoolSide:
    """An iampool pool of one connection whose every timed acquire opens a new connection.

    asyncpg, aiomysql, asyncmy: it is closed before release (untimed), so the pool drops it and
    the next acquire opens one. psycopg_pool opens the replacement of a
    closed connection in its worker as soon as it comes back: what is timed is giving the
    closed connection back and getting the new one (closing it is not).
    """

    def __init__(self, driver: str, pool: Any) -> None:
        self.driver = driver
        self.pool = pool
        self.held: Any = None  # psycopg: the connection given out last, closed before each round

    async def timed_new_connection(self) -> float:
        if self.driver == "psycopg":
            if self.held is None:
                self.held = await self.pool.getconn()
            await self.held.close()
            started = time.perf_counter()
            await self.pool.putconn(self.held)
            self.held = await self.pool.getconn()
            return time.perf_counter() - started
        started = time.perf_counter()
        connection = await self.pool.acquire()
        elapsed = time.perf_counter() - started
        if self.driver == "asyncpg":
            # Closed before release: the next acquire opens a new one and times only that
            # (after expire_connections() it would also time closing the old one, gracefully).
            await connection.close()
            await self.pool.release(connection)
        else:
            await connection.ensure_closed()
            released = self.pool.release(connection)
            if released is not None:
                await released
        return elapsed

    async def close(self) -> None:
        if self.driver == "psycopg":
            if self.held is not None:
                await self.pool.putconn(self.held)
            await self.pool.close()
        elif self.driver in ("aiomysql", "asyncmy"):
            self.pool.close()
            await self.pool.wait_closed()
        else:
            await self.pool.close()


async def measure_driver(
    driver: str,
    gateway: IamGateway,
    config: AwsIamConfig,
    bundle: Path,
    rounds: int,
) -> dict[str, list[float]]:
    """Seconds per new connection, per side, one sample per round."""
    cache = CredentialCache()
    token = await static_token(config, gateway)
    dsn = dsn_for(driver, gateway, bundle)
    creator = iampool.sqlalchemy.async_creator(dsn, aws_iam=config, cache=cache)
    pool = PoolSide(
        driver, await iampool.create_pool(dsn, aws_iam=config, cache=cache, min_size=0, max_size=1)
    )
    floor = floor_opener(driver, gateway, bundle, token)
    bare = PoolSide(driver, await bare_pool(driver, gateway, bundle, token))

    async def close(connection: Any) -> None:
        await close_connection(driver, connection)

    async def timed_open(opener: Open) -> float:
        started = time.perf_counter()
        connection = await opener()
        elapsed = time.perf_counter() - started
        await close(connection)
        return elapsed

    sides: dict[str, Callable[[], Awaitable[float]]] = {
        FLOOR: lambda: timed_open(floor),
        CONTROL: lambda: timed_open(floor),
        "connect": lambda: timed_open(lambda: iampool.connect(dsn, aws_iam=config, cache=cache)),
        "creator": lambda: timed_open(creator),
        BARE_POOL: bare.timed_new_connection,
        "pool": pool.timed_new_connection,
    }
    try:
        for _ in range(2):  # warm-up: first code paths, the token in the cache
            for measure in sides.values():
                await measure()
        samples: dict[str, list[float]] = {side: [] for side in sides}
        for order in rotations(list(sides), rounds):
            for side in order:
                samples[side].append(await sides[side]())
        return samples
    finally:
        await pool.close()
        await bare.close()
        await cache.aclose()


# -- report -----------------------------------------------------------------------------------


def report(driver: str, samples: dict[str, list[float]]) -> None:
    print(
        f"\n{driver}: new connection, {BUNDLE_SIZE}-certificate CA file, "
        f"{len(samples[FLOOR])} rounds"
    )
    print("| side | median | vs floor (median of per-round ratios) | target |")
    print("|---|---|---|---|")
    for side in SIDES:
        per_round = [
            value / floor for value, floor in zip(samples[side], samples[FLOOR], strict=True)
        ]
        target = "" if side in (FLOOR, CONTROL, BARE_POOL) else f"<= {TARGET:.2f}x"
        print(
            f"| {side} | {statistics.median(samples[side]) * 1000:.2f} ms "
            f"| {statistics.median(per_round):.3f}x | {target} |"
        )
    # A pool's new connection against the same driver's own pool, both opened the same way.
    per_round = [
        ours / bare for ours, bare in zip(samples["pool"], samples[BARE_POOL], strict=True)
    ]
    print(f"| pool vs bare pool | | {statistics.median(per_round):.3f}x | <= {TARGET:.2f}x |")


async def run(
    aws: FakeAws, gateways: dict[str, IamGateway], bundle: Path, drivers: list[str], rounds: int
) -> None:
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": REGION,
            "role_arn": aws.create_role("bench-connect"),
            "db_username": USER,
        }
    )
    for driver in drivers:
        protocol = "postgresql" if driver in ("asyncpg", "psycopg") else "mysql"
        report(driver, await measure_driver(driver, gateways[protocol], config, bundle, rounds))


def main() -> int:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # "discarding closed connection"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--drivers", default=",".join(DRIVERS))
    arguments = parser.parse_args()
    drivers = [name for name in arguments.drivers.split(",") if name]
    unknown = sorted(set(drivers) - set(DRIVERS))
    if unknown:
        parser.error(f"unknown drivers {unknown}; choose from {', '.join(DRIVERS)}")
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    with FakeAws(region=REGION) as aws, aws.export_env(), tempfile.TemporaryDirectory() as tmp:
        gateways: dict[str, IamGateway] = {}
        try:
            for protocol, upstream in (("postgresql", PG_UPSTREAM), ("mysql", MYSQL_UPSTREAM)):
                if any(
                    (driver in ("asyncpg", "psycopg")) == (protocol == "postgresql")
                    for driver in drivers
                ):
                    gateways[protocol] = start_gateway(protocol, upstream, aws)
            bundle = write_bundle(Path(tmp), [gateway.ca_path for gateway in gateways.values()])
            asyncio.run(run(aws, gateways, bundle, drivers, arguments.rounds))
        finally:
            for gateway in gateways.values():
                gateway.stop()
    print(
        f"\n{time.perf_counter() - started:.0f} s; load average {load_at_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
