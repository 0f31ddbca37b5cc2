"""RedshiftPool throughput against plain redshift-connector connections driven from threads.

``SELECT 1``, 32 workers, 8 connections on each side:

- iampool: ``iampool.create_pool("redshift://...")`` (min 8, max 8), a ``RedshiftPool`` whose
  driver calls run in anyio worker threads under a limiter of 8; 32 asyncio tasks share it;
- baseline: 8 ``redshift_connector.connect`` connections opened up front with a static password,
  shared by 32 plain threads through a ``queue.LifoQueue`` (what a threaded app without iampool
  does);
- for reference, the same 8 static connections shared by 32 asyncio tasks, each query sent to a
  worker thread by ``anyio.to_thread.run_sync`` under a limiter of 8 (the bridge RedshiftPool is
  built on, so that trio is served too) or by ``asyncio.to_thread``: the bare cost of driving a
  synchronous driver from an event loop, without any pool or IAM logic.

The static password is the same temporary password the pool uses: ``GetClusterCredentials``
passwords live 15 minutes, so for this run it is static, and it is fetched once, from the pool's
own cache entry. Both sides talk to the same ``iampool.testing.IamGateway`` in Redshift mode in
front of the real PostgreSQL, which, like the AWS stand-in (``FakeAws``), runs in this process in
its own threads; ``export_env()`` removes every other ``AWS_*`` variable, so nothing reaches AWS.
redshift-connector trusts only the default CA store, so ``SSL_CERT_FILE`` points at the system
store plus the gateway's CA while the benchmark runs (as the pytest plugin does).

Noise control: both sides are open and warmed up before measuring; throughput is measured in
rounds whose order alternates, and the median round is reported.

Run: ``.venv/bin/python benchmarks/bench_redshift.py`` (about 45 s). Prints numbers, never
secrets. ``IAMPOOL_TEST_PG_DSN`` names the upstream server (default: PostgreSQL at
127.0.0.1:5432 as postgres).
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import redshift_connector

import iampool
from iampool import AwsIamConfig, CredentialCache, RedshiftPool, auth_for
from iampool.testing import FakeAws, IamGateway

REGION = "us-east-1"
CLUSTER = "bench-redshift"
USER = "app"
LOGIN = f"IAM:{USER}"  # the DbUser GetClusterCredentials returns
PG_UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

WORKERS = 32
POOL_SIZE = 8
WARMUP_S = 1.0
ROUNDS = 5
ROUND_S = 1.5


# -- iampool ------------------------------------------------------------------------------------


async def pool_round(pool: RedshiftPool, seconds: float) -> float:
    """``WORKERS`` tasks run ``SELECT 1`` back to back for ``seconds``; queries per second."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with pool.acquire() as connection:
                await connection.fetchval("SELECT 1")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return done / (time.perf_counter() - started)


# -- baseline -----------------------------------------------------------------------------------


def threads_round(connections: queue.LifoQueue[Any], seconds: float) -> float:
    """``WORKERS`` threads share the connections and run ``SELECT 1`` for ``seconds``."""
    counts = [0] * WORKERS
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            connection = connections.get()
            try:
                cursor = connection.cursor()
                try:
                    cursor.execute("SELECT 1")
                    cursor.fetchall()
                finally:
                    cursor.close()
            finally:
                connections.put(connection)
            counts[index] += 1

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(WORKERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


Hop = Callable[[Callable[[], None]], Awaitable[None]]


async def to_thread_round(connections: queue.LifoQueue[Any], seconds: float, hop: Hop) -> float:
    """``WORKERS`` asyncio tasks share the connections; ``hop`` runs each query in a thread."""
    idle: asyncio.LifoQueue[Any] = asyncio.LifoQueue()
    while not connections.empty():
        idle.put_nowait(connections.get_nowait())
    done = 0
    deadline = time.perf_counter() + seconds

    def select_1(connection: Any) -> None:
        cursor = connection.cursor()
        try:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        finally:
            cursor.close()

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            connection = await idle.get()
            try:
                await hop(functools.partial(select_1, connection))
            finally:
                idle.put_nowait(connection)
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(WORKERS)))
    finally:
        while not idle.empty():
            connections.put(idle.get_nowait())
    return done / (time.perf_counter() - started)


def open_static(gateway: IamGateway, database: str, password: str) -> queue.LifoQueue[Any]:
    connections: queue.LifoQueue[Any] = queue.LifoQueue()
    for _ in range(POOL_SIZE):
        connection = redshift_connector.connect(
            host=gateway.host,
            port=gateway.port,
            database=database,
            user=LOGIN,
            password=password,
            sslmode="verify-full",
        )
        connection.autocommit = True  # as RedshiftPool's connections
        connections.put(connection)
    return connections


def close_static(connections: queue.LifoQueue[Any]) -> None:
    while not connections.empty():
        connections.get_nowait().close()


# -- the run ------------------------------------------------------------------------------------


async def run(gateway: IamGateway, config: AwsIamConfig, database: str) -> dict[str, Any]:
    cache = CredentialCache()
    dsn = gateway.dsn(LOGIN, database)
    limiter = anyio.CapacityLimiter(POOL_SIZE)

    async def anyio_hop(query: Callable[[], None]) -> None:
        await anyio.to_thread.run_sync(query, limiter=limiter)

    try:
        pool = await iampool.create_pool(
            dsn, aws_iam=config, cache=cache, min_size=POOL_SIZE, max_size=POOL_SIZE
        )
        # The pool's own entry (same configuration and endpoint): no extra AWS call.
        auth = auth_for(config, host=gateway.host, port=gateway.port, cache=cache)
        password = (await auth.credentials()).password
        connections = await asyncio.to_thread(open_static, gateway, database, password)
        try:
            warm = cache.stats()
            sides: dict[str, Callable[[float], Any]] = {
                "iampool": lambda seconds: pool_round(pool, seconds),
                "threads": lambda seconds: asyncio.to_thread(threads_round, connections, seconds),
                "anyio": lambda seconds: to_thread_round(connections, seconds, anyio_hop),
                "asyncio": lambda seconds: to_thread_round(connections, seconds, asyncio.to_thread),
            }
            for measure in sides.values():
                await measure(WARMUP_S)
            rates: dict[str, list[float]] = {name: [] for name in sides}
            for round_index in range(ROUNDS):
                order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
                for name in order:
                    rates[name].append(await sides[name](ROUND_S))
            measured = cache.stats()
            peak_size = pool.get_size()
        finally:
            await pool.close()
            await asyncio.to_thread(close_static, connections)
    finally:
        await cache.aclose()
    return {
        "rates": rates,
        "stats": measured,
        "aws_calls_during": aws_work(measured) - aws_work(warm),
        "pool_size": peak_size,
    }


def aws_work(stats: iampool.CacheStats) -> int:
    return stats["sts_calls"] + stats["api_calls"]


@contextmanager
def trusting(ca_path: Path) -> Iterator[None]:
    """``SSL_CERT_FILE`` = the system store plus the gateway's CA, for redshift-connector."""
    current = ssl.get_default_verify_paths().cafile
    system = Path(current).read_bytes() if current and Path(current).is_file() else b""
    previous = os.environ.get("SSL_CERT_FILE")
    with tempfile.TemporaryDirectory(prefix="bench-redshift-") as directory:
        bundle = Path(directory, "trust.pem")
        bundle.write_bytes(system + b"\n" + ca_path.read_bytes())
        os.environ["SSL_CERT_FILE"] = str(bundle)
        try:
            yield
        finally:
            if previous is None:
                del os.environ["SSL_CERT_FILE"]
            else:
                os.environ["SSL_CERT_FILE"] = previous


def report(results: dict[str, Any], seconds: float) -> None:
    rates = results["rates"]
    baseline = statistics.median(rates["threads"])
    labels = {
        "iampool": "iampool RedshiftPool, asyncio tasks",
        "threads": "baseline: redshift-connector in threads",
        "anyio": "reference: anyio.to_thread + limiter 8",
        "asyncio": "reference: asyncio.to_thread",
    }
    rows = [("client", "SELECT 1 q/s (median)", f"rounds ({ROUNDS} x {ROUND_S:g} s)", "ratio")]
    for name, label in labels.items():
        median = statistics.median(rates[name])
        rounds = " ".join(f"{rate:,.0f}" for rate in rates[name])
        rows.append((label, f"{median:,.0f}", rounds, f"{median / baseline:.3f}x"))
    print(f"SELECT 1 throughput, {WORKERS} workers, {POOL_SIZE} connections each side\n")
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))
    stats = results["stats"]
    print(
        f"\ncredential cache: sts_calls={stats['sts_calls']} api_calls={stats['api_calls']} "
        f"hits={stats['hits']} misses={stats['misses']}; AWS calls while measuring: "
        f"{results['aws_calls_during']}; pool size {results['pool_size']}"
    )
    print(
        "baseline: the pool's temporary password, fetched once, used as a static password; "
        f"same gateway.\n{os.cpu_count()} CPUs, {seconds:.0f} s in all."
    )


def main() -> int:
    started = time.perf_counter()
    with FakeAws(region=REGION) as aws, aws.export_env():
        gateway = IamGateway("postgresql", upstream=PG_UPSTREAM, authority=aws, mode="redshift")
        try:
            gateway.start()
        except ConnectionError as exc:
            raise SystemExit(f"bench_redshift: {exc}; start PostgreSQL or set the DSN") from None
        try:
            database = gateway.upstream.database or "postgres"
            gateway.ensure_user(LOGIN)
            aws.create_redshift_cluster(
                CLUSTER, db_name=database, address=gateway.host, port=gateway.port
            )
            config = AwsIamConfig.from_extra(
                {
                    "enabled": True,
                    "region": REGION,
                    "role_arn": aws.create_role("bench-redshift"),
                    "db_username": USER,
                    "cluster_identifier": CLUSTER,
                    "db_name": database,
                }
            )
            with trusting(gateway.ca_path):
                results = asyncio.run(run(gateway, config, database))
        finally:
            gateway.stop()
    report(results, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
