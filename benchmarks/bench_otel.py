"""What OpenTelemetry costs (issue 22, DESIGN §6): the hot paths with an SDK configured vs off.

1. warm ``await auth.credentials()``: per call, telemetry on (an SDK's meter and tracer
   providers given to ``iampool.configure_telemetry``) vs off (``enabled=False``), and off again
   as the A/A control; interleaved batches;
2. pool throughput, ``SELECT 1`` with 64 workers on a pool of 10 (acquire, query, release), for
   PostgreSQL (asyncpg) and MySQL (aiomysql): the same iampool pool measured with telemetry on and
   off, a second iampool pool with telemetry off (A/A control), and the bare driver's pool with a
   static password (one IAM token minted up front) for the issue's own comparison.

"On" is a real SDK: a ``MeterProvider`` whose periodic reader collects every 0.5 s (running the
observable instruments' callbacks over the caches, in its own thread, during the slices) into an
exporter that discards, and a ``TracerProvider`` with a batch span processor. Telemetry is switched
per slice (``configure_telemetry``: a module global), so on and off alternate within each round.
Every side talks to the same ``IamGateway`` (in front of the real PostgreSQL / MariaDB) with the
same client ``SSLContext``; ``FakeAws`` stands in for AWS. Slices rotate in order from round to
round; a ratio is the median of per-round ratios. The logins the gateway counted during the
slices are printed (0: no telemetry event happened while measuring; warm pools log in nobody).

Run: ``.venv/bin/python benchmarks/bench_otel.py [--rounds 12]`` (about 70 s). Prints numbers,
never secrets. ``IAMPOOL_TEST_PG_DSN`` / ``IAMPOOL_TEST_MYSQL_DSN`` name the upstream servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from typing import Any

import aiomysql
import asyncpg
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import iampool

# The gateway and the bare side's static token, as bench_pool.py sets them up (same user).
from bench_pool import start_gateway, static_token
from iampool import AwsIamConfig, CredentialCache, auth_for, configure_telemetry
from iampool.testing import FakeAws, IamGateway

REGION = "us-east-1"
USER = "app"
HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"
PG_UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_UPSTREAM = os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")

WORKERS = 64
POOL_SIZE = 10
WARMUP_S = 0.5
SLICE_S = 0.5
BATCHES = 200
BATCH = 1000
EXPORT_EVERY_MS = 500

SYNCHRONOUS = (
    "iampool.aws.requests",
    "iampool.aws.duration",
    "iampool.connect.attempts",
    "db.client.connection.create_time",
    "iampool.connect_rate.wait_time",
)
ON, OFF, CONTROL, BARE = "telemetry on", "telemetry off", "control: off again (A/A)", "bare"
Samples = dict[str, list[float]]


class Discard(MetricExporter):
    """An exporter that takes each collection and drops it (the cost is the SDK's, not I/O)."""

    def __init__(self) -> None:
        super().__init__()
        self.exports = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class Sdk:
    """The SDK an application would configure, exporting nowhere."""

    def __init__(self) -> None:
        self.exporter = Discard()
        reader = PeriodicExportingMetricReader(
            self.exporter, export_interval_millis=EXPORT_EVERY_MS
        )
        self.watch = InMemoryMetricReader()  # read by records(), between the measured phases
        self.meters = MeterProvider(metric_readers=[reader, self.watch])
        self.tracers = TracerProvider()
        self.spans = InMemorySpanExporter()
        self.tracers.add_span_processor(BatchSpanProcessor(self.spans))
        self.recorded_while_measuring = 0

    def records(self) -> int:
        """Everything iampool recorded so far through the SDK's synchronous instruments and
        spans (each AWS call, login and rate-cap wait); the observable ones read counters."""
        self.tracers.force_flush()
        data = self.watch.get_metrics_data()
        total = len(self.spans.get_finished_spans())
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name in SYNCHRONOUS:
                        for point in metric.data.data_points:
                            total += getattr(point, "count", None) or int(point.value)
        return total

    def switch(self, side: str) -> None:
        if side == ON:
            configure_telemetry(meter_provider=self.meters, tracer_provider=self.tracers)
        else:
            configure_telemetry(enabled=False)

    def close(self) -> None:
        configure_telemetry(enabled=False)
        self.meters.shutdown()
        self.tracers.shutdown()


def rotations(sides: Sequence[str], rounds: int) -> list[list[str]]:
    """Each round's order: rotated by one every round, each side in each position as often."""
    return [[*sides[i % len(sides) :], *sides[: i % len(sides)]] for i in range(rounds)]


def median_ratio(samples: Samples, side: str, baseline: str) -> str:
    """The median of ``side``'s per-round ratios to ``baseline``, with their p25-p75."""
    values = [a / b for a, b in zip(samples[side], samples[baseline], strict=True)]
    low, _, high = statistics.quantiles(values, n=4)
    return f"{statistics.median(values):.3f}x ({low:.2f}-{high:.2f})"


# -- 1. warm credentials() ---------------------------------------------------------------------


async def bench_warm(sdk: Sdk, config: AwsIamConfig) -> Samples:
    cache = CredentialCache()
    try:
        auth = auth_for(config, host=HOST, port=5432, cache=cache)
        await auth.credentials()  # warm

        async def batch() -> float:
            started = time.perf_counter()
            for _ in range(BATCH):
                await auth.credentials()
            return (time.perf_counter() - started) / BATCH * 1e6

        sides = (ON, OFF, CONTROL)
        samples: Samples = {side: [] for side in sides}
        recorded = sdk.records()
        for order in rotations(sides, BATCHES):
            for side in order:
                sdk.switch(side)
                samples[side].append(await batch())
        sdk.switch(OFF)
        sdk.recorded_while_measuring += sdk.records() - recorded
        return samples
    finally:
        await cache.aclose()


# -- 2. pool throughput ------------------------------------------------------------------------


async def rate(pool: Any, work: Callable[[Any], Awaitable[None]], seconds: float) -> float:
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


async def pg_select_1(pool: Any) -> None:
    async with pool.acquire() as connection:
        await connection.fetchval("SELECT 1")


async def mysql_select_1(pool: Any) -> None:
    async with pool.acquire() as connection, connection.cursor() as cursor:
        await cursor.execute("SELECT 1")
        await cursor.fetchone()


async def compare(
    sdk: Sdk,
    pools: dict[str, Any],
    work: Callable[[Any], Awaitable[None]],
    rounds: int,
) -> Samples:
    """Each side for one slice per round. ON and OFF are the same iampool pool (telemetry
    switched), CONTROL a second iampool pool with telemetry off, BARE the driver's own."""
    for pool in {id(pool): pool for pool in pools.values()}.values():
        await rate(pool, work, WARMUP_S)
    samples: Samples = {side: [] for side in pools}
    recorded = sdk.records()
    for order in rotations(list(pools), rounds):
        for side in order:
            sdk.switch(side)
            samples[side].append(await rate(pools[side], work, SLICE_S))
    sdk.switch(OFF)
    sdk.recorded_while_measuring += sdk.records() - recorded
    return samples


async def bench_postgres(
    sdk: Sdk, gateway: IamGateway, config: AwsIamConfig, token: str, rounds: int
) -> tuple[Samples, int]:
    tls = gateway.client_ssl_context()
    pools: dict[str, Any] = {}
    cache = CredentialCache()
    try:
        for side in (ON, CONTROL):
            pools[side] = await iampool.create_pool(
                gateway.dsn(USER), aws_iam=config, cache=cache, min_size=POOL_SIZE,
                max_size=POOL_SIZE, ssl=tls,
            )  # fmt: skip
        pools[OFF] = pools[ON]
        pools[BARE] = await asyncpg.create_pool(
            host=gateway.host, port=gateway.port, user=USER, database=gateway.upstream.database,
            password=token, ssl=tls, min_size=POOL_SIZE, max_size=POOL_SIZE,
        )  # fmt: skip
        logins = gateway.accepted
        samples = await compare(sdk, pools, pg_select_1, rounds)
        return samples, gateway.accepted - logins
    finally:
        for pool in {id(pool): pool for pool in pools.values()}.values():
            await pool.close()
        await cache.aclose()


async def bench_mysql(
    sdk: Sdk, gateway: IamGateway, config: AwsIamConfig, token: str, rounds: int
) -> tuple[Samples, int]:
    tls = gateway.client_ssl_context()
    pools: dict[str, Any] = {}
    cache = CredentialCache()
    try:
        for side in (ON, CONTROL):
            pools[side] = await iampool.create_pool(
                gateway.dsn(USER), aws_iam=config, cache=cache, min_size=POOL_SIZE,
                max_size=POOL_SIZE, ssl=tls,
            )  # fmt: skip
        pools[OFF] = pools[ON]
        pools[BARE] = await aiomysql.create_pool(
            host=gateway.host, port=gateway.port, user=USER, db=gateway.upstream.database,
            password=token, ssl=tls, auth_plugin="mysql_clear_password", minsize=POOL_SIZE,
            maxsize=POOL_SIZE,
        )  # fmt: skip
        logins = gateway.accepted
        samples = await compare(sdk, pools, mysql_select_1, rounds)
        return samples, gateway.accepted - logins
    finally:
        for pool in {id(pool): pool for pool in pools.values()}.values():
            pool.close()
            await pool.wait_closed()
        await cache.aclose()


# -- setup and report --------------------------------------------------------------------------


def table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def report(
    warm: Samples,
    pools: dict[str, tuple[Samples, int]],
    sdk: Sdk,
    seconds: float,
    load: tuple[float, float],
) -> None:
    rows: list[tuple[str, ...]] = [("what", "side", "median", "ratio (p25-p75)", "target")]
    for side in (ON, OFF, CONTROL):
        ratio = "" if side == OFF else f"{median_ratio(warm, side, OFF)} vs off"
        target = {ON: "<= 2 us", OFF: "", CONTROL: "noise"}[side]
        rows.append(("warm credentials()", side, f"{statistics.median(warm[side]):.3f} us",
                     ratio, target))  # fmt: skip
    for engine, (samples, _) in pools.items():
        what = f"{engine} SELECT 1, {WORKERS} workers, pool {POOL_SIZE}"
        for side in (ON, OFF, CONTROL, BARE):
            if side == ON:
                ratio = (
                    f"{median_ratio(samples, ON, OFF)} vs off, "
                    f"{median_ratio(samples, ON, BARE)} vs bare"
                )
                target = ">= 0.97x"
            elif side == CONTROL:
                ratio, target = f"{median_ratio(samples, CONTROL, OFF)} vs off", "noise"
            elif side == OFF:
                ratio, target = f"{median_ratio(samples, OFF, BARE)} vs bare", ""
            else:
                ratio, target = "", ""
            rows.append((what, side, f"{statistics.median(samples[side]):,.0f} q/s", ratio,
                         target))  # fmt: skip
    table(rows)
    logins = sum(count for _, count in pools.values())
    print(
        f"\nLogins during the throughput slices: {logins}. Records through the SDK while "
        f"measuring (points of synchronous instruments, spans): {sdk.recorded_while_measuring}; "
        f"in all: {sdk.records()} (the pools' creation). Metric collections exported: "
        f"{sdk.exporter.exports} (every {EXPORT_EVERY_MS} ms).\n"
        f"Warm credentials(): median of {BATCHES} batches of {BATCH:,} calls per side, "
        f"interleaved. Throughput: {len(next(iter(pools.values()))[0][ON])} rounds x "
        f"{SLICE_S:g} s per side; ratio: median of per-round ratios.\n"
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start, {load[1]:.1f} at end; "
        f"{date.today().isoformat()}, {seconds:.0f} s in all."
    )


async def run(
    sdk: Sdk, aws: FakeAws, pg: IamGateway, mysql: IamGateway, rounds: int
) -> tuple[Samples, dict[str, tuple[Samples, int]]]:
    config = AwsIamConfig.from_extra(
        {"enabled": True, "region": REGION, "role_arn": aws.create_role("bench-otel"),
         "db_username": USER}
    )  # fmt: skip
    warm = await bench_warm(sdk, config)
    sdk.switch(ON)  # the pools are created with telemetry on: their logins are spans
    pools = {
        "PostgreSQL": await bench_postgres(sdk, pg, config, await static_token(config, pg), rounds),
        "MySQL": await bench_mysql(sdk, mysql, config, await static_token(config, mysql), rounds),
    }
    return warm, pools


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=12, help="throughput rounds (default 12)")
    args = parser.parse_args(argv)
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    sdk = Sdk()
    try:
        with FakeAws(region=REGION) as aws, aws.export_env():
            pg = start_gateway("postgresql", PG_UPSTREAM, aws)
            try:
                mysql = start_gateway("mysql", MYSQL_UPSTREAM, aws)
                try:
                    warm, pools = asyncio.run(run(sdk, aws, pg, mysql, args.rounds))
                finally:
                    mysql.stop()
            finally:
                pg.stop()
        report(warm, pools, sdk, time.perf_counter() - started,
               (load_at_start, os.getloadavg()[0]))  # fmt: skip
    finally:
        sdk.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
