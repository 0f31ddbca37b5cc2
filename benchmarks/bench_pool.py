"""Pool benchmarks (DESIGN §6), each against a static-password baseline in the same run.

1. ``SELECT 1`` throughput, 64 workers on a pool of 10 (min 10), PostgreSQL: ``iampool.create_pool``
   (the real ``asyncpg.Pool`` with an awaitable password and a ``connect=`` hook) vs a bare
   ``asyncpg.create_pool`` with a static password;
2. the same for MySQL: iampool's ``MySQLPool`` vs a plain ``aiomysql.create_pool``, plus
   acquire + release without a query: the pools' own cost, which the gateway does not dilute;
3. new-connection latency: ``iampool.connect`` with a warm cache vs the driver's own connect
   with a static password (``asyncpg.connect``, ``aiomysql.connect``), 200 of each;
4. the credential cache's counters, to show the measured (warm) path made no AWS call.

Both sides of every row talk to the same ``iampool.testing.IamGateway`` (a TLS front that
verifies IAM tokens, in front of the real PostgreSQL / MariaDB) with the same client
``SSLContext``. The baseline's "static password" is one IAM token minted up front: tokens are
valid for 15 minutes, so for this run it is as static as a password, and the gateway accepts it.
The gateway and the AWS stand-in (``FakeAws``) run in this process, in their own threads;
``export_env()`` removes every other ``AWS_*`` variable, so nothing reaches AWS.

Noise: on a shared 2-core machine one pool's throughput drifts by up to 2x within seconds, more
than the 3 % being measured. So every pool stays open and warmed up, and the pools are measured
in short slices whose order rotates from round to round; each slice is compared with the
baseline's slice of the same round, and the median of those ratios is reported. A control
(a second, identical baseline pool or connect) is measured the same way: its ratio to the
baseline, which is 1.00 in truth, shows how far this run's noise alone moves a ratio.

Run: ``.venv/bin/python benchmarks/bench_pool.py`` (about 60 s). Prints numbers, never secrets.
``IAMPOOL_TEST_PG_DSN`` / ``IAMPOOL_TEST_MYSQL_DSN`` name the upstream servers (defaults:
PostgreSQL at 127.0.0.1:5432 as postgres, MariaDB at 127.0.0.1:3306 as root).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import aiomysql
import asyncpg

import iampool
from iampool import AwsIamConfig, CredentialCache, auth_for
from iampool.testing import FakeAws, IamGateway

REGION = "us-east-1"
USER = "app"
PG_UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_UPSTREAM = os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")

WORKERS = 64
POOL_SIZE = 10
WARMUP_S = 0.5
ROUNDS = 12  # throughput: each round measures every pool for one slice
SLICE_S = 0.5
OVERHEAD_ROUNDS = 10  # MySQL acquire + release without a query
OVERHEAD_SLICE_S = 0.2
CONNECTS = 200

# The sides measured: iampool, the baseline, and the control (a second baseline: A/A).
IAMPOOL, BASELINE, CONTROL = "iampool", "baseline", "control"

Pool = Any  # asyncpg.Pool, iampool.MySQLPool or aiomysql.Pool
Work = Callable[[Pool], Awaitable[None]]
Samples = dict[str, list[float]]  # side -> one number per round, in round order


@dataclass(frozen=True)
class EngineResult:
    driver: str  # "asyncpg" or "aiomysql"
    throughput: Samples  # queries per second per slice
    overhead: Samples | None  # acquire + release cycles per second per slice
    connects: Samples  # seconds per connect
    logins_while_measuring: int  # new connections the pools opened during the rate slices
    aws_work_while_measuring: int  # STS calls + token signatures + Redshift API calls


def rotations(sides: list[str], rounds: int) -> list[list[str]]:
    """The order of the sides in each round: rotated by one every round, so each side takes
    each position equally often."""
    return [sides[index % len(sides) :] + sides[: index % len(sides)] for index in range(rounds)]


def ratios(samples: Samples, side: str) -> list[float]:
    """``side`` over the baseline, round by round."""
    return [
        value / reference for value, reference in zip(samples[side], samples[BASELINE], strict=True)
    ]


# -- what the workers and connects do -----------------------------------------------------------


async def pg_select_1(pool: Pool) -> None:
    async with pool.acquire() as connection:
        await connection.fetchval("SELECT 1")


async def mysql_select_1(pool: Pool) -> None:
    async with pool.acquire() as connection, connection.cursor() as cursor:
        await cursor.execute("SELECT 1")
        await cursor.fetchone()


async def acquire_release(pool: Pool) -> None:
    async with pool.acquire():
        pass


async def rate(pool: Pool, work: Work, seconds: float) -> float:
    """``WORKERS`` tasks run ``work`` back to back for ``seconds``; completions per second."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await work(pool)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return done / (time.perf_counter() - started)


async def compare_rates(pools: dict[str, Pool], work: Work, rounds: int, seconds: float) -> Samples:
    """Warm every pool up, then measure each for one slice of ``seconds`` per round."""
    for pool in pools.values():
        await rate(pool, work, WARMUP_S)
    samples: Samples = {side: [] for side in pools}
    for order in rotations(list(pools), rounds):
        for side in order:
            samples[side].append(await rate(pools[side], work, seconds))
    return samples


async def compare_connects(
    connects: dict[str, Callable[[], Awaitable[Any]]],
    close: Callable[[Any], Awaitable[None]],
) -> Samples:
    """``CONNECTS`` sequential connects of each side, interleaved; the seconds each took
    (closing is not timed)."""

    async def timed(connect: Callable[[], Awaitable[Any]]) -> float:
        started = time.perf_counter()
        connection = await connect()
        elapsed = time.perf_counter() - started
        await close(connection)
        return elapsed

    for connect in connects.values():  # warm-up: first code paths, the first TLS handshake
        await timed(connect)
    samples: Samples = {side: [] for side in connects}
    for order in rotations(list(connects), CONNECTS):
        for side in order:
            samples[side].append(await timed(connects[side]))
    return samples


def aws_work(cache: CredentialCache) -> int:
    stats = cache.stats()
    return stats["sts_calls"] + stats["tokens_signed"] + stats["api_calls"]


# -- PostgreSQL ---------------------------------------------------------------------------------


async def bench_postgres(
    gateway: IamGateway, config: AwsIamConfig, cache: CredentialCache, token: str
) -> EngineResult:
    tls = gateway.client_ssl_context()
    dsn = gateway.dsn(USER)
    static = {
        "host": gateway.host,
        "port": gateway.port,
        "user": USER,
        "database": gateway.upstream.database,
        "password": token,
        "ssl": tls,
    }
    pools: dict[str, Pool] = {}
    try:
        pools[IAMPOOL] = await iampool.create_pool(
            dsn, aws_iam=config, cache=cache, min_size=POOL_SIZE, max_size=POOL_SIZE, ssl=tls
        )
        for side in (BASELINE, CONTROL):
            pools[side] = await asyncpg.create_pool(
                min_size=POOL_SIZE, max_size=POOL_SIZE, **static
            )
        before, logins = aws_work(cache), gateway.accepted
        throughput = await compare_rates(pools, pg_select_1, ROUNDS, SLICE_S)
        logins = gateway.accepted - logins
    finally:
        for pool in pools.values():
            await pool.close()

    async def close(connection: asyncpg.Connection) -> None:
        await connection.close()

    connects = await compare_connects(
        {
            IAMPOOL: lambda: iampool.connect(dsn, aws_iam=config, cache=cache, ssl=tls),
            BASELINE: lambda: asyncpg.connect(**static),
            CONTROL: lambda: asyncpg.connect(**static),
        },
        close,
    )
    return EngineResult("asyncpg", throughput, None, connects, logins, aws_work(cache) - before)


# -- MySQL --------------------------------------------------------------------------------------


async def bench_mysql(
    gateway: IamGateway, config: AwsIamConfig, cache: CredentialCache, token: str
) -> EngineResult:
    tls = gateway.client_ssl_context()
    dsn = gateway.dsn(USER)
    static = {
        "host": gateway.host,
        "port": gateway.port,
        "user": USER,
        "db": gateway.upstream.database,
        "password": token,
        "ssl": tls,
        "auth_plugin": "mysql_clear_password",
    }
    pools: dict[str, Pool] = {}
    try:
        pools[IAMPOOL] = await iampool.create_pool(
            dsn, aws_iam=config, cache=cache, min_size=POOL_SIZE, max_size=POOL_SIZE, ssl=tls
        )
        for side in (BASELINE, CONTROL):
            pools[side] = await aiomysql.create_pool(minsize=POOL_SIZE, maxsize=POOL_SIZE, **static)
        before, logins = aws_work(cache), gateway.accepted
        throughput = await compare_rates(pools, mysql_select_1, ROUNDS, SLICE_S)
        overhead = await compare_rates(pools, acquire_release, OVERHEAD_ROUNDS, OVERHEAD_SLICE_S)
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
            BASELINE: lambda: aiomysql.connect(**static),
            CONTROL: lambda: aiomysql.connect(**static),
        },
        close,
    )
    return EngineResult(
        "aiomysql", throughput, overhead, connects, logins, aws_work(cache) - before
    )


# -- setup --------------------------------------------------------------------------------------


def start_gateway(protocol: Any, upstream: str, aws: FakeAws) -> IamGateway:
    gateway = IamGateway(protocol, upstream=upstream, authority=aws, region=REGION)
    try:
        gateway.start()
    except ConnectionError as exc:
        raise SystemExit(f"bench_pool: {exc}; start the server or set the upstream DSN") from None
    gateway.ensure_user(USER)
    return gateway


async def static_token(config: AwsIamConfig, gateway: IamGateway) -> str:
    """One IAM token for the baseline, from its own cache (the measured cache stays untouched)."""
    cache = CredentialCache()
    try:
        auth = auth_for(config, host=gateway.host, port=gateway.port, cache=cache)
        return (await auth.credentials()).password
    finally:
        await cache.aclose()


async def run(
    aws: FakeAws, pg: IamGateway, mysql: IamGateway
) -> tuple[dict[str, EngineResult], iampool.CacheStats]:
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": REGION,
            "role_arn": aws.create_role("bench-pool"),
            "db_username": USER,
        }
    )
    cache = CredentialCache()
    try:
        results = {
            "PostgreSQL": await bench_postgres(pg, config, cache, await static_token(config, pg)),
            "MySQL": await bench_mysql(mysql, config, cache, await static_token(config, mysql)),
        }
        return results, cache.stats()
    finally:
        await cache.aclose()


# -- report -------------------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def median_ratio(samples: Samples, side: str) -> str:
    """The median of the round-by-round ratios to the baseline, and their p25-p75."""
    values = ratios(samples, side)
    low, _, high = statistics.quantiles(values, n=4)
    return f"{statistics.median(values):.3f}x ({low:.2f}-{high:.2f})"


def rate_rows(
    what: str, unit: str, samples: Samples, driver: str, target: str
) -> list[tuple[str, ...]]:
    def median(side: str) -> str:
        return f"{statistics.median(samples[side]):,.0f} {unit}"

    rows: list[tuple[str, ...]] = [
        (
            what,
            median(IAMPOOL),
            f"{median(BASELINE)} {driver} pool",
            median_ratio(samples, IAMPOOL),
            target,
        )
    ]
    if CONTROL in samples:
        rows.append(
            (
                f"  control: a 2nd {driver} pool (A/A)",
                "",
                f"{median(CONTROL)} {driver} pool",
                median_ratio(samples, CONTROL),
                "noise",
            )
        )
    return rows


def connect_rows(label: str, samples: Samples, driver: str) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for stat, measure in (("median", statistics.median), ("p95", p95)):
        iam_ms, base_ms, control_ms = (
            measure(samples[side]) * 1e3 for side in (IAMPOOL, BASELINE, CONTROL)
        )
        rows.append(
            (
                f"{label} new connection, {stat} of {CONNECTS}",
                f"{iam_ms:.2f} ms",
                f"{base_ms:.2f} ms {driver}.connect",
                f"{iam_ms / base_ms:.3f}x",
                "<= 1.05x",
            )
        )
        rows.append(
            (
                f"  control: {driver}.connect again (A/A)",
                "",
                f"{control_ms:.2f} ms {driver}.connect",
                f"{control_ms / base_ms:.3f}x",
                "noise",
            )
        )
    return rows


def report(
    results: dict[str, EngineResult],
    stats: iampool.CacheStats,
    seconds: float,
    load: tuple[float, float],
) -> None:
    rows: list[tuple[str, ...]] = [("what", "iampool", "baseline", "ratio (p25-p75)", "target")]
    for label, result in results.items():
        rows += rate_rows(
            f"{label} SELECT 1, {WORKERS} workers, pool {POOL_SIZE}",
            "q/s",
            result.throughput,
            result.driver,
            ">= 0.97x",
        )
        if result.overhead is not None:
            rows += rate_rows(
                f"{label} acquire+release only, {WORKERS} workers",
                "/s",
                result.overhead,
                result.driver,
                "",
            )
        rows += connect_rows(label, result.connects, result.driver)
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))

    during = sum(result.aws_work_while_measuring for result in results.values())
    logins = sum(result.logins_while_measuring for result in results.values())
    cpus = os.cpu_count() or 1
    print(
        f"\ncredential cache: sts_calls={stats['sts_calls']}, "
        f"tokens_signed={stats['tokens_signed']} (one per gateway endpoint, at pool creation)."
        f"\nWhile measuring: {during} AWS calls or signatures; {logins} new logins during the "
        "throughput slices (pools stayed warm).\n"
        "Baseline: the driver's own pool / connect with one IAM token, minted up front, as its "
        "static password;\nsame gateway, same TLS context. Throughput: median of "
        f"{ROUNDS} rounds x {SLICE_S:g} s per pool; ratio: median of per-round ratios.\n"
        f"{cpus} CPUs, load average {load[0]:.1f} at start, {load[1]:.1f} at end; "
        f"{date.today().isoformat()}, {seconds:.0f} s in all."
    )
    kinds: dict[str, list[float]] = {}
    for result in results.values():
        for kind, control_ratio in controls_of(result).items():
            kinds.setdefault(kind, []).append(control_ratio)
    ranges = ", ".join(
        f"{kind} {min(values):.3f}x to {max(values):.3f}x" for kind, values in kinds.items()
    )
    print(f"Noise in this run (the A/A controls, truly 1.00x): {ranges}.")


def controls_of(result: EngineResult) -> dict[str, float]:
    """The control rows' ratios: how far noise alone moved each kind of ratio."""
    connects = result.connects
    controls = {
        "throughput": statistics.median(ratios(result.throughput, CONTROL)),
        "connect median": statistics.median(connects[CONTROL])
        / statistics.median(connects[BASELINE]),
        "connect p95": p95(connects[CONTROL]) / p95(connects[BASELINE]),
    }
    if result.overhead is not None:
        controls["acquire+release"] = statistics.median(ratios(result.overhead, CONTROL))
    return controls


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
    load = (load_at_start, os.getloadavg()[0])
    report(results, stats, time.perf_counter() - started, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
