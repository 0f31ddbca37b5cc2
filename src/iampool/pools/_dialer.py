"""The one login pipeline every driver's new connection goes through.

::

    credentials (cached) -> rate cap -> ONE attempt, bounded by connect_timeout -> classify
        ok        -> the connection
        rejected  -> invalidate the credentials, retry once with fresh ones, then AuthTokenRejected;
                     a password that may rotate (a Secrets Manager secret, ``RotatingAuth``):
                     drop it once per herd and read it again, then keep trying (at once, then
                     after jittered pauses) until ``rotation_window`` has passed since the
                     first refusal, each try still bounded by connect_timeout
        no TLS    -> TlsNotOfferedError (nothing was sent)
        timeout   -> LoginTimeoutError (the attempt is cancelled; its connection closed)
        throttled -> wait (jittered exponential backoff) and try again, the same credentials
                     (they were fine: no invalidation), until connect_timeout has passed since
                     the first try; then ConnectThrottled
        other     -> the driver's error as is

Whatever leaves :meth:`Dialer.dial` is :func:`~iampool._errors.detached` from the attempt's
frames (their locals hold the credential), and a server's text reaches messages and logs on one
line, control characters escaped, at most 1,000 characters. A driver adapter supplies the
attempt and how to recognise its refusals (:class:`Refusal`); a concern every login shares
(metrics, a retry policy, throttling, rotation) belongs here, not in an adapter.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import anyio

from .. import _telemetry
from .._credentials import DbAuth, DbCredentials, RotatingAuth
from .._errors import (
    AuthTokenRejected,
    ConnectThrottled,
    LoginTimeoutError,
    TlsNotOfferedError,
    detached,
    one_line,
)
from .._telemetry import ConnectOutcome, LoginLabels, Logins
from ._tls import Tls, warn_unverified

__all__ = [
    "PG_AUTH_SQLSTATES",
    "RDS_ADVICE",
    "REDSHIFT_ADVICE",
    "ROTATION_ADVICE",
    "THROTTLED_TEXTS",
    "Backoff",
    "ConnectRate",
    "Dialer",
    "Refusal",
    "connect_outcome",
    "connect_rate_for",
    "login_paced",
    "login_started",
    "pg_refusal",
    "server_text",
    "throttled",
    "tls_not_offered",
]

log = logging.getLogger("iampool")
C = TypeVar("C")

# invalid_authorization_specification, invalid_password: how PostgreSQL (and Redshift) refuse a
# login; a token the server refused is one of these.
PG_AUTH_SQLSTATES = frozenset({"28000", "28P01"})

RDS_ADVICE = (
    "Check that the user is granted IAM login (PostgreSQL: GRANT rds_iam; MySQL: IDENTIFIED "
    "WITH AWSAuthenticationPlugin), that the IAM policy allows rds-db:connect for it, and that "
    "this machine's clock is in sync"
)
REDSHIFT_ADVICE = (
    "Check that the temporary user may log in to this database (db_groups, auto_create) and "
    "that the IAM policy allows the credentials call for this user and database"
)

ROTATION_ADVICE = (
    "Check that the secret holds the database's current password for its user, and that a "
    "rotation in progress completes within rotation_window"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """How a server said no to a login: ``rejected`` (the credentials) or ``throttled`` (too
    many logins at once; the credentials were fine), with the server's own words."""

    outcome: Literal["rejected", "throttled"]
    message: str


Classify = Callable[[BaseException], "Refusal | None"]

# Too many logins at once: Aurora DSQL's connection-rate limit (SQLSTATE 53400,
# configuration_limit_exceeded) and RDS's IAM authentication throttle ("too many competing
# requests"). The credentials were fine: not a reason to mint new ones.
_THROTTLED_SQLSTATES = frozenset({"53400"})
# Their words, for drivers that report a login's refusal as text only (libpq, MySQL's).
THROTTLED_TEXTS = ("too many competing requests", "connection rate exceeded")


def throttled(message: str) -> bool:
    """Whether a server's refusal reads as one of the throttles above."""
    lowered = message.lower()
    return any(text in lowered for text in THROTTLED_TEXTS)


def pg_refusal(sqlstate: object, message: str) -> Refusal | None:
    """A PostgreSQL-protocol server's refusal of a login (asyncpg, psycopg, Redshift), from
    its SQLSTATE (None when the driver reports text only) and message."""
    if sqlstate in _THROTTLED_SQLSTATES or throttled(message):
        return Refusal("throttled", message)
    if sqlstate in PG_AUTH_SQLSTATES:
        return Refusal("rejected", message)
    return None


def connect_outcome(error: BaseException | None, refusal: Refusal | None) -> ConnectOutcome:
    """A login try's outcome for telemetry: ``ok`` (no error), the server's ``rejected`` or
    ``throttled`` (its refusal, as the adapter read it), ``no_tls``, ``timeout`` (the driver's
    or iampool's bound), else ``error``."""
    if error is None:
        return "ok"
    if refusal is not None:
        return refusal.outcome
    if isinstance(error, TlsNotOfferedError):
        return "no_tls"
    if isinstance(error, (TimeoutError, asyncio.TimeoutError, LoginTimeoutError)):
        return "timeout"
    return "error"


# The logins of the dialer's try under way in this task, for an attempt that opens several
# connections (or none): asyncmy's pool fill asks for a password once per connection it opens.
_logins: contextvars.ContextVar[Logins | None] = contextvars.ContextVar(
    "iampool_logins", default=None
)


def login_started() -> None:
    """Called by an attempt of a ``counts_logins`` dialer as it starts each physical login, so
    that telemetry records one attempt per login; nothing outside a dialer's try."""
    logins = _logins.get()
    if logins is not None:
        logins.started()


def login_paced(seconds: float) -> None:
    """The rate cap held the login just started (by :func:`login_started`) for ``seconds``."""
    logins = _logins.get()
    if logins is not None:
        logins.paced(seconds)


class ConnectRate:
    """A token bucket for new connections to one endpoint (GCRA: one timestamp, no task).

    RDS advises staying under roughly 200 new IAM-authenticated connections per second per
    instance; ``rate`` is connections per second and ``burst`` how many may start at once.
    Thread-safe, loop-agnostic: a caller reserves its slot under a lock, then sleeps outside it.
    """

    def __init__(
        self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # NaN passes "rate <= 0" and would make every delay 0: no cap at all, silently.
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"connect_rate must be a positive number, got {rate}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(rate))
        self._interval = 1.0 / rate
        self._clock = clock
        self._lock = threading.Lock()
        self._arrival = 0.0  # theoretical arrival time of the next connection

    def reserve(self) -> float:
        """Claim the next slot; returns how many seconds to wait for it."""
        with self._lock:
            now = self._clock()
            arrival = max(self._arrival, now)
            self._arrival = arrival + self._interval
            return max(0.0, arrival - (self.burst - 1) * self._interval - now)

    async def wait(self) -> float:
        """Wait for this connection's turn; returns how long that was, in seconds."""
        delay = self.reserve()
        if delay > 0:
            await anyio.sleep(delay)
        return delay


# One bucket per (endpoint, rate): whoever asks for the same rate to the same endpoint shares
# its cap; another rate gets a bucket of its own, so no request changes another one's limit.
# Bounded, least recently used out: a bucket evicted once idle is as good as a new one, and a
# process that talks to more endpoints than this at once keeps each plan's own bucket.
_MAX_RATES = 4096
_rates: OrderedDict[tuple[str, float], ConnectRate] = OrderedDict()
_rates_lock = threading.Lock()


def connect_rate_for(endpoint: str, rate: float | None) -> ConnectRate | None:
    """The process-wide bucket capping new connections to ``endpoint`` at ``rate`` per second
    (``rate`` already checked by the plan); ``None`` without a rate."""
    if rate is None:
        return None
    key = (endpoint, rate)
    with _rates_lock:
        bucket = _rates.get(key)
        if bucket is None:
            bucket = _rates[key] = ConnectRate(rate)
            if len(_rates) > _MAX_RATES:
                _rates.popitem(last=False)
        else:
            _rates.move_to_end(key)
        return bucket


_MAX_ECHO = 1000  # characters of a server's text kept in a message


def server_text(text: str, limit: int = _MAX_ECHO) -> str:
    """A server's text for a message or a log line: one line (control characters escaped, so it
    cannot forge a second log line or a terminal escape), at most ``limit`` characters."""
    return one_line(text, limit)


def tls_not_offered(endpoint: str) -> TlsNotOfferedError:
    """The error for a server that did not offer TLS (no credential was sent to it)."""
    return TlsNotOfferedError(
        f"{endpoint} did not offer TLS; iampool refused to send it IAM credentials (RDS and "
        "Redshift always offer TLS: check the endpoint and any proxy in between)"
    )


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before the next try of a throttled login: exponential from ``base``
    seconds, at most ``cap``, with full jitter (a uniform draw from zero to that), so a fleet
    refused in the same second does not come back in the same second.

    ``uniform`` is ``random.uniform`` (tests pass a fixed one).
    """

    base: float = 0.05
    cap: float = 2.0
    uniform: Callable[[float, float], float] = random.uniform

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        return self.uniform(0.0, min(self.cap, self.base * 2.0 ** min(retry - 1, 32)))


# What names the logins of a dialer built without labels (tests).
_UNNAMED = LoginLabels.of(
    system="postgresql", driver="", host=None, port=0, endpoint="", database=""
)


@dataclass(frozen=True, slots=True, eq=False)
class Dialer:
    """A plan's login pipeline: :meth:`dial` runs one connection's login through it.

    ``classify`` is the driver adapter's: it recognises the server's refusals in the driver's
    errors. ``user`` and ``endpoint`` name the login in messages; ``advice`` ends a rejection;
    ``backoff`` paces the tries of a throttled login; ``labels`` name its logins in telemetry
    (one count, creation time and span per physical login: one per try, or, with
    ``counts_logins``, each one the attempt announces with :func:`login_started`).
    """

    auth: DbAuth
    classify: Classify
    timeout: float
    rate: ConnectRate | None
    tls: Tls
    endpoint: str
    user: str
    advice: str = RDS_ADVICE
    backoff: Backoff = Backoff()
    labels: LoginLabels = _UNNAMED
    # An attempt opens 0..n connections, says when each starts (login_started) and waits for
    # the rate cap itself (login_paced).
    counts_logins: bool = False
    rotation_backoff: Backoff = Backoff(base=0.25, cap=2.0)

    async def dial(self, attempt: Callable[[DbCredentials], Awaitable[C]]) -> C:
        """Log in with ``attempt(credentials)``; retried once, with freshly minted credentials,
        when the server rejects them, and with the same ones after a jittered, growing pause
        when it is throttling logins, for as long as ``timeout`` allows since the first try.
        ``timeout`` bounds each try too: waiting for the credentials and the attempt together
        (the rate cap's wait, iampool's own pacing, is not counted).

        A password that may rotate (``RotatingAuth``, e.g. a Secrets Manager secret) is
        retried longer when refused: the refused value is dropped once for every login that
        used it and read again, and the login tries again at once, then after jittered pauses,
        until the authenticator's ``rotation_window`` has passed since its first refusal
        (each try bounded by ``timeout`` as always): a rotation that changed the database's
        password before the secret costs waiting, not failed connects.

        Raises:
            AuthTokenRejected: the server refused the credentials twice (a rotating password:
                still after ``rotation_window``).
            ConnectThrottled: the server was still throttling logins when ``timeout`` ran out.
            LoginTimeoutError: a try took longer than ``timeout``.
            TlsNotOfferedError: the server offered no TLS; nothing was sent.
        """
        rejected = throttled = 0
        budget = anyio.current_time() + self.timeout  # for the tries of a throttled login
        telemetry = _telemetry.current()  # None: no opentelemetry-api, or turned off
        auth = self.auth
        rotating = auth if isinstance(auth, RotatingAuth) and auth.rotation_window > 0 else None
        rotation_ends: float | None = None  # the first refusal + rotation_window
        while True:
            # One try: recorded (telemetry) with its outcome whichever way it ends.
            tried = (
                None
                if telemetry is None
                else telemetry.logins(self.labels, counted=self.counts_logins)
            )
            outcome: ConnectOutcome = "error"
            pause = 0.0  # before the next try
            try:
                deadline = anyio.current_time() + self.timeout
                with anyio.CancelScope(deadline=deadline) as waiting:
                    credentials = await auth.credentials()
                if waiting.cancelled_caught:
                    outcome = "timeout"
                    raise self._timed_out("waiting for its IAM credentials")
                if self.rate is not None and not self.counts_logins:  # else: per login started
                    paced = await self.rate.wait()
                    if tried is not None:
                        tried.paced(paced)
                    deadline += paced
                    budget += paced
                warn_unverified(self.tls, self.endpoint)
                recording = _logins.set(tried)  # for an attempt that opens several (asyncmy)
                try:
                    with anyio.CancelScope(deadline=deadline) as logging_in:
                        connection = await attempt(credentials)
                except BaseException as exc:  # a cancellation's frames hold the credential too
                    try:
                        timed_out = isinstance(exc, (TimeoutError, asyncio.TimeoutError))
                        refusal = (
                            self.classify(exc)
                            if isinstance(exc, Exception) and not timed_out
                            else None
                        )
                        if rotating is not None and refusal and refusal.outcome == "rejected":
                            rotating.refused(credentials)
                    finally:
                        del credentials
                    detached(exc)
                    outcome = connect_outcome(exc, None)
                    if timed_out:  # the driver's own
                        raise self._timed_out("the server did not complete the login") from None
                    if refusal is None:
                        raise exc.with_traceback(None)  # noqa: B904 - the error, minus frames
                    outcome = refusal.outcome
                    said = server_text(refusal.message)
                    if refusal.outcome == "throttled":
                        throttled += 1
                        pause = self.backoff.delay(throttled)
                        if anyio.current_time() + pause >= budget:
                            raise self._throttled(throttled, said) from exc
                        log.info(
                            "%s is throttling logins (%s); trying again in %.3f s",
                            self.endpoint,
                            said,
                            pause,
                        )
                    elif rotating is not None:
                        rejected += 1
                        now = anyio.current_time()
                        if rotation_ends is None:
                            rotation_ends = now + rotating.rotation_window
                            log.warning(
                                "%s refused the password of %s (%s); reading it again and "
                                "trying for up to %g s (rotation_window)",
                                self.endpoint,
                                _secret_name(rotating),
                                said,
                                rotating.rotation_window,
                            )
                        pause = 0.0 if rejected == 1 else self.rotation_backoff.delay(rejected - 1)
                        if now + pause >= rotation_ends:
                            raise self._password_refused(rotating, rejected, said) from exc
                    else:
                        auth.invalidate()
                        rejected += 1
                        if rejected == 2:
                            raise AuthTokenRejected(
                                f"{self.endpoint} refused {_what(auth, self.user)} twice "
                                f"(the second time freshly minted): {said}. {self.advice}.",
                                server_message=said,
                                user=self.user,
                                endpoint=self.endpoint,
                            ) from exc
                        log.warning(
                            "%s refused %s (%s); retrying once with fresh ones",
                            self.endpoint,
                            _what(auth, self.user),
                            said,
                        )
                        pause = 0.0
                else:
                    if logging_in.cancelled_caught:
                        outcome = "timeout"
                        raise self._timed_out("the server did not complete the login")
                    outcome = "ok"
                    return connection
                finally:
                    _logins.reset(recording)
            finally:
                if tried is not None:
                    tried.end(outcome)
            if pause:
                await anyio.sleep(pause)

    def _password_refused(self, auth: RotatingAuth, tries: int, said: str) -> AuthTokenRejected:
        return AuthTokenRejected(
            f"{self.endpoint} refused the password of {_secret_name(auth)} {tries} times within "
            f"{auth.rotation_window:g} s (rotation_window), the secret read again in between: "
            f"{said}. {ROTATION_ADVICE}.",
            server_message=said,
            user=self.user,
            endpoint=self.endpoint,
        )

    def _throttled(self, tries: int, said: str) -> ConnectThrottled:
        return ConnectThrottled(
            f"{self.endpoint} was still throttling logins after {tries} "
            f"{'try' if tries == 1 else 'tries'} within {self.timeout:g} s (connect_timeout): "
            f"{said}. The credentials were fine; open fewer connections at once (connect_rate, "
            "smaller pools) or raise connect_timeout",
            server_message=said,
            endpoint=self.endpoint,
            tries=tries,
        )

    def _timed_out(self, what: str) -> LoginTimeoutError:
        return LoginTimeoutError(
            f"no login to {self.endpoint} within {self.timeout:g} s (connect_timeout): {what}; "
            "raise connect_timeout if it is just slow",
            endpoint=self.endpoint,
            timeout=self.timeout,
        )


def _secret_name(auth: DbAuth) -> str:
    """How a rotating password is named in messages: its secret's id, never its value."""
    secret_id = getattr(auth.config, "secret_id", None)
    return f"secret {secret_id}" if secret_id else "the authenticator"


def _what(auth: DbAuth, user: str) -> str:
    """What a server refused, for messages: a secret's password, or IAM credentials."""
    if getattr(auth.config, "secret_id", None):
        return f"the password of {_secret_name(auth)}"
    return f"IAM credentials for user {user!r}"
