"""Issue 22, item 1: OpenTelemetry from real pools through the IAM gateway and FakeAws.

Each driver's pool logs in through the gateway (one login refused on purpose, so that the
dialer retries with a fresh token), runs queries and closes; a Redshift pool adds its
credentials API, a refused AssumeRole a denied request, Aurora DSQL's rate limit throttled
logins. The SDK's in-memory metric reader
and span exporter, configured for the test alone (``configure_telemetry``), must then hold every
instrument, with counts equal to what the gateway (logins accepted and refused) and FakeAws (API
calls) counted, and the cache's own counters; and no secret: every secret FakeAws issued, every
token signature iampool signed and anything shaped like an RDS token is searched for in all the
exported data (``tests/conftest.py``'s ``leaked_secrets``, the log check's search).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import iampool
from iampool import CredentialCache, configure_telemetry
from iampool import _telemetry as telemetry
from iampool.testing import FakeAws, IamDatabase

from ..conftest import issued_secrets, leaked_secrets

pytestmark = pytest.mark.anyio

QUERIES = 40


class Sdk:
    """An SDK of its own for one test: an in-memory metric reader and span exporter."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.spans = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))
        self.exported: list[str] = []  # every collection's data, as JSON

    def collect(self) -> dict[str, list[Any]]:
        """Collect now: each instrument's data points by name (and keep the data's JSON)."""
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        self.exported.append(data.to_json())
        points: dict[str, list[Any]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points

    def text(self) -> str:
        """Everything exported: metrics and spans, as their exporters would send them."""
        spans = [span.to_json() for span in self.spans.get_finished_spans()]
        return "\n".join([*self.exported, *spans])


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    sdk = Sdk()
    configure_telemetry(meter_provider=sdk.meters, tracer_provider=sdk.tracers)
    yield sdk
    configure_telemetry()
    sdk.meters.shutdown()
    sdk.tracers.shutdown()


@dataclass(frozen=True)
class Driver:
    name: str
    scheme: str
    database: IamDatabase

    @property
    def dsn(self) -> str:
        return self.scheme + "://" + self.database.dsn.split("://", 1)[1]

    async def query(self, pool: Any) -> None:
        if self.name == "psycopg":
            async with pool.connection() as connection:
                await connection.execute("SELECT 1")
        elif self.name == "asyncpg":
            async with pool.acquire() as connection:
                await connection.fetchval("SELECT 1")
        else:
            async with pool.acquire() as connection, connection.cursor() as cursor:
                await cursor.execute("SELECT 1")

    async def close(self, pool: Any) -> None:
        if self.name in ("psycopg", "asyncpg"):
            await pool.close()
        else:
            pool.close()
            await pool.wait_closed()


DRIVERS = {
    "asyncpg": ("postgresql", "iam_postgres"),
    "psycopg": ("postgresql+psycopg", "iam_postgres"),
    "aiomysql": ("mysql", "iam_mysql"),
    "asyncmy": ("mysql+asyncmy", "iam_mysql"),
}


@pytest.fixture(params=list(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Driver:
    scheme, fixture = DRIVERS[request.param]
    database = request.getfixturevalue(fixture)
    database.gateway.reset_counters()
    return Driver(request.param, scheme, database)


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


def by(points: list[Any], *names: str) -> Counter[tuple[str, ...]]:
    """Sums (counters) or counts (histograms) of ``points`` by the values of ``names``."""
    totals: Counter[tuple[str, ...]] = Counter()
    for point in points:
        key = tuple(str(point.attributes.get(name)) for name in names)
        totals[key] += point.count if hasattr(point, "count") else point.value
    return totals


async def test_a_pool_is_seen_by_every_instrument_with_the_gateways_and_awss_counts(
    driver: Driver, cache: CredentialCache, sdk: Sdk, fake_aws: FakeAws
) -> None:
    gateway = driver.database.gateway
    calls = Counter(fake_aws.calls)
    before = sdk.collect()  # the observable counters are cumulative over every cache
    gateway.reject_next(1)  # the first login is refused: the dialer retries with a fresh token

    pool = await iampool.create_pool(
        driver.dsn,
        aws_iam=driver.database.config,
        min_size=2,
        max_size=4,
        cache=cache,
        connect_rate=1000,
    )
    try:
        async with anyio.create_task_group() as group:
            for _ in range(QUERIES):
                group.start_soon(driver.query, pool)
        during = sdk.collect()  # while the pool and its credentials are alive
    finally:
        await driver.close(pool)
    await anyio.to_thread.run_sync(gateway.wait_idle)
    after = sdk.collect()
    spans = sdk.spans.get_finished_spans()
    stats = cache.stats()

    assert set(telemetry.INSTRUMENTS) <= set(during)

    # Logins: one attempt, one creation time and one span per login the gateway saw.
    refused = sum(gateway.rejected.values())
    assert (gateway.accepted >= 2, refused) == (True, 1)
    assert by(after[telemetry.CONNECT_ATTEMPTS], "outcome", "db.system.name") == {
        ("ok", driver.database.dsn.split("://")[0]): gateway.accepted,
        ("rejected", driver.database.dsn.split("://")[0]): refused,
    }
    assert by(after[telemetry.CREATE_TIME], "outcome") == {
        ("ok",): gateway.accepted,
        ("rejected",): refused,
    }
    assert sum(by(after[telemetry.RATE_WAIT]).values()) == gateway.accepted + refused
    logins = [span for span in spans if span.name == "iampool.connect"]
    assert Counter(span.attributes["outcome"] for span in logins) == {
        "ok": gateway.accepted,
        "rejected": refused,
    }
    for span in logins:
        assert span.attributes["server.address"] == gateway.host
        assert span.attributes["server.port"] == gateway.port
        assert span.attributes["iampool.driver"] == driver.name

    # AWS calls: what FakeAws received, call for call.
    received = Counter(fake_aws.calls) - calls
    assert received == {"AssumeRole": 1} == Counter({"AssumeRole": stats["sts_calls"]})
    assert by(after[telemetry.AWS_REQUESTS], "aws.api", "outcome") == {("AssumeRole", "ok"): 1}
    assert by(after[telemetry.AWS_DURATION], "aws.api") == {("AssumeRole",): 1}
    aws_spans = [span for span in spans if span.name == "STS/AssumeRole"]
    assert [span.attributes["outcome"] for span in aws_spans] == ["ok"]

    # The cache's own counters, read by the observable instruments (this test's cache is the
    # only one used meanwhile).
    lookups = by(after[telemetry.LOOKUPS], "result")
    earlier = by(before.get(telemetry.LOOKUPS, []), "result")
    assert {result: lookups[(result,)] - earlier[(result,)] for result in ("hit", "miss")} == {
        "hit": stats["hits"],
        "miss": stats["misses"],
    }
    assert stats["misses"] >= 1
    signed = sum(by(after[telemetry.TOKENS_SIGNED]).values())
    signed_before = sum(by(before.get(telemetry.TOKENS_SIGNED, [])).values())
    assert signed - signed_before == stats["tokens_signed"] == 2  # the second after the refusal
    remaining = {key[0]: value for key, value in by(during[telemetry.REMAINING], "backend").items()}
    assert {"aws", "rds"} <= set(remaining)
    assert all(0 < seconds <= 3600 for seconds in remaining.values())

    # No secret anywhere in what was exported.
    text = sdk.text()
    secrets = issued_secrets()
    assert secrets  # something was searched for
    assert json.loads(sdk.exported[-1])  # in what an exporter sends
    assert leaked_secrets(text) == []
    assert leaked_secrets(text + secrets[-1]) != []  # the search finds one when there is one


async def test_a_refused_assume_role_is_a_denied_request_without_its_message(
    sdk: Sdk, fake_aws: FakeAws, iam_postgres: IamDatabase
) -> None:
    # The role asks for an external id the configuration does not send: STS says AccessDenied.
    role = fake_aws.create_role("iampool-telemetry-denied", external_id=f"ext-{uuid.uuid4().hex}")
    config = dataclasses.replace(iam_postgres.config, role_arn=role)
    cache = CredentialCache(max_attempts=1)
    try:
        with pytest.raises(iampool.CredentialError):
            await iampool.connect(iam_postgres.dsn, aws_iam=config, cache=cache)
    finally:
        await cache.aclose()

    points = sdk.collect()
    assert by(points[telemetry.AWS_REQUESTS], "aws.api", "outcome") == {("AssumeRole", "denied"): 1}
    assert by(points[telemetry.CONNECT_ATTEMPTS], "outcome") == {("error",): 1}
    [aws] = [span for span in sdk.spans.get_finished_spans() if span.name == "STS/AssumeRole"]
    assert aws.attributes["error.type"] == "AccessDenied"
    assert not aws.events
    assert role not in sdk.text()  # attributes name the API, not the role or its refusal


async def test_a_redshift_pool_records_its_credentials_call_and_its_passwords_life(
    sdk: Sdk, fake_aws: FakeAws, iam_redshift: IamDatabase
) -> None:
    gateway = iam_redshift.gateway
    gateway.reset_counters()
    calls = Counter(fake_aws.calls)
    cache = CredentialCache()
    try:
        pool = await iampool.create_pool(
            iam_redshift.dsn, aws_iam=iam_redshift.config, min_size=1, max_size=2, cache=cache
        )
        try:
            assert await pool.fetchval("SELECT 1") == 1
            during = sdk.collect()
        finally:
            await pool.close()
    finally:
        await cache.aclose()
    await anyio.to_thread.run_sync(gateway.wait_idle)
    after = sdk.collect()

    received = Counter(fake_aws.calls) - calls
    assert received == {"AssumeRole": 1, "GetClusterCredentials": 1}
    assert by(after[telemetry.AWS_REQUESTS], "aws.api", "outcome") == {
        ("AssumeRole", "ok"): 1,
        ("GetClusterCredentials", "ok"): 1,
    }
    spans = sdk.spans.get_finished_spans()
    assert sorted(span.name for span in spans if span.name != "iampool.connect") == [
        "Redshift/GetClusterCredentials",
        "STS/AssumeRole",
    ]
    assert by(after[telemetry.CONNECT_ATTEMPTS], "db.system.name", "outcome") == {
        ("aws.redshift", "ok"): gateway.accepted
    }
    assert [
        span.attributes["iampool.driver"] for span in spans if span.name == "iampool.connect"
    ] == ["redshift_connector"] * gateway.accepted
    remaining = {key[0] for key in by(during[telemetry.REMAINING], "backend")}
    assert {"aws", "redshift"} <= remaining
    assert leaked_secrets(sdk.text()) == []  # the temporary password included


async def test_throttled_logins_are_counted_as_the_cluster_refused_them(
    sdk: Sdk, iam_dsql: IamDatabase
) -> None:
    gateway = iam_dsql.gateway
    gateway.reset_counters()
    gateway.limit(login_rate=0, session_lifetime=None)  # Aurora DSQL refusing every new login
    cache = CredentialCache()
    try:
        with pytest.raises(iampool.ConnectThrottled) as caught:
            await iampool.connect(
                iam_dsql.dsn, aws_iam=iam_dsql.config, cache=cache, connect_timeout=1
            )
        during = sdk.collect()
    finally:
        gateway.limit(login_rate=None, session_lifetime=None)
        await cache.aclose()

    tries = caught.value.tries
    assert gateway.rejected == {"throttled": tries}
    assert by(during[telemetry.CONNECT_ATTEMPTS], "db.system.name", "outcome") == {
        ("postgresql", "throttled"): tries
    }
    # Each try took its turn at the DSQL plan's default rate cap (100 new connections a second).
    assert sum(by(during[telemetry.RATE_WAIT]).values()) == tries
    logins = [span for span in sdk.spans.get_finished_spans() if span.name == "iampool.connect"]
    assert [span.attributes["error.type"] for span in logins] == ["throttled"] * tries
    assert "dsql" in {key[0] for key in by(during[telemetry.REMAINING], "backend")}
    assert leaked_secrets(sdk.text()) == []
