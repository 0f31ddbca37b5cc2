"""iampool against what applications write without it, and how its credential cache scales.

Peers (PostgreSQL through asyncpg; every side connects to the same RDS-mode ``IamGateway`` in front
of the real PostgreSQL, with the same client ``SSLContext``, and gets its AWS credentials from the
same ``FakeAws``):

- A ``iampool``: ``iampool.connect(dsn, aws_iam=...)`` with a shared ``CredentialCache`` (for a
  cold herd: a new, empty cache, which also builds its aiobotocore client: colder than B's
  cold, whose boto3 default session keeps its loaded models);
- B Superset's pattern, as its ``aws_iam`` mixin does it, synchronously and so here on the event
  loop: STS credentials from a process-wide cache (10 minutes; a miss calls ``AssumeRole`` through
  a new ``boto3.client("sts")``, without single flight), then for every new connection a new
  ``boto3.client("rds")`` and ``generate_db_auth_token``; then ``asyncpg.connect``;
- C a new aiobotocore session per connection: ``AssumeRole`` and a signature each time, but
  awaited, so the loop keeps running;
- D the floor: one token minted before measuring and used as a static password by
  ``asyncpg.connect``; D' is D measured again, an A/A control whose ratio is 1.00 in truth.

Measured: new-connection latency (sequential connects, the sides interleaved; p50 and p99), a
cold herd of concurrent first connects (wall time, the AssumeRole calls FakeAws received, tokens
minted, the longest event-loop stall), and steady throughput of short-lived connections (workers
that connect, ``SELECT 1`` and close, as with SQLAlchemy's ``NullPool``; slices in rotating
order, the ratio is the median of per-round ratios to D). The event loop's stalls are measured by
a ticker task that sleeps 1 ms at a time and records how late it wakes. C's connects take some
30 times longer than the others', so it stops after 40 connects and runs one herd.

Scale (public API only, ``CredentialCache()`` at its default settings, credentials from FakeAws):

- endpoints in rotation: N distinct RDS endpoints, each with its own ``auth_for`` and token,
  called round-robin: the warm ``credentials()`` latency (median of batches of 100 calls, after a
  first pass over every endpoint), the memory per endpoint (its ``auth_for`` object, and its
  share of the token entries the cache holds; tracemalloc, see ``endpoints_in_rotation``), the
  time of a first token, and the tokens signed while measuring (0 when every endpoint stays
  cached);
- waiters on one cold key: N tasks awaiting ``credentials()`` of one endpoint on an empty cache:
  the time until all are served, the longest event-loop stall, AssumeRole calls and tokens;
  and, as the floor, the same N tasks awaiting one ``asyncio.Event`` set at once.

Run: ``.venv/bin/python benchmarks/bench_peers.py`` (about 3-4 minutes here; ``--quick``: about
2 minutes, smaller samples and no 100k rows; ``--only peers`` or ``--only scale``). Prints
numbers, never secrets. ``IAMPOOL_TEST_PG_DSN`` names the upstream server (default: PostgreSQL at
127.0.0.1:5432 as postgres). A herd opens ``--herd`` (default 50) server connections at once;
the script leaves 25 of the server's free connection slots to its other clients and shrinks the
herd, saying so, when it must.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import ssl
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import date
from types import TracebackType
from typing import Any

import asyncpg
import boto3
from aiobotocore.session import AioSession

import iampool
from iampool import AwsIamConfig, CredentialCache, auth_for
from iampool.testing import FakeAws, IamGateway

REGION = "us-east-1"
USER = "app"
PG_UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
# A herd whose tokens are minted on the event loop (B) keeps the first connects waiting on their
# TLS handshake until the last token is minted: give every side the same generous limits.
CONNECT_TIMEOUT = 300.0
HERD_MARGIN = 25  # server connection slots a herd leaves to the server's other clients

IAMPOOL, SUPERSET, AIOBOTOCORE, FLOOR, CONTROL = "A", "B", "C", "D", "D'"
LABELS = {
    IAMPOOL: "A iampool.connect, shared cache",
    SUPERSET: "B Superset: boto3 client per connect, on loop",
    AIOBOTOCORE: "C new aiobotocore session per connect",
    FLOOR: "D static token (floor)",
    CONTROL: "  D' control: D again (A/A)",
}


@dataclass(frozen=True)
class Settings:
    connects: int = 150  # sequential connects per side
    slow_samples: int = 40  # ... for C
    herd: int = 50  # concurrent first connects
    herd_rounds: int = 3
    slow_herds: int = 1  # ... for C (each takes ~40 s here)
    workers: int = 8  # steady throughput
    steady_rounds: int = 6
    slice_s: float = 1.5
    endpoints: tuple[int, ...] = (1, 100, 10_000, 100_000)
    waiters: tuple[int, ...] = (1_000, 10_000, 100_000)
    measured_calls: int = 20_000  # warm calls timed per endpoints row, at most
    measure_s: float = 5.0  # ... or for this long (at least 1,000 calls)


QUICK = Settings(
    connects=40,
    slow_samples=15,
    herd_rounds=1,
    steady_rounds=3,
    slice_s=1.0,
    endpoints=(1, 100, 10_000),
    waiters=(1_000, 10_000),
    measured_calls=5_000,
    measure_s=2.0,
)


def progress(message: str) -> None:
    """What is running now, on stderr (the tables go to stdout)."""
    print(f"bench_peers: {message}", file=sys.stderr, flush=True)


class LoopLag:
    """``async with LoopLag() as lag``: ``lag.worst`` is the longest the loop failed to run a
    task that asked to wake up (a ticker sleeping ``interval`` at a time, how late it woke)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the ticker is running before the measured work starts
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def stop(self) -> None:
        """Stop measuring now (``worst`` keeps what was seen so far)."""
        if self._task is not None:
            self._task.cancel()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.worst = max(self.worst, loop.time() - due)


# -- the sides ----------------------------------------------------------------------------------


class Side:
    """One way of opening a new authenticated asyncpg connection (subclasses define connect)."""

    def __init__(self, gateway: IamGateway, tls: ssl.SSLContext) -> None:
        self.gateway = gateway
        self.tls = tls
        self.minted = 0  # tokens this side signed itself

    async def connect(self) -> asyncpg.Connection:
        """A new connection, authenticated this side's way."""
        raise NotImplementedError

    async def start_cold(self) -> None:
        """Forget every credential: the next connect is a first connect."""

    async def end_cold(self) -> None:
        """Release what ``start_cold`` made."""

    def tokens(self) -> int:
        return self.minted

    async def aclose(self) -> None:
        """Release what the side holds."""

    async def _connect_with(self, password: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.gateway.host,
            port=self.gateway.port,
            user=USER,
            database=self.gateway.upstream.database,
            password=password,
            ssl=self.tls,
            timeout=CONNECT_TIMEOUT,
        )


class Iampool(Side):
    def __init__(self, gateway: IamGateway, tls: ssl.SSLContext, config: AwsIamConfig) -> None:
        super().__init__(gateway, tls)
        self.config = config
        self.dsn = gateway.dsn(USER)
        self.cache = CredentialCache()
        self._warm = self.cache
        self._retired_tokens = 0

    async def connect(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await iampool.connect(
            self.dsn, aws_iam=self.config, cache=self.cache, ssl=self.tls, timeout=CONNECT_TIMEOUT
        )
        return connection

    async def start_cold(self) -> None:
        self.cache = CredentialCache()

    async def end_cold(self) -> None:
        self._retired_tokens += self.cache.stats()["tokens_signed"]
        await self.cache.aclose()
        self.cache = self._warm

    def tokens(self) -> int:
        return self._retired_tokens + self.cache.stats()["tokens_signed"]

    async def aclose(self) -> None:
        await self._warm.aclose()


class Superset(Side):
    """What Superset's ``aws_iam`` mixin (``superset/db_engine_specs/aws_iam.py``) does for a new
    connection, synchronously, here on the event loop: STS credentials from a process-wide cache
    (10 minutes per role, region and external id; a miss calls ``AssumeRole`` through a new
    ``boto3.client("sts")``, with no single flight), then a new ``boto3.client("rds")`` on those
    credentials and ``generate_db_auth_token``. boto3's default session, and so its loaded
    service models, live as long as the process."""

    STS_TTL = 600.0

    def __init__(self, gateway: IamGateway, tls: ssl.SSLContext, role_arn: str) -> None:
        super().__init__(gateway, tls)
        self.role_arn = role_arn
        self._sts: dict[tuple[str, str, str | None], tuple[dict[str, Any], float]] = {}

    def credentials(self) -> dict[str, Any]:
        key = (self.role_arn, REGION, None)
        cached = self._sts.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.STS_TTL:
            return cached[0]
        sts = boto3.client("sts", region_name=REGION)
        try:
            issued: dict[str, Any] = sts.assume_role(
                RoleArn=self.role_arn, RoleSessionName="superset-iam-session", DurationSeconds=3600
            )["Credentials"]
        finally:
            sts.close()
        self._sts[key] = (issued, time.monotonic())
        return issued

    def token(self) -> str:
        issued = self.credentials()
        rds = boto3.client(
            "rds",
            region_name=REGION,
            aws_access_key_id=issued["AccessKeyId"],
            aws_secret_access_key=issued["SecretAccessKey"],
            aws_session_token=issued["SessionToken"],
        )
        token: str = rds.generate_db_auth_token(
            DBHostname=self.gateway.host, Port=self.gateway.port, DBUsername=USER
        )
        self.minted += 1
        return token

    async def connect(self) -> asyncpg.Connection:
        return await self._connect_with(self.token())  # blocks the loop, as Superset's does

    async def start_cold(self) -> None:
        self._sts.clear()  # as after its cache's 10 minutes


class Aiobotocore(Side):
    """A new aiobotocore session for every new connection: AssumeRole and a signature each."""

    def __init__(self, gateway: IamGateway, tls: ssl.SSLContext, role_arn: str) -> None:
        super().__init__(gateway, tls)
        self.role_arn = role_arn

    async def token(self) -> str:
        session = AioSession()
        async with session.create_client("sts", region_name=REGION) as sts:
            issued = (await sts.assume_role(RoleArn=self.role_arn, RoleSessionName="aiobotocore"))[
                "Credentials"
            ]
        async with session.create_client(
            "rds",
            region_name=REGION,
            aws_access_key_id=issued["AccessKeyId"],
            aws_secret_access_key=issued["SecretAccessKey"],
            aws_session_token=issued["SessionToken"],
        ) as rds:
            token: str = await rds.generate_db_auth_token(
                DBHostname=self.gateway.host, Port=self.gateway.port, DBUsername=USER, Region=REGION
            )
        self.minted += 1
        return token

    async def connect(self) -> asyncpg.Connection:
        return await self._connect_with(await self.token())


class StaticToken(Side):
    """The floor: one token minted before measuring, used as a static password."""

    def __init__(self, gateway: IamGateway, tls: ssl.SSLContext, password: str) -> None:
        super().__init__(gateway, tls)
        self._password = password

    async def connect(self) -> asyncpg.Connection:
        return await self._connect_with(self._password)


# -- peers: measurements ------------------------------------------------------------------------


def rotations(sides: list[str], rounds: int) -> list[list[str]]:
    """Each round's order: rotated by one every round, so each side takes each position."""
    return [sides[index % len(sides) :] + sides[: index % len(sides)] for index in range(rounds)]


@dataclass
class ConnectSamples:
    seconds: list[float] = field(default_factory=list)
    worst_lag: float = 0.0
    assume_role: int = 0


def takes_part(name: str, samples: int, slow_limit: int) -> bool:
    """Whether ``name`` still measures once it has ``samples``: C's connects take ~30 times
    longer than the others', so it stops at ``slow_limit`` (the others go on, interleaved)."""
    return name != AIOBOTOCORE or samples < slow_limit


async def new_connection_latency(
    sides: dict[str, Side], aws: FakeAws, settings: Settings
) -> dict[str, ConnectSamples]:
    samples = {name: ConnectSamples() for name in sides}
    for side in sides.values():  # warm-up: first code paths, the first TLS handshake
        await (await side.connect()).close()
    for order in rotations(list(sides), settings.connects):
        for name in order:
            if not takes_part(name, len(samples[name].seconds), settings.slow_samples):
                continue
            before = aws.calls["AssumeRole"]
            async with LoopLag() as lag:
                started = time.perf_counter()
                connection = await sides[name].connect()
                elapsed = time.perf_counter() - started
            await connection.close()
            sample = samples[name]
            sample.seconds.append(elapsed)
            sample.worst_lag = max(sample.worst_lag, lag.worst)
            sample.assume_role += aws.calls["AssumeRole"] - before
    return samples


@dataclass
class HerdSamples:
    seconds: list[float] = field(default_factory=list)
    worst_lags: list[float] = field(default_factory=list)
    assume_role: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


async def cold_herd(side: Side, aws: FakeAws, size: int) -> tuple[float, float, int, int]:
    """``size`` concurrent first connects; (seconds until the last one is connected, the worst
    loop stall until then, AssumeRole calls, tokens). Each connection is closed as soon as it
    is open, so the herd holds as few server connections as it can."""
    await side.start_cold()
    connected: list[float] = []
    try:
        calls, tokens = aws.calls["AssumeRole"], side.tokens()
        async with LoopLag() as lag:

            async def first_connect() -> None:
                connection = await side.connect()
                connected.append(time.perf_counter())
                if len(connected) == size:
                    lag.stop()  # the herd is in: what follows is closing
                await connection.close()

            started = time.perf_counter()
            outcomes = await asyncio.gather(
                *(first_connect() for _ in range(size)), return_exceptions=True
            )
        calls, tokens = aws.calls["AssumeRole"] - calls, side.tokens() - tokens
    finally:
        await side.end_cold()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return max(connected) - started, lag.worst, calls, tokens


async def cold_herds(
    sides: dict[str, Side], aws: FakeAws, size: int, settings: Settings
) -> dict[str, HerdSamples]:
    samples = {name: HerdSamples() for name in sides}
    for order in rotations(list(sides), settings.herd_rounds):
        for name in order:
            if not takes_part(name, len(samples[name].seconds), settings.slow_herds):
                continue
            seconds, worst, calls, tokens = await cold_herd(sides[name], aws, size)
            samples[name].seconds.append(seconds)
            samples[name].worst_lags.append(worst)
            samples[name].assume_role.append(calls)
            samples[name].tokens.append(tokens)
    return samples


@dataclass
class SteadySamples:
    rates: list[float] = field(default_factory=list)
    worst_lag: float = 0.0
    assume_role_per_s: list[float] = field(default_factory=list)


async def churn(side: Side, workers: int, seconds: float) -> int:
    """``workers`` tasks connect, ``SELECT 1`` and close, back to back; connections completed."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            connection = await side.connect()
            try:
                await connection.fetchval("SELECT 1")
            finally:
                await connection.close()
            done += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def steady_throughput(
    sides: dict[str, Side], aws: FakeAws, settings: Settings
) -> dict[str, SteadySamples]:
    for side in sides.values():
        await churn(side, settings.workers, 0.3)
    samples = {name: SteadySamples() for name in sides}
    for order in rotations(list(sides), settings.steady_rounds):
        for name in order:
            calls = aws.calls["AssumeRole"]
            async with LoopLag() as lag:
                started = time.perf_counter()
                done = await churn(sides[name], settings.workers, settings.slice_s)
                elapsed = time.perf_counter() - started
            sample = samples[name]
            sample.rates.append(done / elapsed)
            sample.worst_lag = max(sample.worst_lag, lag.worst)
            sample.assume_role_per_s.append((aws.calls["AssumeRole"] - calls) / elapsed)
    return samples


@dataclass
class PeerResults:
    latency: dict[str, ConnectSamples]
    herd: int
    herds: dict[str, HerdSamples]
    steady: dict[str, SteadySamples]


async def free_connection_slots() -> int:
    """Connections PostgreSQL still accepts from a non-superuser (the gateway's login user)."""
    server = await asyncpg.connect(PG_UPSTREAM)
    try:
        free: int = await server.fetchval(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int - count(*)"
            " FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
    finally:
        await server.close()
    return free


async def run_peers(aws: FakeAws, gateway: IamGateway, settings: Settings) -> PeerResults:
    role_arn = aws.create_role("bench-peers")
    config = AwsIamConfig.from_extra(
        {"enabled": True, "region": REGION, "role_arn": role_arn, "db_username": USER}
    )
    tls = gateway.client_ssl_context()
    floor_cache = CredentialCache()  # the floor's one token, minted from a cache of its own
    try:
        auth = auth_for(config, host=gateway.host, port=gateway.port, cache=floor_cache)
        password = (await auth.credentials()).password
    finally:
        await floor_cache.aclose()
    sides: dict[str, Side] = {
        IAMPOOL: Iampool(gateway, tls, config),
        SUPERSET: Superset(gateway, tls, role_arn),
        AIOBOTOCORE: Aiobotocore(gateway, tls, role_arn),
        FLOOR: StaticToken(gateway, tls, password),
        CONTROL: StaticToken(gateway, tls, password),
    }
    try:
        progress(f"new connection latency: {settings.connects} connects per side")
        latency = await new_connection_latency(sides, aws, settings)
        herd = settings.herd
        free = await free_connection_slots()
        if free - HERD_MARGIN < herd:  # other clients of a shared server need theirs
            herd = max(free - HERD_MARGIN, 0)
            if herd < 10:
                raise SystemExit(
                    f"bench_peers: PostgreSQL has {free} free connection slots, too few for a "
                    f"herd; raise max_connections or retry when the server is quieter"
                )
            progress(f"PostgreSQL has {free} free connection slots: herds of {herd}")
        progress(f"cold herds: {settings.herd_rounds} herds of {herd} per side")
        herds = await cold_herds(sides, aws, herd, settings)
        progress(f"steady throughput: {settings.steady_rounds} rounds")
        steady = await steady_throughput(sides, aws, settings)
    finally:
        for side in sides.values():
            await side.aclose()
    return PeerResults(latency, herd, herds, steady)


# -- scale --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointsRow:
    endpoints: int
    warm_us: float
    auth_bytes: float  # per endpoint: the ``auth_for`` object the application keeps, unused
    cache_bytes: float  # per endpoint: token entries kept x bytes per entry / N
    first_pass_us: float | None  # per endpoint, untraced: its first token, 256 at a time
    cache_size: int
    signed_while_measuring: int
    measured_calls: int


TIMED_SEGMENT = 1_000  # endpoints at the start of the first pass timed untraced (first token)


def traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def endpoints_in_rotation(
    config: AwsIamConfig, count: int, settings: Settings
) -> EndpointsRow:
    """N endpoints called round-robin, and the memory they hold.

    An endpoint's ``auth_for`` object is traced while all N are built. The first pass gives every
    endpoint its token: the first ``TIMED_SEGMENT`` endpoints untraced, timed (a first token's
    cost; tracing slows signing several times), the rest traced (what one holds in the cache,
    the table's growth spread over all of them, before the LRU evicts anything); the cache's
    share per endpoint is that size times the token entries it still holds at the end, over N.
    """
    cache = CredentialCache()
    try:
        # The cache's fixed costs first (its AWS client, the role's STS credentials), on an
        # endpoint of its own, so the memory below is what the endpoints add.
        await auth_for(
            config, host="db-warm-up.bench.internal", port=5432, cache=cache
        ).credentials()
        fixed_entries = cache.stats()["size"]
        tracemalloc.start()
        before = traced_bytes()
        auths = [
            auth_for(config, host=f"db-{index}.bench.internal", port=5432, cache=cache)
            for index in range(count)
        ]
        auth_bytes = (traced_bytes() - before) / count
        tracemalloc.stop()

        # The first pass: the first TIMED_SEGMENT endpoints untraced and timed (a first token's
        # cost), the rest traced (what an entry holds, with the table's growth spread over many).
        timed = TIMED_SEGMENT if count > 2 * TIMED_SEGMENT else 0
        started = time.perf_counter()
        for start in range(0, timed, 256):
            await asyncio.gather(*(auth.credentials() for auth in auths[start : start + 256]))
        first_pass = time.perf_counter() - started
        tracemalloc.start()
        before = traced_bytes()
        for start in range(timed, count, 256):
            await asyncio.gather(*(auth.credentials() for auth in auths[start : start + 256]))
        entry_bytes = (traced_bytes() - before) / (count - timed)
        tracemalloc.stop()
        kept = cache.stats()["size"] - fixed_entries

        signed = cache.stats()["tokens_signed"]
        batches: list[float] = []
        index = 0
        deadline = time.perf_counter() + settings.measure_s
        while len(batches) * 100 < settings.measured_calls and (
            len(batches) < 10 or time.perf_counter() < deadline
        ):
            started = time.perf_counter()
            for _ in range(100):
                await auths[index].credentials()
                index = (index + 1) % count
            batches.append((time.perf_counter() - started) / 100)
        stats = cache.stats()
        return EndpointsRow(
            endpoints=count,
            warm_us=statistics.median(batches) * 1e6,
            auth_bytes=auth_bytes,
            cache_bytes=entry_bytes * kept / count,
            first_pass_us=first_pass / timed * 1e6 if timed else None,
            cache_size=stats["size"],
            signed_while_measuring=stats["tokens_signed"] - signed,
            measured_calls=len(batches) * 100,
        )
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await cache.aclose()


@dataclass(frozen=True)
class WaitersRow:
    waiters: int
    seconds: float
    worst_lag: float
    assume_role: int
    tokens_signed: int
    floor_seconds: float  # the same tasks waking from one asyncio.Event: asyncio's own cost
    floor_lag: float
    floor_again_seconds: float  # the floor measured again: the A/A control


async def event_waiters(count: int) -> tuple[float, float]:
    """The floor for a herd of waiters: ``count`` tasks await one ``asyncio.Event``, set as soon
    as the loop gets to it; (seconds until all are done, worst loop stall)."""
    event = asyncio.Event()
    async with LoopLag() as lag:
        started = time.perf_counter()
        asyncio.get_running_loop().call_soon(event.set)
        await asyncio.gather(*(event.wait() for _ in range(count)))
        elapsed = time.perf_counter() - started
    return elapsed, lag.worst


async def waiters_on_one_cold_key(config: AwsIamConfig, aws: FakeAws, count: int) -> WaitersRow:
    cache = CredentialCache()
    try:
        auth = auth_for(config, host="db-cold.bench.internal", port=5432, cache=cache)
        calls = aws.calls["AssumeRole"]
        async with LoopLag() as lag:
            started = time.perf_counter()
            await asyncio.gather(*(auth.credentials() for _ in range(count)))
            elapsed = time.perf_counter() - started
        floor_seconds, floor_lag = await event_waiters(count)
        floor_again_seconds, _ = await event_waiters(count)
        return WaitersRow(
            waiters=count,
            seconds=elapsed,
            worst_lag=lag.worst,
            assume_role=aws.calls["AssumeRole"] - calls,
            tokens_signed=cache.stats()["tokens_signed"],
            floor_seconds=floor_seconds,
            floor_lag=floor_lag,
            floor_again_seconds=floor_again_seconds,
        )
    finally:
        await cache.aclose()


async def run_scale(
    aws: FakeAws, settings: Settings
) -> tuple[list[EndpointsRow], list[WaitersRow]]:
    config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": REGION,
            "role_arn": aws.create_role("bench-scale"),
            "db_username": USER,
        }
    )
    endpoints = []
    for count in settings.endpoints:
        progress(f"endpoints in rotation: {count:,}")
        endpoints.append(await endpoints_in_rotation(config, count, settings))
    waiters = []
    for count in settings.waiters:
        progress(f"waiters on one cold key: {count:,}")
        waiters.append(await waiters_on_one_cold_key(config, aws, count))
    return endpoints, waiters


# -- the report ---------------------------------------------------------------------------------


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def spread(values: list[float]) -> str:
    quartiles = statistics.quantiles(values, n=4)
    return f"{quartiles[0]:.2f}-{quartiles[2]:.2f}"


def report_peers(results: PeerResults, settings: Settings) -> None:
    latency = results.latency
    floor_p50 = statistics.median(latency[FLOOR].seconds)
    floor_p99 = percentile(latency[FLOOR].seconds, 99)
    print(
        f"New connection, {settings.connects} sequential connects per side (C: "
        f"{min(settings.slow_samples, settings.connects)}), interleaved\n"
    )
    rows = [("side", "p50", "x floor", "p99", "x floor", "AssumeRole", "worst loop stall")]
    for name, label in LABELS.items():
        samples = latency[name]
        p50, p99 = statistics.median(samples.seconds), percentile(samples.seconds, 99)
        rows.append(
            (
                label,
                ms(p50),
                f"{p50 / floor_p50:.2f}x",
                ms(p99),
                f"{p99 / floor_p99:.2f}x",
                str(samples.assume_role),
                ms(samples.worst_lag),
            )
        )
    print_table(rows)

    herds = results.herds
    floor_herd = statistics.median(herds[FLOOR].seconds)
    print(
        f"\nCold herd: {results.herd} concurrent first connects, {settings.herd_rounds} herds "
        f"per side (C: {min(settings.slow_herds, settings.herd_rounds)}), interleaved (medians; "
        "worst stall over all herds)\n"
    )
    rows = [("side", "herd time", "x floor", "AssumeRole/herd", "tokens/herd", "loop stall")]
    for name, label in LABELS.items():
        samples = herds[name]
        seconds = statistics.median(samples.seconds)
        stall = f"{ms(statistics.median(samples.worst_lags))} (worst {ms(max(samples.worst_lags))})"
        rows.append(
            (
                label,
                ms(seconds),
                f"{seconds / floor_herd:.2f}x",
                f"{statistics.median(samples.assume_role):g}",
                f"{statistics.median(samples.tokens):g}",
                stall,
            )
        )
    print_table(rows)

    steady = results.steady
    print(
        f"\nSteady throughput of short-lived connections: {settings.workers} workers connect, "
        f"SELECT 1, close; {settings.steady_rounds} rounds x {settings.slice_s:g} s\n"
    )
    rows = [("side", "connections/s", "x floor (p25-p75)", "AssumeRole/s", "worst loop stall")]
    for name, label in LABELS.items():
        samples = steady[name]
        per_round = [
            rate / base for rate, base in zip(samples.rates, steady[FLOOR].rates, strict=True)
        ]
        ratio = (
            "1.00x"
            if name == FLOOR
            else f"{statistics.median(per_round):.2f}x ({spread(per_round)})"
        )
        rows.append(
            (
                label,
                f"{statistics.median(samples.rates):,.0f}",
                ratio,
                f"{statistics.median(samples.assume_role_per_s):,.0f}",
                ms(samples.worst_lag),
            )
        )
    print_table(rows)


def report_scale(endpoints: list[EndpointsRow], waiters: list[WaitersRow]) -> None:
    print(
        "\nEndpoints in rotation, CredentialCache() defaults: round-robin credentials() over N "
        "endpoints after a first pass\n"
    )
    rows = [
        (
            "endpoints",
            "warm credentials()",
            "memory / endpoint",
            "of which auth_for()",
            "first token",
            "entries kept",
            "tokens signed while measuring",
            "target",
        )
    ]
    for row in endpoints:
        rows.append(
            (
                f"{row.endpoints:,}",
                f"{row.warm_us:,.2f} us",
                f"{row.auth_bytes + row.cache_bytes:,.0f} B",
                f"{row.auth_bytes:,.0f} B",
                "" if row.first_pass_us is None else f"{row.first_pass_us:,.0f} us",
                f"{row.cache_size:,}",
                f"{row.signed_while_measuring:,} of {row.measured_calls:,} calls",
                "<= 2 us, cache <= 600 B" if row.endpoints >= 10_000 else "",
            )
        )
    print_table(rows)
    print(
        "\nWaiters on one cold key: N tasks await credentials() of one endpoint, empty cache; "
        "floor: the same\nN tasks await one asyncio.Event set at once (asyncio's own cost of "
        "waking N tasks); A/A control: the floor\nmeasured again, over the floor (1.00x in "
        "truth)\n"
    )
    rows = [
        (
            "waiters",
            "all served",
            "worst loop stall",
            "AssumeRole",
            "tokens signed",
            "floor: served",
            "floor: stall",
            "vs floor",
            "A/A control",
        )
    ]
    for row in waiters:
        rows.append(
            (
                f"{row.waiters:,}",
                ms(row.seconds),
                ms(row.worst_lag),
                str(row.assume_role),
                str(row.tokens_signed),
                ms(row.floor_seconds),
                ms(row.floor_lag),
                f"{row.seconds / row.floor_seconds:.2f}x",
                f"{row.floor_again_seconds / row.floor_seconds:.2f}x",
            )
        )
    print_table(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, no 100k rows")
    parser.add_argument("--only", choices=("peers", "scale"), help="run one half")
    parser.add_argument("--herd", type=int, default=None, help="concurrent first connects (50)")
    options = parser.parse_args()
    settings = QUICK if options.quick else Settings()
    if options.herd is not None:
        settings = Settings(**{**settings.__dict__, "herd": options.herd})
    started, load = time.perf_counter(), os.getloadavg()[0]
    peers: PeerResults | None = None
    scale: tuple[list[EndpointsRow], list[WaitersRow]] | None = None
    with FakeAws(region=REGION) as aws, aws.export_env():
        if options.only != "scale":
            gateway = IamGateway(
                "postgresql",
                upstream=PG_UPSTREAM,
                authority=aws,
                region=REGION,
                handshake_timeout=CONNECT_TIMEOUT,
            )
            try:
                gateway.start()
            except ConnectionError as exc:
                raise SystemExit(f"bench_peers: {exc}; start PostgreSQL or set the DSN") from None
            try:
                gateway.ensure_user(USER)
                peers = asyncio.run(run_peers(aws, gateway, settings))
            finally:
                gateway.stop()
        if options.only != "peers":
            scale = asyncio.run(run_scale(aws, settings))
    if peers is not None:
        report_peers(peers, settings)
    if scale is not None:
        report_scale(*scale)
    print(
        f"\n{os.cpu_count()} CPUs, load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at "
        f"end; {date.today().isoformat()}, {time.perf_counter() - started:.0f} s in all."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
