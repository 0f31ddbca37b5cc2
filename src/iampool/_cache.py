"""``CredentialCache``: the public face of the credential core, and ``default_cache()``.

What happens inside lives elsewhere, one concern per module:

- ``_leases``: single flight, refresh ahead and stale-but-valid, LRU-bounded (no AWS in it);
- ``_service``: the service loop every AWS call runs on, and the process lifecycle (fork, exit);
- ``_minting``: what a backend mints with, and the STS rules;
- ``_aws``: the AWS source (aiobotocore).

A cache ties one of each together; backends receive its :class:`~iampool._minting.MintContext`
from :func:`mint_context`, never the cache itself.
"""

from __future__ import annotations

import threading
import time
from typing import NoReturn, TypedDict, get_args

from ._aws import AioAwsSource, AwsSource, RetryMode
from ._credentials import refuse_pickling
from ._errors import ConfigError, ConfigProblem, shown
from ._leases import Clock, Counters, Leases
from ._minting import MintContext
from ._service import ServiceLoop
from ._telemetry import register_cache

__all__ = ["CacheStats", "CredentialCache", "default_cache", "mint_context"]


class CacheStats(TypedDict):
    """Counters since the cache was created (approximate under heavy multi-threading)."""

    sts_calls: int
    hits: int
    misses: int
    stale: int
    refreshes: int
    refresh_failures: int
    errors: int
    evictions: int
    tokens_signed: int
    api_calls: int
    size: int


class CredentialCache:
    """Caches AWS credentials and what they mint, shared by every pool that uses it.

    Args:
        ttl: seconds STS credentials are reused (never past their own expiration minus
            ``expiry_margin``); while refreshing them fails, the cached ones are served up to
            that expiry instead.
        refresh_margin: how long before an entry stops being usable a background refresh starts;
            capped at half the entry's life so short TTLs still get a fresh period.
        maxsize: entries kept (about 500 bytes per RDS endpoint); beyond it the least
            recently used are evicted.
        expiry_margin: safety margin before any credential's real expiry (clock skew, transit).
        token_reuse: seconds an RDS auth token is reused (tokens live 900 s).
        clock: wall clock in epoch seconds; injectable for tests.
        connect_timeout, read_timeout, max_attempts, retry_mode: botocore client settings.
        deadline: overall seconds one fetch may take, retries included.
        source: what talks to AWS, for tests (default: aiobotocore, built per process on first
            use and closed with the cache).

    Raises:
        ConfigError: a setting out of range (each one named).
    """

    def __init__(
        self,
        ttl: float = 600.0,
        refresh_margin: float = 60.0,
        maxsize: int = 131_072,
        *,
        expiry_margin: float = 60.0,
        token_reuse: float = 600.0,
        clock: Clock = time.time,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        retry_mode: RetryMode = "standard",
        deadline: float = 15.0,
        source: AwsSource | None = None,
    ) -> None:
        _check_settings(
            positive={
                "ttl": ttl,
                "token_reuse": token_reuse,
                "deadline": deadline,
                "connect_timeout": connect_timeout,
                "read_timeout": read_timeout,
            },
            non_negative={"refresh_margin": refresh_margin, "expiry_margin": expiry_margin},
            counts={"maxsize": maxsize, "max_attempts": max_attempts},
            retry_mode=retry_mode,
        )
        self._ttl = ttl
        self._maxsize = maxsize
        if source is None:

            def make_source() -> AwsSource:
                return AioAwsSource(
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    max_attempts=max_attempts,
                    retry_mode=retry_mode,
                )

        else:

            def make_source() -> AwsSource:
                return source

        self._service = ServiceLoop("iampool-credentials", make_source)
        self._counters = Counters()
        self._leases = Leases(
            service=self._service,
            counters=self._counters,
            clock=clock,
            refresh_margin=refresh_margin,
            maxsize=maxsize,
            deadline=deadline,
        )
        self._context = MintContext(
            leases=self._leases,
            service=self._service,
            counters=self._counters,
            clock=clock,
            ttl=ttl,
            token_reuse=token_reuse,
            expiry_margin=expiry_margin,
        )
        register_cache(self, self._counters, self._leases)  # read by observable instruments

    def __reduce__(self) -> NoReturn:
        refuse_pickling(self)

    def __repr__(self) -> str:
        return f"CredentialCache(ttl={self._ttl:g}, size={len(self._leases)}/{self._maxsize})"

    def stats(self) -> CacheStats:
        """Counters: sts_calls, hits, misses, stale (served past their usable life while
        refreshing failed; not counted as hits), refreshes, refresh_failures, errors,
        evictions, tokens_signed, api_calls (Redshift APIs) and the current size."""
        counters = self._counters
        return CacheStats(
            sts_calls=counters.sts_calls,
            hits=counters.hits,
            misses=counters.misses,
            stale=counters.stale,
            refreshes=counters.refreshes,
            refresh_failures=counters.refresh_failures,
            errors=counters.errors,
            evictions=counters.evictions,
            tokens_signed=counters.tokens_signed,
            api_calls=counters.api_calls,
            size=len(self._leases),
        )

    def clear(self) -> None:
        """Drop every cached value (in-flight fetches complete for their waiters)."""
        self._leases.clear()

    def close(self) -> None:
        """Stop background work, close AWS clients and drop every entry. Safe to call twice;
        a closed cache starts afresh if used again."""
        self._service.close()
        self._leases.clear()

    async def aclose(self) -> None:
        """``close()`` without blocking the caller's event loop."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.close)


def mint_context(cache: CredentialCache) -> MintContext:
    """What backends mint with (``auth_for`` passes it on; tests may call it too)."""
    return cache._context


_MAX_SECONDS = 31_536_000  # a year: beyond it a setting is a mistake, and float math overflows
_MAX_COUNTS = {"max_attempts": 100}  # botocore's attempts per call, deadline permitting


def _check_settings(
    *,
    positive: dict[str, float],
    non_negative: dict[str, float],
    counts: dict[str, int],
    retry_mode: str,
) -> None:
    problems = []
    for name, value in {**positive, **non_negative}.items():
        low = "above 0" if name in positive else "0 or more"
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 <= value <= _MAX_SECONDS  # NaN fails every comparison
            or (value == 0 and name in positive)
        ):
            problems.append(
                ConfigProblem(
                    name,
                    f"must be a number of seconds {low}, at most {_MAX_SECONDS:,} (a year), "
                    f"got {shown(value, 40)}",
                )
            )
    for name, count in counts.items():
        high = _MAX_COUNTS.get(name)
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or count < 1
            or (high is not None and count > high)
        ):
            limit = f" and at most {high}" if high is not None else ""
            problems.append(
                ConfigProblem(
                    name, f"must be a whole number of at least 1{limit}, got {shown(count, 40)}"
                )
            )
    if retry_mode not in get_args(RetryMode):
        modes = ", ".join(get_args(RetryMode))
        problems.append(ConfigProblem("retry_mode", f"must be one of {modes}"))
    if problems:
        raise ConfigError(problems, context="CredentialCache")


_default: CredentialCache | None = None
_default_lock = threading.Lock()


def default_cache() -> CredentialCache:
    """The process-wide cache used when no ``cache=`` is passed; closed at interpreter exit."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = CredentialCache()
    return _default
