"""``CredentialCache``: single-flight, refresh-ahead, bounded caching of everything AWS mints.

One mechanism serves STS credentials, RDS auth tokens and Redshift passwords. Each key has an
entry that moves through a small state machine, every transition in :meth:`CredentialCache.get`
and :meth:`CredentialCache._fly`::

    empty --miss--> fetching --ok--> fresh --refresh_at--> refreshing (served as is)
                        |                                        |  ok: fresh again
                        +--error: every waiter fails, entry      |  error: stale-but-valid,
                          dropped (failures are not cached)      |  retried after a backoff
                                                    expired <----+--usable_until: callers wait

A stale-but-valid entry (its last refresh failed) is served past ``usable_until`` (the ttl) up to
``valid_until`` (the credentials' own expiry minus the margin): while AWS fails, callers keep
what still works instead of an error. A caller that waited on a refresh that failed gets it too.

Fetches run on the cache's service loop (``_service``), so a cancelled caller never cancels a
fetch that others wait for, and a refresh never waits on the caller's loop. A process that forks
drops, in the child, the fetches in flight at that moment (their thread stayed in the parent).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timezone
from typing import Any, Generic, Protocol, TypedDict, TypeVar

from ._aws import AwsApi, AwsCredentials, RetryMode, default_session_name
from ._config import AwsIamConfig
from ._errors import CredentialError
from ._service import ServiceLoop, wait

__all__ = ["CacheStats", "CredentialCache", "CredentialSource", "Lease", "default_cache"]

log = logging.getLogger("iampool")

V = TypeVar("V")
Clock = Callable[[], float]

# botocore hands out default-chain snapshots with at least its mandatory refresh window left.
_DEFAULT_CHAIN_VALIDITY = 600.0
_MAX_BACKOFF = 30.0


class CacheStats(TypedDict):
    """Counters since the cache was created (approximate under heavy multi-threading)."""

    sts_calls: int
    hits: int
    misses: int
    refreshes: int
    refresh_failures: int
    errors: int
    evictions: int
    tokens_signed: int
    api_calls: int
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class Lease(Generic[V]):
    """A minted value and the wall-clock times (epoch seconds) it may be served until.

    ``usable_until`` ends normal reuse (a ttl); ``valid_until``, when later, is how long the value
    still works and may be served while minting its successor fails (default: ``usable_until``).
    """

    value: V
    usable_until: float
    valid_until: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot(Generic[V]):
    value: V
    refresh_at: float
    usable_until: float
    valid_until: float


class _Entry:
    __slots__ = ("failures", "flight", "retry_at", "snapshot")

    def __init__(self) -> None:
        self.snapshot: _Snapshot[Any] | None = None
        self.flight: Any = None  # concurrent.futures.Future while a fetch runs
        self.failures = 0
        self.retry_at = 0.0


class CredentialSource(Protocol):
    """Where base AWS credentials come from; ``AwsApi`` in production, a fake in unit tests."""

    async def assume_role(
        self,
        *,
        role_arn: str,
        region: str,
        session_name: str,
        duration: int,
        external_id: str | None,
    ) -> AwsCredentials: ...

    async def default_credentials(self, region: str) -> AwsCredentials: ...

    async def aclose(self) -> None: ...


class CredentialCache:
    """Caches AWS credentials and what they mint, shared by every pool that uses it.

    Args:
        ttl: seconds STS credentials are reused (never past their own expiration minus
            ``expiry_margin``); while refreshing them fails, the cached ones are served up to
            that expiry instead.
        refresh_margin: how long before an entry stops being usable a background refresh starts;
            capped at half the entry's life so short TTLs still get a fresh period.
        maxsize: entries kept; the least recently used are evicted beyond it.
        expiry_margin: safety margin before any credential's real expiry (clock skew, transit).
        token_reuse: seconds an RDS auth token is reused (tokens live 900 s).
        clock: wall clock in epoch seconds; injectable for tests.
        connect_timeout, read_timeout, max_attempts, retry_mode: botocore client settings.
        deadline: overall seconds one fetch may take, retries included.
        source: where AWS credentials come from (default: aiobotocore, built on first use).
    """

    def __init__(
        self,
        ttl: float = 600.0,
        refresh_margin: float = 60.0,
        maxsize: int = 1024,
        *,
        expiry_margin: float = 60.0,
        token_reuse: float = 600.0,
        clock: Clock = time.time,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        retry_mode: RetryMode = "standard",
        deadline: float = 15.0,
        source: CredentialSource | None = None,
    ) -> None:
        for name, value in (("ttl", ttl), ("token_reuse", token_reuse), ("deadline", deadline)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.ttl = ttl
        self.refresh_margin = refresh_margin
        self.maxsize = maxsize
        self.expiry_margin = expiry_margin
        self.token_reuse = token_reuse
        self.clock = clock
        self.deadline = deadline
        self._api_settings: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_attempts": max_attempts,
            "retry_mode": retry_mode,
        }
        self._source = source
        self._owns_source = source is None
        self._service = ServiceLoop("iampool-credentials")
        self._service.on_shutdown(self._close_source)
        # A cache dropped without close() still shuts its loop and AWS clients down at exit.
        weakref.finalize(self, self._service.close)
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._counts = dict.fromkeys(
            ("sts_calls", "hits", "misses", "refreshes", "refresh_failures", "errors",
             "evictions", "tokens_signed", "api_calls"),
            0,
        )  # fmt: skip
        _caches.add(self)  # last: a fork right after this finds a complete cache

    def __repr__(self) -> str:
        return f"CredentialCache(ttl={self.ttl}, size={len(self._entries)}/{self.maxsize})"

    # -- the generic mechanism -------------------------------------------------------------

    async def get(self, key: Hashable, mint: Callable[[], Awaitable[Lease[V]]]) -> V:
        """The cached value for ``key``, or the result of ONE shared ``mint()`` call.

        ``mint`` runs on the service loop and returns a :class:`Lease`. For ``DbAuth``
        implementations; keys must include every field that changes what ``mint`` returns.
        """
        entry = self._entries.get(key)
        if entry is not None:
            snapshot = entry.snapshot
            if snapshot is not None and self.clock() < snapshot.refresh_at:
                self._counts["hits"] += 1
                try:  # noqa: SIM105 - the hot path; contextlib.suppress costs more than the lookup
                    self._entries.move_to_end(key)
                except KeyError:  # evicted by another thread meanwhile; still a valid value
                    pass
                value: V = snapshot.value
                return value
        return await self._get_slow(key, mint)

    async def _get_slow(self, key: Hashable, mint: Callable[[], Awaitable[Lease[V]]]) -> V:
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                self._evict_locked()
            else:
                self._entries.move_to_end(key)
            snapshot = entry.snapshot
            if snapshot is not None and (
                now < snapshot.usable_until or (entry.failures and now < snapshot.valid_until)
            ):
                # Stale but valid: serve it and let one background refresh run (after the
                # backoff once refreshes fail). Fresh means a fetch landed after the lock-free
                # check above: no refresh is due.
                self._counts["hits"] += 1
                due = now >= snapshot.refresh_at and now >= entry.retry_at
                if due and entry.flight is None:
                    self._fly(key, entry, mint, background=True)
                value: V = snapshot.value
                return value
            self._counts["misses"] += 1
            flight = entry.flight or self._fly(key, entry, mint, background=False)
            # Past the ttl but still valid: if this refresh fails, the old value still works.
            fallback = snapshot if snapshot is not None and now < snapshot.valid_until else None
        try:
            return await wait(flight)
        except concurrent.futures.CancelledError:
            raise CredentialError(
                f"The credential cache was closed while minting {_describe(key)}.", code="Closed"
            ) from None
        except CredentialError:
            # Not if it was invalidated meanwhile (a database refused it) or has expired since.
            if fallback is None or entry.snapshot is not fallback:
                raise
            if self.clock() >= fallback.valid_until:
                raise
            stale: V = fallback.value
            return stale

    def _forget_inherited_flights(self) -> None:
        """In a forked child: drop the fetches that were in flight at the fork (they ran on the
        parent's service thread and never complete here) and a lock another thread may have
        held; values already minted stay cached."""
        self._lock = threading.Lock()
        for key, entry in list(self._entries.items()):
            if entry.flight is not None:
                entry.flight = None
                if entry.snapshot is None:
                    del self._entries[key]
        self._service.forget_parent()

    def invalidate(self, key: Hashable) -> None:
        """Forget the value for ``key``; the next ``get`` mints anew."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.snapshot = None
                if entry.flight is None:
                    del self._entries[key]

    def _fly(
        self,
        key: Hashable,
        entry: _Entry,
        mint: Callable[[], Awaitable[Lease[V]]],
        *,
        background: bool,
    ) -> Any:
        """Start the one fetch for ``entry`` (caller holds the lock)."""

        async def run() -> V:
            try:
                lease = await asyncio.wait_for(mint(), self.deadline)
            except (asyncio.TimeoutError, TimeoutError):  # distinct classes on Python 3.10
                # Named with _describe: the raw key holds the external id.
                timeout = CredentialError(
                    f"Timed out after {self.deadline:g} s minting {_describe(key)}.",
                    code="Timeout",
                )
                self._landed_failure(key, entry, timeout, background=background)
                raise timeout from None
            except BaseException as exc:
                self._landed_failure(key, entry, exc, background=background)
                raise
            now = self.clock()
            life = max(lease.usable_until - now, 0.0)
            refresh_at = now + max(life - self.refresh_margin, life / 2)
            valid_until = max(lease.valid_until or lease.usable_until, lease.usable_until)
            with self._lock:
                entry.snapshot = _Snapshot(lease.value, refresh_at, lease.usable_until, valid_until)
                entry.flight = None
                entry.failures = 0
                entry.retry_at = 0.0
                if background:
                    self._counts["refreshes"] += 1
            return lease.value

        entry.flight = self._service.submit(run)
        return entry.flight

    def _landed_failure(
        self, key: Hashable, entry: _Entry, exc: BaseException, *, background: bool
    ) -> None:
        now = self.clock()
        with self._lock:
            entry.flight = None
            snapshot = entry.snapshot
            # A refresh, background or one that callers past the ttl waited for, keeps the value
            # that is still valid: counted apart from the errors callers see.
            refreshing = snapshot is not None and (background or now < snapshot.valid_until)
            if refreshing:
                entry.failures += 1
                backoff = min(2.0 ** (entry.failures - 1), _MAX_BACKOFF)
                entry.retry_at = now + backoff
                self._counts["refresh_failures"] += 1
            else:
                self._counts["errors"] += 1
                if snapshot is None and self._entries.get(key) is entry:
                    del self._entries[key]
        if refreshing and not isinstance(exc, asyncio.CancelledError):
            log.warning(
                "refresh of %s failed (%s); serving the cached value until "
                "it expires and retrying in %.0f s",
                _describe(key),
                exc,
                entry.retry_at - now,
            )

    def _evict_locked(self) -> None:
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
            self._counts["evictions"] += 1

    # -- AWS credentials -------------------------------------------------------------------

    async def aws_credentials(self, config: AwsIamConfig) -> AwsCredentials:
        """AWS credentials for ``config``: AssumeRole when it has a role, else the default chain.

        Cached per ``(role_arn, region, external_id)``.
        """
        return await self.get(sts_key(config), lambda: self._mint_aws_credentials(config))

    async def _mint_aws_credentials(self, config: AwsIamConfig) -> Lease[AwsCredentials]:
        source = self._credential_source()
        if config.role_arn is not None:
            self._counts["sts_calls"] += 1
            credentials = await source.assume_role(
                role_arn=config.role_arn,
                region=config.region,
                session_name=config.role_session_name or default_session_name(),
                duration=config.session_duration,
                external_id=config.external_id,
            )
        else:
            credentials = await source.default_credentials(config.region)
        now = self.clock()
        if credentials.expires_at is None:
            credentials = dataclasses.replace(credentials, expires_at=now + _DEFAULT_CHAIN_VALIDITY)
        assert credentials.expires_at is not None
        valid_until = self.expire_before(credentials.expires_at, now)
        log.info(
            "obtained AWS credentials from %s in %s, expiring %s",
            credentials.source,
            config.region,
            _iso(credentials.expires_at),
        )
        return Lease(credentials, min(now + self.ttl, valid_until), valid_until)

    def expire_before(self, expires_at: float, now: float) -> float:
        """The last moment a credential expiring at ``expires_at`` may be served.

        The safety margin shrinks for short-lived credentials so they stay usable at all.
        """
        return expires_at - min(self.expiry_margin, max(expires_at - now, 0.0) / 4)

    def count(self, counter: str) -> None:
        """Add one to a stats counter (backends count their AWS calls and signatures)."""
        self._counts[counter] += 1

    def _credential_source(self) -> CredentialSource:
        if self._source is None:
            self._source = AwsApi(**self._api_settings)
        return self._source

    @property
    def api(self) -> AwsApi:
        """The aiobotocore-backed API used by the Redshift backends (service loop only)."""
        source = self._credential_source()
        if not isinstance(source, AwsApi):
            raise TypeError("this cache was built with a custom credential source")
        return source

    async def _close_source(self) -> None:
        source = self._source
        if self._owns_source:  # an injected source stays: a reused cache must not switch to AWS
            self._source = None
        if source is not None:
            await source.aclose()

    # -- housekeeping ----------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """Counters: sts_calls, hits, misses, refreshes, refresh_failures, errors, evictions,
        tokens_signed, api_calls (Redshift APIs) and the current size."""
        counts = dict(self._counts)
        return CacheStats(
            sts_calls=counts["sts_calls"],
            hits=counts["hits"],
            misses=counts["misses"],
            refreshes=counts["refreshes"],
            refresh_failures=counts["refresh_failures"],
            errors=counts["errors"],
            evictions=counts["evictions"],
            tokens_signed=counts["tokens_signed"],
            api_calls=counts["api_calls"],
            size=len(self._entries),
        )

    def clear(self) -> None:
        """Drop every cached value (in-flight fetches complete for their waiters)."""
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        """Stop background work, close AWS clients and drop every entry. Safe to call twice;
        a closed cache starts afresh if used again."""
        self._service.close()
        self.clear()

    async def aclose(self) -> None:
        """``close()`` without blocking the caller's event loop."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.close)


def sts_key(config: AwsIamConfig) -> tuple[str, str | None, str, str | None]:
    """The cache key of a configuration's AWS credentials (DESIGN invariant 3)."""
    return ("aws", config.role_arn, config.region, config.external_id)


def _describe(key: Hashable) -> str:
    if isinstance(key, tuple) and key and key[0] == "aws":
        return f"AWS credentials for {key[1] or 'the default chain'} in {key[2]}"
    if isinstance(key, tuple) and key:
        return f"{key[0]} for {', '.join(str(part) for part in key[1:4])}"
    return repr(key)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


# Every live cache, so that a forked child can drop what the fork cut short.
_caches: weakref.WeakSet[CredentialCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Runs in the child right after os.fork(), before any other thread exists there: no race.
    for cache in list(_caches):
        cache._forget_inherited_flights()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)

_default: CredentialCache | None = None
_default_lock = threading.Lock()


def default_cache() -> CredentialCache:
    """The process-wide cache used when no ``cache=`` is passed; closed at interpreter exit."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = CredentialCache()
                atexit.register(_default.close)
    return _default
