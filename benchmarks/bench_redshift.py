"""RedshiftPool throughput against plain redshift-connector connections driven from threads.

``SELECT 1`` back to back, 8 connections on every side, all through one Redshift-mode
``iampool.testing.IamGateway`` in front of the real PostgreSQL:

- iampool: ``iampool.create_pool("redshift://...", min_size=8, max_size=8)``, a ``RedshiftPool``
  shared by 32 asyncio tasks; its driver calls run in its 8 threads;
- baseline: 8 plain threads, each with its own ``redshift_connector.connect`` connection opened
  up front with a static password, a cursor per query as the DB-API examples write it
  (``cursor = conn.cursor(); cursor.execute(...)``): the same connections and the same number of
  threads as the pool, and no pool, event loop or IAM code at all;
- control (A/A): the baseline again, on 8 more connections: its ratio to the baseline is 1.00
  in truth, so it shows how far noise alone moved a ratio in this run;
- references, to explain the numbers: the baseline keeping one cursor per connection (what
  RedshiftPool does, so the difference to iampool is the cost of the async bridge alone);
  32 threads sharing 8 connections through a ``queue.LifoQueue`` (the shape of a threaded
  web app); and 32 asyncio tasks sending each query through ``anyio.to_thread.run_sync`` with a
  limiter of 8 (the bridge RedshiftPool used before: it still does under trio).

The static password is the pool's own temporary password, fetched once from its cache entry:
``GetClusterCredentials`` passwords live 15 minutes, so for this run it is static. The gateway and
the AWS stand-in (``FakeAws``) run in this process, in their own threads; ``export_env()``
removes every other ``AWS_*`` variable, so nothing reaches AWS. redshift-connector trusts only
the default CA store, so ``SSL_CERT_FILE`` points at the system store plus the gateway's CA while
the benchmark runs (as the pytest plugin does).

Noise: on a shared 2-core machine one side's throughput drifts by up to 2x within seconds. Every
side is open and warmed up first; then each is measured for one slice per round, the order
rotating from round to round, and compared with the baseline's slice of the same round: the
ratio reported is the median of those per-round ratios (with their 25th-75th percentiles).
Each slice also records the process's CPU time and context switches per query (all threads:
client, gateway, AWS stand-in; ``getrusage``), which explain where the async bridge's cost goes.

Run: ``.venv/bin/python benchmarks/bench_redshift.py`` (about 60 s; ``--quick``: about 20 s;
``--rounds N``). Prints numbers, never secrets. ``IAMPOOL_TEST_PG_DSN`` names the upstream server
(default: PostgreSQL at 127.0.0.1:5432 as postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import queue
import resource
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
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

TASKS = 32  # concurrent callers of the pool, and threads of the shared-connections reference
POOL_SIZE = 8  # connections on every side; threads of the pool and of the baseline
WARMUP_S = 0.5
ROUNDS = 15
QUICK_ROUNDS = 5
SLICE_S = 0.6
TARGET = 0.95

IAMPOOL, BASELINE, CONTROL = "iampool", "baseline", "control"
CURSOR_KEPT, SHARED, ANYIO = "cursor-kept", "shared", "anyio"
LABELS = {
    IAMPOOL: "iampool RedshiftPool: 32 tasks, 8 threads",
    BASELINE: "baseline: 8 threads, own connection, cursor per query",
    CONTROL: "  control: the baseline again (A/A)",
    CURSOR_KEPT: "  ref: 8 threads, one cursor kept per connection",
    SHARED: "  ref: 32 threads sharing 8 connections (LifoQueue)",
    ANYIO: "  ref: 32 tasks, anyio.to_thread + limiter 8",
}


@dataclass
class Slices:
    """One side's measurements, one per round: queries per second and CPU microseconds each."""

    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    switches: list[float] = field(default_factory=list)  # the process's context switches


Measure = Callable[[float], Awaitable[int]]  # run for ``seconds``; how many queries completed


def select_1(cursor: Any) -> None:
    cursor.execute("SELECT 1")
    cursor.fetchall()


# -- the sides ----------------------------------------------------------------------------------


async def pool_side(pool: RedshiftPool, seconds: float) -> int:
    """``TASKS`` asyncio tasks run ``SELECT 1`` on the pool back to back for ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def task() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with pool.acquire() as connection:
                await connection.fetchval("SELECT 1")
            done += 1

    await asyncio.gather(*(task() for _ in range(TASKS)))
    return done


def own_connection_threads(connections: list[Any], seconds: float, *, keep_cursor: bool) -> int:
    """One thread per connection, ``SELECT 1`` back to back for ``seconds``."""
    counts = [0] * len(connections)
    deadline = time.perf_counter() + seconds

    def thread(index: int) -> None:
        connection = connections[index]
        kept = connection.cursor() if keep_cursor else None
        while time.perf_counter() < deadline:
            cursor = kept or connection.cursor()
            select_1(cursor)
            if kept is None:
                cursor.close()
            counts[index] += 1

    run_threads(thread, len(connections))
    return sum(counts)


def shared_connection_threads(connections: list[Any], seconds: float) -> int:
    """``TASKS`` threads share the connections through a LIFO queue, a cursor per query."""
    idle: queue.LifoQueue[Any] = queue.LifoQueue()
    for connection in connections:
        idle.put(connection)
    counts = [0] * TASKS
    deadline = time.perf_counter() + seconds

    def thread(index: int) -> None:
        while time.perf_counter() < deadline:
            connection = idle.get()
            try:
                cursor = connection.cursor()
                select_1(cursor)
                cursor.close()
            finally:
                idle.put(connection)
            counts[index] += 1

    run_threads(thread, TASKS)
    return sum(counts)


def run_threads(target: Callable[[int], None], count: int) -> None:
    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def anyio_hop_tasks(connections: list[Any], seconds: float) -> int:
    """``TASKS`` asyncio tasks share the connections; each query goes to a thread through
    ``anyio.to_thread.run_sync`` under a limiter of ``POOL_SIZE``, a cursor per query."""
    limiter = anyio.CapacityLimiter(POOL_SIZE)
    idle: asyncio.LifoQueue[Any] = asyncio.LifoQueue()
    for connection in connections:
        idle.put_nowait(connection)
    done = 0
    deadline = time.perf_counter() + seconds

    def query(connection: Any) -> None:
        cursor = connection.cursor()
        select_1(cursor)
        cursor.close()

    async def task() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            connection = await idle.get()
            try:
                await anyio.to_thread.run_sync(
                    functools.partial(query, connection), limiter=limiter
                )
            finally:
                idle.put_nowait(connection)
            done += 1

    await asyncio.gather(*(task() for _ in range(TASKS)))
    return done


def in_a_thread(function: Callable[[float], int]) -> Measure:
    """A thread-based side, run from the event loop without blocking it."""

    async def measure(seconds: float) -> int:
        return await asyncio.to_thread(function, seconds)

    return measure


def open_static(gateway: IamGateway, database: str, password: str) -> list[Any]:
    connections = []
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
        connections.append(connection)
    return connections


# -- the run ------------------------------------------------------------------------------------


def rotations(sides: list[str], rounds: int) -> list[list[str]]:
    """Each round's order: rotated by one every round, so each side takes each position."""
    return [sides[index % len(sides) :] + sides[: index % len(sides)] for index in range(rounds)]


async def measure_sides(sides: dict[str, Measure], rounds: int) -> dict[str, Slices]:
    for measure in sides.values():
        await measure(WARMUP_S)
    slices = {side: Slices() for side in sides}
    for order in rotations(list(sides), rounds):
        for side in order:
            usage, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            done = max(await sides[side](SLICE_S), 1)
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
            switches = after.ru_nvcsw + after.ru_nivcsw - usage.ru_nvcsw - usage.ru_nivcsw
            slices[side].rates.append(done / elapsed)
            slices[side].cpu_us.append(cpu / done * 1e6)
            slices[side].switches.append(switches / done)
    return slices


@dataclass
class Result:
    slices: dict[str, Slices]
    aws_calls_while_measuring: int
    logins_while_measuring: int
    pool_size: int
    pool_threads: int


async def run(gateway: IamGateway, config: AwsIamConfig, database: str, rounds: int) -> Result:
    cache = CredentialCache()
    groups: list[list[Any]] = []
    try:
        pool = await iampool.create_pool(
            gateway.dsn(LOGIN, database),
            aws_iam=config,
            cache=cache,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
        )
        try:
            # The pool's own entry (same configuration and endpoint): no extra AWS call.
            auth = auth_for(config, host=gateway.host, port=gateway.port, cache=cache)
            password = (await auth.credentials()).password
            for _ in range(2):  # the baseline's connections and the control's
                groups.append(await asyncio.to_thread(open_static, gateway, database, password))
            baseline, control = groups
            sides: dict[str, Measure] = {
                IAMPOOL: functools.partial(pool_side, pool),
                BASELINE: in_a_thread(
                    functools.partial(own_connection_threads, baseline, keep_cursor=False)
                ),
                CONTROL: in_a_thread(
                    functools.partial(own_connection_threads, control, keep_cursor=False)
                ),
                CURSOR_KEPT: in_a_thread(
                    functools.partial(own_connection_threads, baseline, keep_cursor=True)
                ),
                SHARED: in_a_thread(functools.partial(shared_connection_threads, baseline)),
                ANYIO: functools.partial(anyio_hop_tasks, baseline),
            }
            stats, logins = cache.stats(), gateway.accepted
            slices = await measure_sides(sides, rounds)
            after = cache.stats()
            threads = sum(
                thread.name.startswith("iampool-redshift-") for thread in threading.enumerate()
            )
            return Result(
                slices=slices,
                aws_calls_while_measuring=aws_work(after) - aws_work(stats),
                logins_while_measuring=gateway.accepted - logins,
                pool_size=pool.get_size(),
                pool_threads=threads,
            )
        finally:
            await pool.close()
            for group in groups:
                for connection in group:
                    connection.close()
    finally:
        await cache.aclose()


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


# -- the report ---------------------------------------------------------------------------------


def ratios(slices: dict[str, Slices], side: str) -> list[float]:
    """``side`` over the baseline, round by round."""
    baseline = slices[BASELINE].rates
    return [value / base for value, base in zip(slices[side].rates, baseline, strict=True)]


def spread(values: list[float]) -> str:
    quartiles = statistics.quantiles(values, n=4)
    return f"{quartiles[0]:.2f}-{quartiles[2]:.2f}"


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def report(result: Result, rounds: int, seconds: float, load: tuple[float, float]) -> None:
    slices = result.slices
    rows = [("side", "q/s (median)", "ratio (p25-p75)", "CPU/query", "switches/query", "target")]
    for side, label in LABELS.items():
        rate = statistics.median(slices[side].rates)
        cpu = statistics.median(slices[side].cpu_us)
        switches = statistics.median(slices[side].switches)
        if side == BASELINE:
            ratio, target = "1.000x", ""
        else:
            per_round = ratios(slices, side)
            ratio = f"{statistics.median(per_round):.3f}x ({spread(per_round)})"
            target = (
                f">= {TARGET:.2f}x" if side == IAMPOOL else ("noise" if side == CONTROL else "")
            )
        rows.append((label, f"{rate:,.0f}", ratio, f"{cpu:,.0f} us", f"{switches:.1f}", target))
    print(
        f"SELECT 1 throughput, {POOL_SIZE} connections per side, through one Redshift-mode "
        f"gateway; {rounds} rounds x {SLICE_S:g} s, order rotating\n"
    )
    print_table(rows)
    bridge = statistics.median(slices[IAMPOOL].cpu_us) - statistics.median(
        slices[CURSOR_KEPT].cpu_us
    )
    hops = statistics.median(slices[IAMPOOL].switches) - statistics.median(
        slices[CURSOR_KEPT].switches
    )
    print(
        f"\nWhile measuring: {result.aws_calls_while_measuring} AWS calls, "
        f"{result.logins_while_measuring} new logins at the gateway; pool size "
        f"{result.pool_size}, pool threads {result.pool_threads}."
    )
    print(
        "Ratio: median of per-round ratios to the baseline's slice of the same round. CPU/query "
        "and switches/query:\nthe whole process (client, gateway, AWS stand-in; user + system "
        "time, voluntary + involuntary context\nswitches) per query, median of the slices. "
        f"iampool minus the cursor-kept reference: {bridge:+,.0f} us of CPU and\n{hops:+.1f} "
        "context switches per query: the async bridge (a queue put, two thread wake-ups, the "
        "answer)."
    )
    control = ratios(slices, CONTROL)
    print(
        f"Noise in this run: the A/A control read {statistics.median(control):.3f}x "
        f"({spread(control)}), truly 1.00x."
    )
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start, {load[1]:.1f} at end; "
        f"{date.today().isoformat()}, {seconds:.0f} s in all."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds")
    parser.add_argument("--rounds", type=int, default=None, help=f"default {ROUNDS}")
    options = parser.parse_args()
    rounds = options.rounds or (QUICK_ROUNDS if options.quick else ROUNDS)
    started, load = time.perf_counter(), os.getloadavg()[0]
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
                result = asyncio.run(run(gateway, config, database, rounds))
        finally:
            gateway.stop()
    report(result, rounds, time.perf_counter() - started, (load, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
