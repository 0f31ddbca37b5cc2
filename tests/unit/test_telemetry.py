"""Telemetry's pure parts: outcomes, error types, backends of cache keys, the totals the
observable instruments read, and what the dialer records per try (the SDK's in-memory reader and
exporter, a scripted server: no socket)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iampool import (
    AuthTokenRejected,
    AwsIamConfig,
    CredentialError,
    DbCredentials,
    LoginTimeoutError,
    TlsNotOfferedError,
    auth_for,
    configure_telemetry,
)
from iampool import _telemetry as telemetry
from iampool._aws import aws_outcome
from iampool._minting import sts_key
from iampool.pools._dialer import (
    ConnectRate,
    Refusal,
    connect_outcome,
    login_paced,
    login_started,
)
from iampool.pools._dialer import Dialer as _Dialer

from .fakes import FakeClock, FakeSource, aws_credentials, leases, wait_until
from .test_retry import ENDPOINT, FakeAuth, RecordingRate, Refused, Server, dialer

pytestmark = pytest.mark.anyio

REGION = "us-east-1"
ROLE = AwsIamConfig.from_extra(
    {
        "enabled": True,
        "region": REGION,
        "role_arn": "arn:aws:iam::123456789012:role/app-db",
        "db_username": "app",
    }
)


# -- outcomes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (None, "ok"),
        ("Throttling", "throttled"),
        ("ThrottlingException", "throttled"),
        ("TooManyRequestsException", "throttled"),
        ("RequestLimitExceeded", "throttled"),
        ("AccessDenied", "denied"),
        ("AccessDeniedException", "denied"),
        ("ExpiredToken", "denied"),
        ("InvalidClientTokenId", "denied"),
        ("SignatureDoesNotMatch", "denied"),
        ("ClusterNotFound", "error"),
        ("ServiceUnavailable", "error"),
        ("ReadTimeoutError", "error"),
        ("NoCredentialsError", "error"),
    ],
)
def test_an_aws_error_code_maps_to_its_outcome(code: str | None, outcome: str) -> None:
    assert aws_outcome(code) == outcome


@pytest.mark.parametrize(
    ("error", "refused", "outcome"),
    [
        (None, None, "ok"),
        (Refused("no"), Refusal("rejected", "no"), "rejected"),
        (Refused("slow down"), Refusal("throttled", "slow down"), "throttled"),
        (TlsNotOfferedError("no TLS"), None, "no_tls"),
        (TimeoutError(), None, "timeout"),
        (asyncio.TimeoutError(), None, "timeout"),
        (LoginTimeoutError("late", endpoint=ENDPOINT, timeout=1.0), None, "timeout"),
        (ConnectionRefusedError("refused"), None, "error"),
        (CredentialError("denied", code="AccessDenied", target="role"), None, "error"),
        (asyncio.CancelledError(), None, "error"),
    ],
)
def test_a_login_try_maps_to_its_outcome(
    error: BaseException | None, refused: Refusal | None, outcome: str
) -> None:
    assert connect_outcome(error, refused) == outcome


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        ("AccessDenied", "AccessDenied"),
        ("rejected", "rejected"),
        ("botocore.ReadTimeout", "botocore.ReadTimeout"),
        (None, "_OTHER"),
        ("", "_OTHER"),
        ("Access Denied: secret=abc", "_OTHER"),
        ("x" * 65, "_OTHER"),
        ("9lives", "_OTHER"),
    ],
)
def test_an_error_code_is_an_error_type_only_when_it_is_a_plain_identifier(
    code: str | None, shown: str
) -> None:
    assert telemetry.error_type(code) == shown


# -- backends of cache keys --------------------------------------------------------------------


def test_each_backends_cache_keys_are_told_apart(new_cache: Callable[..., Any]) -> None:
    cache = new_cache()
    rds = auth_for(ROLE, host="db.cluster-x.us-east-1.rds.amazonaws.com", port=5432, cache=cache)
    dsql_config = AwsIamConfig.from_extra(
        {"enabled": True, "dsql": True, "region": REGION, "db_username": "admin"}
    )
    dsql = auth_for(dsql_config, host="abc.dsql.us-east-1.on.aws", port=5432, cache=cache)
    redshift_config = AwsIamConfig.from_extra(
        {
            "enabled": True,
            "region": REGION,
            "db_username": "app",
            "cluster_identifier": "wh",
            "db_name": "dev",
        }
    )
    redshift = auth_for(redshift_config, cache=cache)
    secret_config = AwsIamConfig.from_extra(
        {"enabled": True, "region": REGION, "secret_id": "prod/app-db"}
    )
    secret = auth_for(secret_config, host="db.example.internal", port=5432, cache=cache)

    assert telemetry.backend_of(sts_key(ROLE)) == "aws"
    assert telemetry.backend_of(secret._key) == "secrets-manager"  # type: ignore[attr-defined]
    assert telemetry.backend_of(rds._key) == "rds"  # type: ignore[attr-defined]
    assert telemetry.backend_of(dsql._key) == "dsql"  # type: ignore[attr-defined]
    assert telemetry.backend_of(redshift._key) == "redshift"  # type: ignore[attr-defined]
    assert telemetry.backend_of(redshift._endpoint_key) is None  # type: ignore[attr-defined]
    assert telemetry.backend_of("something else") is None
    assert telemetry.backend_of(()) is None


# -- what the observable instruments read ------------------------------------------------------


async def test_a_stale_but_valid_value_is_counted_stale_not_hit(
    new_cache: Callable[..., Any], source: FakeSource, clock: FakeClock
) -> None:
    cache = new_cache()
    first = await aws_credentials(cache, ROLE)
    clock.advance(550)  # due for refresh: that refresh fails
    source.failures.append(CredentialError("Throttling.", code="Throttling"))
    assert await aws_credentials(cache, ROLE) is first
    await wait_until(lambda: cache.stats()["refresh_failures"] == 1)
    hits = cache.stats()["hits"]

    clock.advance(100)  # past the 600 s ttl, still valid: served stale while refreshing fails
    source.failures.append(CredentialError("Throttling.", code="Throttling"))
    assert await aws_credentials(cache, ROLE) is first

    stats = cache.stats()
    assert (stats["stale"], stats["hits"]) == (1, hits)
    lives = dict(leases(cache).remaining())
    assert 0 < lives[sts_key(ROLE)] < 3600 - 650


async def test_the_totals_keep_a_collected_caches_counts(
    new_cache: Callable[..., Any], clock: FakeClock, source: FakeSource
) -> None:
    from iampool import CredentialCache

    before = telemetry._caches.totals()
    cache = CredentialCache(clock=clock, source=source)
    auth = auth_for(ROLE, host="db.example.com", port=5432, cache=cache)
    for _ in range(3):
        await auth.credentials()
    stats = cache.stats()
    during = telemetry._caches.totals()
    assert during.hits - before.hits == stats["hits"] == 2
    assert during.misses - before.misses == stats["misses"]
    assert during.tokens_signed - before.tokens_signed == stats["tokens_signed"] == 1
    assert "rds" in telemetry._caches.shortest_lives()

    cache.close()
    del cache, auth
    gc.collect()

    after = telemetry._caches.totals()
    assert after == during  # the cache is gone, its counts stay: counters never go down


# -- what the dialer records -------------------------------------------------------------------


class Sdk:
    """An SDK of its own for one test: an in-memory metric reader and span exporter."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.spans = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def close(self) -> None:
        self.meters.shutdown()
        self.tracers.shutdown()


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    sdk = Sdk()
    configure_telemetry(meter_provider=sdk.meters, tracer_provider=sdk.tracers)
    yield sdk
    configure_telemetry()
    sdk.close()


def counts(sdk: Sdk, name: str, attribute: str) -> dict[str, int]:
    return {str(point.attributes[attribute]): point.value for point in sdk.points(name)}


async def test_each_try_of_a_login_is_one_attempt_one_creation_time_and_one_span(
    sdk: Sdk,
) -> None:
    auth = FakeAuth()
    server = Server(auth, Refused("PAM authentication failed"), "accept")
    rated = _Dialer(**{**vars_of(dialer(auth)), "rate": ConnectRate(rate=1000, burst=1000)})

    await rated.dial(server.attempt)

    assert counts(sdk, telemetry.CONNECT_ATTEMPTS, "outcome") == {"rejected": 1, "ok": 1}
    created = sdk.points(telemetry.CREATE_TIME)
    assert sorted(point.attributes["outcome"] for point in created) == ["ok", "rejected"]
    assert sum(point.count for point in created) == 2
    [waited] = sdk.points(telemetry.RATE_WAIT)
    assert waited.count == 2
    spans = sdk.spans.get_finished_spans()
    assert [span.name for span in spans] == ["iampool.connect", "iampool.connect"]
    assert [span.attributes["outcome"] for span in spans] == ["rejected", "ok"]
    assert spans[0].attributes["error.type"] == "rejected"
    assert not spans[0].events  # no exception recorded: its text may quote the server
    assert spans[0].status.description == "rejected"


async def test_a_rejected_login_records_no_token(sdk: Sdk) -> None:
    server = Server(FakeAuth(), Refused("no"), Refused("no again"))

    with pytest.raises(AuthTokenRejected):
        await dialer(server.auth).dial(server.attempt)

    text = sdk.reader.get_metrics_data().to_json() + "".join(
        span.to_json() for span in sdk.spans.get_finished_spans()
    )
    assert counts(sdk, telemetry.CONNECT_ATTEMPTS, "outcome") == {"rejected": 2}
    assert "X-Amz-Signature" not in text
    assert "no again" not in text  # the server's words are not telemetry


async def test_an_attempt_that_counts_its_logins_records_each_one_and_none_for_none(
    sdk: Sdk,
) -> None:
    events: list[str] = []
    rate = RecordingRate(events)
    auth = FakeAuth()
    filling = _Dialer(**{**vars_of(dialer(auth)), "rate": rate, "counts_logins": True})

    async def fill_nothing(credentials: DbCredentials) -> str:
        return "the pool had a free connection"

    async def fill_two(credentials: DbCredentials) -> str:
        for _ in range(2):  # what asyncmy's password_creator does per connection it opens
            login_started()
            login_paced(await rate.wait())
        return "two connections opened"

    await filling.dial(fill_nothing)

    assert events == []  # no connection opened: no slot of the rate cap taken
    assert sdk.points(telemetry.CONNECT_ATTEMPTS) == []
    assert sdk.spans.get_finished_spans() == ()

    await filling.dial(fill_two)

    assert events == ["rate", "rate"]
    assert counts(sdk, telemetry.CONNECT_ATTEMPTS, "outcome") == {"ok": 2}
    [waited] = sdk.points(telemetry.RATE_WAIT)
    assert waited.count == 2
    assert len(sdk.spans.get_finished_spans()) == 2


async def test_turned_off_nothing_is_recorded(sdk: Sdk) -> None:
    configure_telemetry(enabled=False)
    server = Server(FakeAuth(), "accept")

    await dialer(server.auth).dial(server.attempt)

    assert telemetry.current() is None
    assert sdk.points(telemetry.CONNECT_ATTEMPTS) == []
    assert sdk.spans.get_finished_spans() == ()


def vars_of(instance: _Dialer) -> dict[str, Any]:
    return {name: getattr(instance, name) for name in instance.__dataclass_fields__}


# -- without opentelemetry ---------------------------------------------------------------------

WITHOUT_OPENTELEMETRY = """
import asyncio, importlib.abc, json, sys

class NoOpenTelemetry(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOpenTelemetry())

import iampool
from iampool import _telemetry
from iampool.pools._dialer import Dialer
from iampool.pools._tls import Tls

async def main():
    cache = iampool.CredentialCache()
    config = iampool.AwsIamConfig.from_extra(
        {"enabled": True, "region": "us-east-1", "db_username": "app"}
    )
    auth = iampool.auth_for(config, host="db.example.com", port=5432, cache=cache)
    tries = []

    async def attempt(credentials):
        tries.append(credentials.user)
        return "connection"

    dialer = Dialer(auth=auth, classify=lambda error: None, timeout=10.0, rate=None,
                    tls=Tls("verify-full", "test CA"), endpoint="db.example.com:5432", user="app")
    connection = await dialer.dial(attempt)
    await auth.credentials()
    try:
        iampool.configure_telemetry()
        refused = None
    except iampool.MissingExtraError as error:
        refused = str(error)
    await cache.aclose()
    print(json.dumps({
        "connection": connection,
        "tries": tries,
        "stats": cache.stats(),
        "telemetry": _telemetry.current() is None,
        "refused": refused,
        "modules": sorted(name for name in sys.modules if name.startswith("opentelemetry")),
    }))

asyncio.run(main())
"""


def run_script(script: str) -> Any:
    """Run ``script`` in a fresh interpreter with static fake AWS keys (the default chain: no
    network, no AWS call) and return the JSON it printed."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE00",
        AWS_SECRET_ACCESS_KEY="not-a-real-secret-key-for-this-test-only",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_without_opentelemetry_iampool_imports_and_logs_in_recording_nothing() -> None:
    report = run_script(WITHOUT_OPENTELEMETRY)
    assert report["connection"] == "connection"
    assert report["tries"] == ["app"]
    stats = report["stats"]
    assert (stats["tokens_signed"], stats["hits"]) == (1, 1)  # signed once, then served warm
    assert report["telemetry"] is True
    assert "pip install 'iampool[otel]'" in report["refused"]
    assert report["modules"] == []


# -- the global providers ----------------------------------------------------------------------

GLOBAL_SDK_SET_LATER = """
import asyncio, json
import iampool
from iampool.pools._dialer import Dialer
from iampool.pools._tls import Tls

cache = iampool.CredentialCache()  # telemetry starts here, before any SDK is configured

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
tracers = TracerProvider()
tracers.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracers)

async def main():
    config = iampool.AwsIamConfig.from_extra(
        {"enabled": True, "region": "us-east-1", "db_username": "app"}
    )
    auth = iampool.auth_for(config, host="db.example.com", port=5432, cache=cache)

    async def attempt(credentials):
        return "connection"

    dialer = Dialer(auth=auth, classify=lambda error: None, timeout=10.0, rate=None,
                    tls=Tls("verify-full", "test CA"), endpoint="db.example.com:5432", user="app")
    await dialer.dial(attempt)
    await auth.credentials()
    await cache.aclose()

asyncio.run(main())
seen = {
    metric.name: [point.attributes.get("outcome") or point.attributes.get("result")
                  for point in metric.data.data_points]
    for resource in reader.get_metrics_data().resource_metrics
    for scope in resource.scope_metrics
    for metric in scope.metrics
}
print(json.dumps({"metrics": seen, "spans": [span.name for span in spans.get_finished_spans()]}))
"""


def test_instruments_made_before_the_global_sdk_is_set_record_into_it() -> None:
    report = run_script(GLOBAL_SDK_SET_LATER)
    assert report["metrics"][telemetry.CONNECT_ATTEMPTS] == ["ok"]
    assert sorted(report["metrics"][telemetry.LOOKUPS]) == ["hit", "miss", "stale"]
    assert report["spans"] == ["iampool.connect"]
