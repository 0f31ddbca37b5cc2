"""OpenTelemetry metrics and traces: the only module that imports ``opentelemetry``.

iampool records through ``opentelemetry-api`` (the ``otel`` extra) into whatever SDK the
application configured: the global meter and tracer providers, or the ones given to
:func:`configure_telemetry`. Without the API installed, nothing is imported (the import is
tried once, with this module) and every hook is one check of a module global. With it, the
API's modules (about 25 ms) are imported with iampool, so that the first connection does not
wait for them; the instruments are made on first use.

Where each event is recorded, once for every driver and backend:

- an AWS call: ``_aws`` (:meth:`Telemetry.aws_call`), a counter, a histogram and a span;
- a physical login: ``pools/_dialer`` (:meth:`Telemetry.logins`), a counter, a histogram and a
  span per login, and the rate cap's wait (:meth:`Login.paced`);
- a credential lookup, a token signed, a credential's remaining life: counted by the caches
  themselves (``_leases.Counters``, with no call into the SDK on the hot path) and read when the
  SDK collects, by observable instruments over every live cache (:func:`register_cache`).

Nothing secret is ever an attribute or a span name: attributes are API names, outcomes, error
codes (checked against a plain pattern), host names, ports, driver and database system names;
exceptions are never recorded on spans (their text may quote a server), only ``error.type``.
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
import time
import weakref
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._errors import MissingExtraError

if TYPE_CHECKING:
    from ._leases import Counters, Leases

try:  # the API, when installed, is imported with iampool, not on a first connection's path
    import opentelemetry.metrics
    import opentelemetry.trace  # noqa: F401
except ImportError:  # not installed (or broken): current() is None, nothing is recorded
    pass

__all__ = [
    "AWS_REQUESTS",
    "AwsCall",
    "AwsOutcome",
    "ConnectOutcome",
    "Login",
    "LoginLabels",
    "Logins",
    "Telemetry",
    "backend_of",
    "configure_telemetry",
    "current",
    "error_type",
    "register_cache",
]

ConnectOutcome = Literal["ok", "rejected", "no_tls", "timeout", "throttled", "error"]
AwsOutcome = Literal["ok", "throttled", "denied", "error"]

# Instrument names (OpenTelemetry's database client conventions where one exists).
AWS_REQUESTS = "iampool.aws.requests"
AWS_DURATION = "iampool.aws.duration"
LOOKUPS = "iampool.credentials.lookups"
TOKENS_SIGNED = "iampool.tokens.signed"
REMAINING = "iampool.credentials.remaining"
CONNECT_ATTEMPTS = "iampool.connect.attempts"
CREATE_TIME = "db.client.connection.create_time"
RATE_WAIT = "iampool.connect_rate.wait_time"
INSTRUMENTS = (
    AWS_REQUESTS,
    AWS_DURATION,
    LOOKUPS,
    TOKENS_SIGNED,
    REMAINING,
    CONNECT_ATTEMPTS,
    CREATE_TIME,
    RATE_WAIT,
)

# Seconds: the conventions' advice for connection creation, and the same scale for AWS calls.
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SCOPE = "iampool"
_ERROR_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")


def error_type(code: str | None) -> str:
    """An error code fit for ``error.type``: a plain identifier, else ``_OTHER`` (a code comes
    from a server's answer: nothing else of it is repeated)."""
    return code if code is not None and _ERROR_TYPE.fullmatch(code) else "_OTHER"


def backend_of(key: Hashable) -> str | None:
    """The backend a cache key's value belongs to: ``aws`` (the AWS credentials everything is
    signed or called with), ``rds``, ``dsql``, ``redshift``, ``secrets-manager``; None for what
    is not a credential (a discovered Redshift endpoint)."""
    if not isinstance(key, tuple) or not key:
        return None
    head = key[0]
    if head == "aws":
        return "aws"
    if head == "redshift-password":
        return "redshift"
    if head == "secret":
        return "secrets-manager"
    scope = key[-1]
    # A token's key: (host, port, (kind name, user, region, service, action, lifetime, sts key)).
    if len(key) == 3 and isinstance(scope, tuple) and len(scope) > 3:
        service = scope[3]
        if service == "rds-db":
            return "rds"
        if service == "dsql":
            return "dsql"
    return None


@dataclass(frozen=True, slots=True, eq=False)
class LoginLabels:
    """What names one plan's logins in telemetry, computed once per plan (no secret: the DSN's
    host, port and database, the driver and the database system)."""

    system: str  # db.system.name: postgresql, mysql, aws.redshift
    driver: str
    host: str | None
    port: int
    pool_name: str  # db.client.connection.pool.name: host:port/database
    _attempts: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls, *, system: str, driver: str, host: str | None, port: int, endpoint: str, database: str
    ) -> LoginLabels:
        """Labels for logins of ``driver`` to ``endpoint`` (``host:port``) and ``database``."""
        pool_name = f"{endpoint}/{database}" if database else endpoint
        return cls(system, driver, host, port, pool_name)

    def attempt(self, outcome: str) -> Mapping[str, str]:
        """The attributes of ``iampool.connect.attempts`` for ``outcome``."""
        attributes = self._attempts.get(outcome)
        if attributes is None:
            attributes = {"db.system.name": self.system, "outcome": outcome}
            self._attempts[outcome] = attributes
        return attributes

    def pool(self) -> dict[str, str]:
        """The attributes of the connection-creation and rate-cap histograms."""
        return {"db.system.name": self.system, "db.client.connection.pool.name": self.pool_name}

    def span(self) -> dict[str, str | int]:
        """A login span's attributes (the outcome is added when it ends)."""
        attributes: dict[str, str | int] = {
            "db.system.name": self.system,
            "db.client.connection.pool.name": self.pool_name,
            "iampool.driver": self.driver,
            "server.port": self.port,
        }
        if self.host is not None:
            attributes["server.address"] = self.host
        return attributes


class AwsCall:
    """One AWS API call being recorded: :meth:`end` it once with its outcome."""

    __slots__ = ("_api", "_span", "_started", "_telemetry")

    def __init__(self, telemetry: Telemetry, api: str, span: Any) -> None:
        self._telemetry = telemetry
        self._api = api
        self._span = span
        self._started = time.perf_counter()

    def end(self, outcome: AwsOutcome, code: str | None = None) -> None:
        """Record the call: ``outcome`` and, for a failure, its error code."""
        seconds = time.perf_counter() - self._started
        telemetry = self._telemetry
        attributes = {"aws.api": self._api, "outcome": outcome}
        telemetry.aws_requests.add(1, attributes)
        telemetry.aws_duration.record(seconds, attributes)
        telemetry.end_span(self._span, outcome, None if outcome == "ok" else error_type(code))


class Login:
    """One physical login being recorded: credentials, then the server's answer. The rate
    cap's wait is recorded apart (:meth:`paced`) and not counted in its creation time. Its span
    is made when it ends, with the time it started."""

    __slots__ = ("_labels", "_paced", "_started", "_started_ns", "_telemetry")

    def __init__(self, telemetry: Telemetry, labels: LoginLabels) -> None:
        self._telemetry = telemetry
        self._labels = labels
        self._paced = 0.0
        self._started_ns = time.time_ns()
        self._started = time.perf_counter()

    def paced(self, seconds: float) -> None:
        """The rate cap held this login for ``seconds`` (0 when it did not)."""
        self._paced += seconds
        self._telemetry.rate_wait.record(seconds, self._labels.pool())

    def end(self, outcome: ConnectOutcome) -> None:
        """Record the login's outcome: one attempt, one creation time, one span."""
        seconds = max(time.perf_counter() - self._started - self._paced, 0.0)
        telemetry, labels = self._telemetry, self._labels
        telemetry.connect_attempts.add(1, labels.attempt(outcome))
        telemetry.create_time.record(seconds, {**labels.pool(), "outcome": outcome})
        span = telemetry.tracer.start_span(
            "iampool.connect",
            kind=telemetry.client,
            attributes=labels.span(),
            start_time=self._started_ns,
        )
        telemetry.end_span(span, outcome, None if outcome == "ok" else outcome)


class Logins:
    """The physical logins of one try of the dialer: one, unless the driver's attempt opens
    several connections or none (asyncmy's pool fill: ``counted``), in which case the attempt
    says when each starts (:meth:`started`)."""

    __slots__ = ("_count", "_counted", "_current", "_labels", "_telemetry")

    def __init__(self, telemetry: Telemetry, labels: LoginLabels, *, counted: bool) -> None:
        self._telemetry = telemetry
        self._labels = labels
        self._counted = counted
        self._count = 0
        self._current = Login(telemetry, labels)

    def started(self) -> None:
        """The attempt starts a physical login; the one before it, if any, succeeded."""
        if self._count:
            self._current.end("ok")
            self._current = Login(self._telemetry, self._labels)
        self._count += 1

    def paced(self, seconds: float) -> None:
        """The rate cap held the current login for ``seconds``."""
        self._current.paced(seconds)

    def end(self, outcome: ConnectOutcome) -> None:
        """The try ended with ``outcome``: that of its last login (none recorded if the
        attempt said it opened no connection)."""
        if not self._counted or self._count:
            self._current.end(outcome)


class Telemetry:
    """The instruments and the tracer, made from one meter provider and one tracer provider."""

    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.metrics import Observation
        from opentelemetry.trace import SpanKind, Status, StatusCode

        # Read, not imported: a cache made while iampool is being imported must not fail.
        version = str(getattr(sys.modules.get("iampool"), "__version__", ""))
        meter = (
            metrics.get_meter(_SCOPE, version)
            if meter_provider is None
            else meter_provider.get_meter(_SCOPE, version)
        )
        self.tracer = (
            trace.get_tracer(_SCOPE, version)
            if tracer_provider is None
            else tracer_provider.get_tracer(_SCOPE, version)
        )
        self._observation = Observation
        self.client = SpanKind.CLIENT
        self._error = (Status, StatusCode.ERROR)
        self.aws_requests = meter.create_counter(
            AWS_REQUESTS, unit="{request}", description="AWS API calls iampool made, by outcome"
        )
        self.aws_duration = meter.create_histogram(
            AWS_DURATION,
            unit="s",
            description="Duration of AWS API calls (the SDK's retries included)",
            **_advice(),
        )
        self.connect_attempts = meter.create_counter(
            CONNECT_ATTEMPTS,
            unit="{attempt}",
            description="Physical logins tried, by outcome",
        )
        self.create_time = meter.create_histogram(
            CREATE_TIME,
            unit="s",
            description="The time it took to create a new connection (credentials and login, "
            "without the rate cap's wait)",
            **_advice(),
        )
        self.rate_wait = meter.create_histogram(
            RATE_WAIT,
            unit="s",
            description="Time a new connection waited for the connection rate cap",
            **_advice(),
        )
        meter.create_observable_counter(
            LOOKUPS,
            callbacks=[self._lookups],
            unit="{lookup}",
            description="Credential lookups in iampool's caches: hit, miss, or stale (served "
            "past its usable life while refreshing fails)",
        )
        meter.create_observable_counter(
            TOKENS_SIGNED,
            callbacks=[self._tokens],
            unit="{token}",
            description="Database auth tokens signed (locally, no AWS call)",
        )
        meter.create_observable_gauge(
            REMAINING,
            callbacks=[self._remaining],
            unit="s",
            description="Shortest remaining life of the credentials cached, by backend",
        )

    def aws_call(self, api: str, service: str, region: str) -> AwsCall:
        """Start recording one AWS API call (``api``: AssumeRole, GetClusterCredentials, ...)."""
        span = self.tracer.start_span(
            f"{service}/{api}",
            kind=self.client,
            attributes={
                "rpc.system": "aws-api",
                "rpc.service": service,
                "rpc.method": api,
                "aws.api": api,
                "cloud.region": region,
            },
        )
        return AwsCall(self, api, span)

    def logins(self, labels: LoginLabels, *, counted: bool = False) -> Logins:
        """Start recording one try of the dialer: its physical login (or, ``counted``, the
        logins its attempt says it starts)."""
        return Logins(self, labels, counted=counted)

    def end_span(self, span: Any, outcome: str, failure: str | None) -> None:
        """End ``span`` with its outcome; a failure sets ``error.type`` and the error status,
        described by the outcome alone (never an exception's text)."""
        span.set_attribute("outcome", outcome)
        if failure is not None:
            status, error = self._error
            span.set_attribute("error.type", failure)
            span.set_status(status(error, outcome))
        span.end()

    def _lookups(self, options: Any) -> Iterable[Any]:
        if _current is not self:  # replaced by configure_telemetry(): its provider gets nothing
            return []
        totals = _caches.totals()
        observe = self._observation
        return [
            observe(totals.hits, {"result": "hit"}),
            observe(totals.misses, {"result": "miss"}),
            observe(totals.stale, {"result": "stale"}),
        ]

    def _tokens(self, options: Any) -> Iterable[Any]:
        if _current is not self:
            return []
        return [self._observation(_caches.totals().tokens_signed)]

    def _remaining(self, options: Any) -> Iterable[Any]:
        if _current is not self:
            return []
        observe = self._observation
        return [
            observe(seconds, {"backend": backend})
            for backend, seconds in sorted(_caches.shortest_lives().items())
        ]


def _advice() -> dict[str, Any]:
    """Bucket boundaries in seconds, as advice the SDK takes unless a view says otherwise."""
    return {"explicit_bucket_boundaries_advisory": list(_BUCKETS)}


class _Caches:
    """Every live cache's counters and leases, read when the SDK collects. A cache that is
    garbage collected leaves its counts behind, so that counters never go down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, tuple[Counters, Leases]] = {}
        self._retired: dict[str, int] = {}
        self._ids = itertools.count()

    def add(self, owner: object, counters: Counters, leases: Leases) -> None:
        number = next(self._ids)
        with self._lock:
            self._live[number] = (counters, leases)
        weakref.finalize(owner, self._retire, number)

    def _retire(self, number: int) -> None:
        with self._lock:
            counters, _ = self._live.pop(number)
            for name, value in _counts(counters).items():
                self._retired[name] = self._retired.get(name, 0) + value

    def totals(self) -> _Totals:
        with self._lock:
            sums = dict(self._retired)
            for counters, _ in self._live.values():
                for name, value in _counts(counters).items():
                    sums[name] = sums.get(name, 0) + value
        return _Totals(
            hits=sums.get("hits", 0),
            misses=sums.get("misses", 0),
            stale=sums.get("stale", 0),
            tokens_signed=sums.get("tokens_signed", 0),
        )

    def shortest_lives(self) -> dict[str, float]:
        with self._lock:
            leases = [held for _, held in self._live.values()]
        shortest: dict[str, float] = {}
        for table in leases:
            for key, seconds in table.remaining():
                backend = backend_of(key)
                if backend is not None and seconds < shortest.get(backend, float("inf")):
                    shortest[backend] = seconds
        return shortest


@dataclass(frozen=True, slots=True)
class _Totals:
    hits: int
    misses: int
    stale: int
    tokens_signed: int


def _counts(counters: Counters) -> dict[str, int]:
    return {
        "hits": counters.hits,
        "misses": counters.misses,
        "stale": counters.stale,
        "tokens_signed": counters.tokens_signed,
    }


_caches = _Caches()


def register_cache(owner: object, counters: Counters, leases: Leases) -> None:
    """Count ``owner``'s (a cache's) lookups and lives in the observable instruments, for as long
    as it lives; its counts stay in the totals after that."""
    _caches.add(owner, counters, leases)
    current()  # the observable instruments exist from the first cache on


_UNLOADED: Any = object()
_current: Telemetry | None = _UNLOADED
_global: Telemetry | None = None  # made once: its observable instruments are registered once
_given: tuple[Any, Any, Telemetry] | None = None  # the last providers given, and theirs
_configuring = threading.Lock()


def current() -> Telemetry | None:
    """The instruments to record into, or None: no ``opentelemetry-api`` installed, or
    telemetry turned off with :func:`configure_telemetry`."""
    telemetry = _current
    if telemetry is _UNLOADED:
        telemetry = _load()
    return telemetry


def _load() -> Telemetry | None:
    global _current
    with _configuring:
        if _current is _UNLOADED:
            try:
                _current = _globally()
            except ImportError:  # no opentelemetry-api: nothing is recorded, nothing costs
                _current = None
        return _current


def _missing_api(error: ModuleNotFoundError) -> bool:
    return (error.name or "").partition(".")[0] == "opentelemetry"


def _globally() -> Telemetry:
    """The instruments on the global providers (the caller holds ``_configuring``)."""
    global _global
    if _global is None:
        _global = Telemetry()
    return _global


def _on(meter_provider: Any, tracer_provider: Any) -> Telemetry:
    """The instruments on these providers: made once for the same two in a row, so turning
    telemetry off and on again registers nothing twice (the caller holds ``_configuring``)."""
    global _given
    if _given is not None and _given[0] is meter_provider and _given[1] is tracer_provider:
        return _given[2]
    telemetry = Telemetry(meter_provider, tracer_provider)
    _given = (meter_provider, tracer_provider, telemetry)
    return telemetry


def configure_telemetry(
    *, meter_provider: Any = None, tracer_provider: Any = None, enabled: bool = True
) -> None:
    """Choose where iampool's metrics and spans go (by default: the global providers).

    Args:
        meter_provider: an OpenTelemetry ``MeterProvider``; None: the global one.
        tracer_provider: an OpenTelemetry ``TracerProvider``; None: the global one.
        enabled: False records nothing from now on (whatever providers are configured).

    Raises:
        MissingExtraError: ``opentelemetry-api`` is not installed (``pip install
            'iampool[otel]'``) and ``enabled`` is true.
    """
    global _current
    with _configuring:
        if not enabled:
            _current = None
            return
        try:
            if meter_provider is None and tracer_provider is None:
                _current = _globally()
            else:
                _current = _on(meter_provider, tracer_provider)
        except ModuleNotFoundError as exc:
            if not _missing_api(exc):
                raise
            raise MissingExtraError(
                f"telemetry needs opentelemetry-api, which is not installed (No module named "
                f"{exc.name!r}): pip install 'iampool[otel]'",
                name=exc.name,
            ) from None
