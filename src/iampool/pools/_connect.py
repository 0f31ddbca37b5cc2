"""What every IAM connect shares: the per-endpoint rate cap and the one retry on rejection."""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio

from .._credentials import DbAuth
from .._errors import (
    AuthTokenRejected,
    ConfigError,
    ConfigProblem,
    TlsNotOfferedError,
    detached,
    shown,
)
from ._dsn import Target, check_tls_option

__all__ = [
    "PG_AUTH_SQLSTATES",
    "RDS_ADVICE",
    "REDSHIFT_ADVICE",
    "ConnectRate",
    "ca_file_problem",
    "check_ca_file",
    "check_tls_settings",
    "connect_rate_for",
    "connect_with_retry",
    "detached",
    "refuse_owned_kwargs",
    "tls_not_offered",
]

log = logging.getLogger("iampool")
T = TypeVar("T")

# invalid_authorization_specification, invalid_password: how PostgreSQL (and Redshift) refuse a
# login; a token the server refused is one of these.
PG_AUTH_SQLSTATES = frozenset({"28000", "28P01"})


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

    async def wait(self) -> None:
        """Wait for this connection's turn."""
        delay = self.reserve()
        if delay > 0:
            await anyio.sleep(delay)


# One bucket per (endpoint, rate): whoever asks for the same rate to the same endpoint shares
# its cap; another rate gets a bucket of its own, so no request changes another one's limit.
_rates: dict[tuple[str, float], ConnectRate] = {}
_rates_lock = threading.Lock()


def connect_rate_for(endpoint: str, rate: float | None) -> ConnectRate | None:
    """The process-wide bucket capping new connections to ``endpoint`` at ``rate`` per second.

    Pools, ``connect()`` calls and an ``async_creator``'s connections that ask for the same rate
    to the same endpoint share one bucket; a different rate has its own, so a pool that asks for
    5 leaves another pool's 100 alone.
    """
    if rate is None:
        return None
    key = (endpoint, rate)
    with _rates_lock:
        bucket = _rates.get(key)
        if bucket is None:
            bucket = _rates[key] = ConnectRate(rate)
        return bucket


RDS_ADVICE = (
    "Check that the user is granted IAM login (PostgreSQL: GRANT rds_iam; MySQL: IDENTIFIED "
    "WITH AWSAuthenticationPlugin), that the IAM policy allows rds-db:connect for it, and that "
    "this machine's clock is in sync"
)
REDSHIFT_ADVICE = (
    "Check that the temporary user may log in to this database (db_groups, auto_create) and "
    "that the IAM policy allows the credentials call for this user and database"
)


async def connect_with_retry(
    auth: DbAuth,
    attempt: Callable[[], Awaitable[T]],
    rejection: Callable[[BaseException], str | None],
    *,
    user: str,
    endpoint: str,
    rate: ConnectRate | None = None,
    advice: str = RDS_ADVICE,
) -> T:
    """Connect; if the server refuses the IAM credentials, retry ONCE with freshly minted ones.

    ``attempt`` connects using ``auth.credentials()``; ``rejection`` returns the server's message
    when an error is an authentication refusal, else None. A second refusal raises
    ``AuthTokenRejected`` carrying the server's message (never the credential).

    This is the one boundary every connect error crosses: whatever leaves it is
    :func:`detached` from the attempt's frames, which hold the credential in their locals.
    """
    for tries in (1, 2):
        if rate is not None:
            await rate.wait()
        try:
            return await attempt()
        except BaseException as exc:  # a cancellation's frames hold the credential too
            detached(exc)
            message = rejection(exc) if isinstance(exc, Exception) else None
            if message is None:
                raise exc.with_traceback(None)  # noqa: B904 - the error itself, minus frames
            auth.invalidate()
            if tries == 2:
                raise AuthTokenRejected(
                    f"{endpoint} refused IAM credentials for user {user!r} twice (the second time "
                    f"freshly minted): {bounded(message)}. {advice}.",
                    server_message=message,
                    user=user,
                    endpoint=endpoint,
                ) from exc
        log.warning(
            "%s refused IAM credentials for user %r (%s); retrying once with fresh ones",
            endpoint,
            user,
            bounded(message),
        )
    raise AssertionError("unreachable")  # pragma: no cover


_MAX_ECHO = 1000  # characters of a server's text kept in a message


def bounded(text: str, limit: int = _MAX_ECHO) -> str:
    """A server's text for a message: at most ``limit`` characters, cut with "…"."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def tls_not_offered(endpoint: str) -> TlsNotOfferedError:
    """The error for a server that did not offer TLS (no credential was sent to it)."""
    return TlsNotOfferedError(
        f"{endpoint} did not offer TLS; iampool refused to send it IAM credentials (RDS and "
        "Redshift always offer TLS: check the endpoint and any proxy in between)"
    )


def refuse_owned_kwargs(driver_kwargs: Mapping[str, Any], owned: tuple[str, ...]) -> None:
    """Driver keyword arguments that iampool sets itself (host, user, password, ...) are errors:
    an override would connect elsewhere than the token was signed for, or drop IAM."""
    clashes = sorted(set(driver_kwargs) & set(owned))
    if clashes:
        raise ConfigError(
            [ConfigProblem(name, "is set by iampool from the DSN and aws_iam") for name in clashes],
            context="driver keyword",
        )


def check_ca_file(path: str) -> None:
    """A DSN's ``sslrootcert`` must be a readable file of PEM certificates: found now, as a
    ``ConfigError``, rather than as an ``OSError`` once the AWS calls are made.

    Raises:
        ConfigError: the file is missing, unreadable, or holds no PEM certificate.
    """
    problem = ca_file_problem(path)
    if problem is not None:
        raise ConfigError(ConfigProblem("sslrootcert", problem), context="DSN")


def ca_file_problem(path: str) -> str | None:
    """Why ``path`` is not a readable file of PEM certificates, or ``None``."""
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        return f"no file {shown(path, 200)} (a CA bundle in PEM, e.g. the RDS global-bundle.pem)"
    except ssl.SSLError:
        return f"{shown(path, 200)} holds no PEM certificate"
    except (OSError, ValueError) as exc:  # a directory, no permission, a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a file name"
        return f"cannot read {shown(path, 200)}: {reason}"
    return None


def check_tls_settings(target: Target, ssl_option: Any) -> None:
    """The TLS a connection will use, checked without building it (a CA bundle takes tens of
    milliseconds to load): a readable ``sslrootcert`` and an ``ssl=`` that keeps TLS on.

    Raises:
        ConfigError: an unusable CA file, or an ``ssl=`` argument iampool refuses.
    """
    if target.sslrootcert is not None:
        check_ca_file(target.sslrootcert)
    check_tls_option(target, ssl_option)
