"""Issue 8, scenario 8: a soak with compressed credential lifetimes across both databases.

200 workers (100 on a PostgreSQL pool, 100 on a MySQL pool, ``max_size`` 10 each) run queries
while STS credentials live 2 s and RDS tokens 1 s in the cache, and both pools keep opening new
connections (asyncpg ``max_queries``, MySQLPool ``pool_recycle=0``), so every few milliseconds
a connection asks for credentials. Promised: no error, AssumeRole calls that follow elapsed time
(about one per ttl/2, not one per connection), no pool above ``max_size`` at any sample, bounded
memory, nothing left open.

``IAMPOOL_SOAK_QUERIES`` sets the total: 8,000 by default (about 30 s, for CI); the full run is
``IAMPOOL_SOAK_QUERIES=100000`` (about 6 minutes). ``--log-cli-level=INFO`` shows the report.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import pytest

import iampool
from iampool import CredentialCache
from iampool.testing import FakeAws, IamDatabase

SOAK_QUERIES = int(os.environ.get("IAMPOOL_SOAK_QUERIES", "8000"))
WORKERS_PER_POOL = 100
MAX_SIZE = 10
TTL = 2.0
TOKEN_REUSE = 1.0
SAMPLE_EVERY = 0.02  # seconds between pool-size samples
RSS_GROWTH_LIMIT = 50 * 2**20

log = logging.getLogger("reliability")  # the report; --log-cli-level=INFO shows it

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    # About 300 queries a second on two cores (every MySQL query opens a TLS connection through
    # the gateway, which runs in this process); leave room for a slower machine.
    pytest.mark.timeout(max(120, SOAK_QUERIES // 50)),
]


def rss_bytes() -> int:
    """Resident set size of this process (gateways and AWS stand-in included)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Engine:
    """One pool under soak, and what its workers saw."""

    name: str
    database: IamDatabase
    pool: Any = None
    quota: int = 0
    queries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    peak_size: int = 0
    samples: int = 0

    def size(self) -> int:
        return int(self.pool.get_size() if self.name == "postgresql" else self.pool.size)

    async def query(self, number: int) -> int:
        async with self.pool.acquire() as connection:
            if self.name == "postgresql":
                return int(await connection.fetchval("SELECT $1::int", number))
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT %s", (number,))
                (value,) = await cursor.fetchone()
                return int(value)

    async def close(self) -> None:
        if self.name == "postgresql":
            await self.pool.close()
        else:
            self.pool.close()
            await self.pool.wait_closed()


async def test_soak_two_hundred_workers_on_both_databases_with_compressed_ttls(
    iam_postgres: IamDatabase, iam_mysql: IamDatabase, fake_aws: FakeAws
) -> None:
    engines = [Engine("postgresql", iam_postgres), Engine("mysql", iam_mysql)]
    for engine in engines:
        engine.quota = SOAK_QUERIES // len(engines)
        engine.database.gateway.reset_counters()
    config = iam_postgres.config  # one role for both databases: one STS entry to rotate
    cache = CredentialCache(ttl=TTL, token_reuse=TOKEN_REUSE)
    recycle = {"postgresql": {"max_queries": 20}, "mysql": {"pool_recycle": 0}}
    assume_roles = fake_aws.calls["AssumeRole"]
    gc.collect()
    rss_start = rss_bytes()
    rss_warm: int | None = None
    warm_up = SOAK_QUERIES // 10

    started = time.monotonic()
    try:
        for engine in engines:
            engine.pool = await iampool.create_pool(
                engine.database.dsn,
                aws_iam=config,
                min_size=1,
                max_size=MAX_SIZE,
                cache=cache,
                **recycle[engine.name],
            )

        async def worker(engine: Engine, number: int) -> None:
            while engine.queries < engine.quota:
                try:
                    assert await engine.query(number) == number
                except Exception as exc:  # counted, not raised: the report names every kind
                    engine.errors[f"{type(exc).__name__}: {exc}"] += 1
                else:
                    engine.queries += 1

        async def sample(stop: anyio.Event) -> None:
            nonlocal rss_warm
            while not stop.is_set():
                for engine in engines:
                    engine.peak_size = max(engine.peak_size, engine.size())
                    engine.samples += 1
                if rss_warm is None and sum(engine.queries for engine in engines) >= warm_up:
                    rss_warm = rss_bytes()  # drivers imported, pools full, caches primed
                await anyio.sleep(SAMPLE_EVERY)

        stop_sampling = anyio.Event()
        async with anyio.create_task_group() as sampling:
            sampling.start_soon(sample, stop_sampling)
            async with anyio.create_task_group() as workers:
                for engine in engines:
                    for number in range(WORKERS_PER_POOL):
                        workers.start_soon(worker, engine, number)
            stop_sampling.set()
        rss_end = rss_bytes()  # every pool still open
    finally:
        for engine in engines:
            if engine.pool is not None:
                await engine.close()
        await cache.aclose()
    elapsed = time.monotonic() - started
    for engine in engines:
        await anyio.to_thread.run_sync(engine.database.gateway.wait_idle)
    gc.collect()
    rss_closed = rss_bytes()
    assert rss_warm is not None

    stats = cache.stats()
    assume_role_calls = fake_aws.calls["AssumeRole"] - assume_roles
    connections = {engine.name: engine.database.gateway.accepted for engine in engines}
    report = {
        "queries": sum(engine.queries for engine in engines),
        "errors": sum(sum(engine.errors.values()) for engine in engines),
        "elapsed_s": round(elapsed, 1),
        "assume_role_calls": assume_role_calls,
        "tokens_signed": stats["tokens_signed"],
        "connections": connections,
        "peak_pool_size": {engine.name: engine.peak_size for engine in engines},
        "samples": sum(engine.samples for engine in engines),
        "rss_mb": {
            name: round(value / 2**20, 1)
            for name, value in (
                ("start", rss_start),
                ("warm", rss_warm),
                ("end", rss_end),
                ("closed", rss_closed),
            )
        },
    }
    log.info("scenario 8 (soak): %s", report)

    assert {engine.name: dict(engine.errors) for engine in engines} == {
        "postgresql": {},
        "mysql": {},
    }
    assert report["queries"] >= SOAK_QUERIES - 1
    assert stats["errors"] == stats["refresh_failures"] == 0
    # Credentials rotate with elapsed time: about one AssumeRole per ttl/2 (refresh ahead).
    assert elapsed / TTL - 1 <= assume_role_calls <= elapsed / (TTL / 2) + 2
    # Tokens too, per endpoint; and never one per connection.
    assert stats["tokens_signed"] <= len(engines) * (elapsed / (TOKEN_REUSE / 2) + 2)
    assert sum(connections.values()) > 10 * (assume_role_calls + stats["tokens_signed"])
    for engine in engines:
        assert engine.peak_size <= MAX_SIZE
        assert engine.database.gateway.rejected == Counter()
        assert engine.database.gateway.active == 0
    # Memory after warm-up stays put however many connections came and went.
    assert max(rss_end, rss_closed) - rss_warm < RSS_GROWTH_LIMIT
