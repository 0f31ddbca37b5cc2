"""Leases: single flight, refresh ahead and stale-but-valid serving of values that expire.

The mechanism behind ``CredentialCache``; it knows nothing of AWS. Each key has an entry that
moves through a small state machine, every transition in :class:`Leases`::

    empty --miss--> fetching --ok--> fresh --refresh_at--> refreshing (served as is)
                        |                                        |  ok: fresh again
                        +--error: every waiter fails, entry      |  error: stale-but-valid,
                          dropped (failures are not cached)      |  retried after a backoff
                                                    expired <----+--usable_until: callers wait

A stale-but-valid entry (its last refresh failed) is served past ``usable_until`` up to
``valid_until`` (what it is worth before its real expiry): while minting fails, callers keep
what still works instead of an error. A caller that waited on a refresh that failed gets it too.

Mints run on a :class:`~iampool._service.ServiceLoop`, so a cancelled caller never cancels a
fetch that others wait for, and a refresh never waits on the caller's loop. In a forked child the
fetches in flight at the fork are dropped (their thread stayed in the parent).

Time (DESIGN invariant 14): use-by times are wall-clock times, checked when a value is served
and when a mint lands, so a value that expired on its way (the wall clock jumped while the
process slept) is minted again rather than served. A value that landed after the clock's current
reading (the clock was set back) is due for refresh, and a backoff longer than any backoff
ends. A mint's deadline counts the time the process ran (``_service.within``): after a freeze it
starts again instead of failing its waiters.

A lookup's slow path is written once, as a generator of the flights it waits for (``_steps``):
``get`` awaits them, ``get_blocking`` blocks its thread on them.

A key may also have a *local* mint (``mint_now``): one that needs no AWS call, such as signing a
token with credentials already cached. It runs at once on the caller's thread, under the lock
(single flight by construction), for a miss and for a refresh that falls due; it returns None when
it cannot mint without waiting, and the mint on the service loop takes over.

The table is bounded by ``maxsize``: least recently used first, approximated by a second chance
(a hit only marks its entry as used; eviction skips marked entries once), which keeps the hot path
free of any reordering.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Hashable
from typing import Any, Generic, TypeVar

from ._errors import CredentialError
from ._service import Flight, ServiceLoop, ended, on_service_thread, within

__all__ = ["Clock", "Counters", "Lease", "Leases", "describe"]

log = logging.getLogger("iampool")

V = TypeVar("V")
Clock = Callable[[], float]
Mint = Callable[[], Awaitable["Lease[V]"]]
MintNow = Callable[[Any], "Lease[V] | None"]  # given the current value (or None)

_MAX_BACKOFF = 30.0
_SECOND_CHANCES = 16
_MISS = object()  # what the lock-free lookup returns when the slow path must run
_CLAIMS = 2  # a lookup whose minted value expired on its way claims once more, then fails
_BLOCKING_GRACE = 1.0  # a blocking wait outlasts the mint's own deadline by this much


@dataclasses.dataclass(slots=True)
class Counters:
    """What a cache did since it was created (approximate under heavy multi-threading)."""

    hits: int = 0
    misses: int = 0
    stale: int = 0  # served past its usable life (stale-but-valid) while refreshing failed
    refreshes: int = 0
    refresh_failures: int = 0
    errors: int = 0
    evictions: int = 0
    sts_calls: int = 0
    tokens_signed: int = 0
    api_calls: int = 0


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
    landed_at: float  # a clock reading before it: the clock was set back, the value is due
    refresh_at: float
    usable_until: float
    valid_until: float


class _Entry:
    __slots__ = ("failures", "flight", "retry_at", "snapshot", "used")

    def __init__(self) -> None:
        self.snapshot: _Snapshot[Any] | None = None
        self.flight: Flight[Any] | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.used = False  # hit since the eviction sweep last passed it


@dataclasses.dataclass(slots=True, eq=False)
class _Claim(Generic[V]):
    """A caller's place in a flight: what it waits for, and what to serve if that fails."""

    flight: Flight[Lease[V]] | None  # these three: None once its outcome is taken
    entry: _Entry | None
    fallback: _Snapshot[V] | None


class Leases:
    """Keys to leased values: one shared mint per key, refreshed ahead, LRU-bounded.

    Args:
        service: where mints run.
        counters: where hits, misses, refreshes, failures and evictions are counted.
        clock: wall clock in epoch seconds.
        refresh_margin: how long before ``usable_until`` a background refresh starts; capped at
            half the value's life so short lives still get a fresh period.
        maxsize: entries kept; the least recently used are evicted beyond it.
        deadline: seconds one mint may take.
    """

    def __init__(
        self,
        *,
        service: ServiceLoop,
        counters: Counters,
        clock: Clock,
        refresh_margin: float,
        maxsize: int,
        deadline: float,
    ) -> None:
        self._service = service
        self._counters = counters
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._maxsize = maxsize
        self._deadline = deadline
        # Reentrant: a local mint runs under it and may peek at another key (its credentials).
        self._lock = threading.RLock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        service.on_fork(self._forget_flights)

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        key: Hashable,
        mint: Mint[V],
        mint_now: MintNow[V] | None = None,
        *,
        fresh: bool = False,
    ) -> V:
        """The value for ``key``, or the result of ONE shared ``mint()`` call.

        ``mint`` runs on the service loop and returns a :class:`Lease`; ``mint_now``, when given,
        is tried first on the caller's thread (see the module docstring). ``fresh`` asks for a
        value that is not due for its refresh: a due one is refreshed first (and served anyway
        if that fails). Keys must include every field that changes what they return.
        """
        hit: V = self._hit(key)
        if hit is not _MISS:
            return hit
        return await self._get_slow(key, mint, mint_now, fresh)

    def _hit(self, key: Hashable) -> Any:
        """The value for ``key`` if it is not due for refresh, else ``_MISS``: lock-free."""
        entry = self._entries.get(key)
        if entry is None:
            return _MISS
        snapshot = entry.snapshot
        if snapshot is None or not snapshot.landed_at <= self._clock() < snapshot.refresh_at:
            return _MISS
        self._counters.hits += 1
        entry.used = True
        return snapshot.value

    def peek(self, key: Hashable, mint: Mint[V], *, fresh: bool = False) -> V | None:
        """The value for ``key`` if one can be served now, else None; never waits.

        Like :meth:`get` for a served value, it starts the refresh that is due; with ``fresh``,
        a value due for refresh is not served.
        """
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            snapshot = entry.snapshot if entry is not None else None
            if entry is None or snapshot is None or not _servable(entry, snapshot, now):
                return None
            served: V = self._serve_locked(key, entry, snapshot, now, mint, None)
            return None if fresh and _due(snapshot, now) else served

    async def _get_slow(
        self, key: Hashable, mint: Mint[V], mint_now: MintNow[V] | None, fresh: bool
    ) -> V:
        steps = self._steps(key, mint, mint_now, fresh)
        try:
            while True:
                await ended(next(steps))
        except StopIteration as done:
            served: V = done.value
            return served

    def get_blocking(
        self,
        key: Hashable,
        mint: Mint[V],
        mint_now: MintNow[V] | None = None,
        *,
        fresh: bool = False,
        timeout: float | None = None,
    ) -> V:
        """:meth:`get` for a thread without an event loop: blocks the calling thread on a miss.

        The same hits, shared mint, fallback and errors as :meth:`get`; only the waiting
        differs. ``timeout`` bounds the wait (default: the mint's deadline and a little more),
        counted from the last freeze of the process if there was one (see
        :meth:`~iampool._service.Flight.join`); when it passes, ``CredentialError`` (code
        ``Timeout``) is raised and the shared mint goes on for its other waiters.

        Raises:
            RuntimeError: called on a service loop's thread, which the wait would deadlock.
        """
        if on_service_thread():
            raise RuntimeError(
                "Leases.get_blocking() cannot wait on iampool's service thread (the mint it "
                "waits for runs there): await Leases.get() instead"
            )
        hit: V = self._hit(key)
        if hit is not _MISS:
            return hit
        steps = self._steps(key, mint, mint_now, fresh)
        try:
            while True:
                if not next(steps).join(
                    self._deadline + _BLOCKING_GRACE if timeout is None else timeout
                ):
                    steps.close()  # the flight goes on for its other waiters
                    raise CredentialError(f"Timed out waiting for {describe(key)}.", code="Timeout")
        except StopIteration as done:
            served: V = done.value
            return served

    def _steps(
        self, key: Hashable, mint: Mint[V], mint_now: MintNow[V] | None, fresh: bool
    ) -> Generator[Flight[Lease[V]], None, V]:
        """The slow path of a lookup, whatever the caller waits with: it yields each flight to
        wait for until it ends, and returns the value to serve.

        A flight's value that is past its use-by time when it lands (the wall clock jumped
        while it was minted) is not served: the lookup claims again, which mints anew.
        """
        for _ in range(_CLAIMS):
            claimed = self._claim(key, mint, mint_now, fresh)
            if not isinstance(claimed, _Claim):
                served: V = claimed
                return served
            assert claimed.flight is not None  # taken by _outcome only
            yield claimed.flight
            landed: V = self._outcome(key, claimed)
            if landed is not _MISS:
                return landed
        raise CredentialError(
            f"Every value minted for {describe(key)} had expired by the time it arrived: is "
            "this machine's clock right?",
            code="Expired",
        )

    def _claim(
        self, key: Hashable, mint: Mint[V], mint_now: MintNow[V] | None, fresh: bool
    ) -> V | _Claim[V]:
        """Under the lock: serve the value, mint it locally, or join (or start) its flight and
        note what to serve if that fails."""
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is None:  # not "used" yet: a key seen once goes first (scan resistance)
                entry = self._entries[key] = _Entry()
                self._evict_locked()
            snapshot = entry.snapshot
            if snapshot is not None and _servable(entry, snapshot, now):
                # The lock-free check in get() passed it by: it is due for refresh, or a fetch
                # landed meanwhile.
                served: V = self._serve_locked(key, entry, snapshot, now, mint, mint_now)
                wants_newer = fresh and _due(snapshot, now) and served is snapshot.value
                if not wants_newer or entry.flight is None:  # no flight: a failure's backoff
                    return served
                # A value not due for refresh is wanted: wait for the refresh just started; if
                # it fails, this one is served after all.
                return _Claim(entry.flight, entry, snapshot)
            self._counters.misses += 1
            if entry.flight is None and mint_now is not None:
                lease = mint_now(None)
                if lease is not None:
                    self._land_locked(entry, lease, now, background=False)
                    minted: V = lease.value
                    return minted
            flight = entry.flight or self._fly(key, entry, mint, background=False)
            # Past the ttl but still valid: if this refresh fails, the old value still works.
            fallback = snapshot if snapshot is not None and now < snapshot.valid_until else None
            return _Claim(flight, entry, fallback)

    def _outcome(self, key: Hashable, claimed: _Claim[V]) -> Any:
        """What an ended flight gives a waiter: its value, or ``_MISS`` if that is past its
        use-by time already; if it failed, the fallback while that is still valid; else its
        error."""
        flight, entry, fallback = claimed.flight, claimed.entry, claimed.fallback
        assert flight is not None  # taken once
        # The waiter's frame keeps its claim: an error raised through it must not reach a
        # cached value (the fallback, a token) from there, nor the flight's waiters' loops.
        claimed.flight = claimed.entry = claimed.fallback = None
        try:
            lease = flight.result()
        except concurrent.futures.CancelledError:
            raise CredentialError(
                f"The credential cache was closed while minting {describe(key)}.", code="Closed"
            ) from None
        except CredentialError as error:
            # Not if it was invalidated meanwhile (a database refused it) or has expired since.
            # The value the failed fetch would have replaced.
            still = entry.snapshot if entry is not None else None
            if fallback is not None and still is fallback and self._clock() < still.valid_until:
                stale: V = still.value
                return stale
            # Raised through this frame: its locals must not reach a cached value (the expired
            # fallback, a token) nor the key, which holds the external id.
            del key, entry, fallback, still, flight, claimed
            # Every waiter raises the one error object: from here, not onto the traceback the
            # waiters before it left (which would grow with each of them).
            raise error.with_traceback(None)  # noqa: B904 (it is the error being handled)
        return lease.value if self._clock() < lease.usable_until else _MISS

    def prefetch(self, key: Hashable, mint: Mint[V], mint_now: MintNow[V] | None = None) -> None:
        """Start minting ``key``'s value unless one is cached or on its way; never waits.

        For callers that know the value will be wanted soon (a pool being created). A failure
        is counted and forgotten: the first ``get`` tries again and reports it.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                self._evict_locked()
            if entry.snapshot is not None or entry.flight is not None:
                return
            lease = mint_now(None) if mint_now is not None else None
            if lease is not None:
                self._land_locked(entry, lease, self._clock(), background=False)
            else:
                self._fly(key, entry, mint, background=False)

    def invalidate(self, key: Hashable) -> None:
        """Forget the value for ``key``; the next ``get`` mints anew."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.snapshot = None
                if entry.flight is None:
                    del self._entries[key]

    def remaining(self) -> list[tuple[Hashable, float]]:
        """Each cached value's key and the seconds it may still be served (stale-but-valid
        included), for telemetry; values past that are left out. Never waits on a mint."""
        with self._lock:
            entries = list(self._entries.items())
        now = self._clock()
        lives = []
        for key, entry in entries:
            snapshot = entry.snapshot
            if snapshot is not None and snapshot.valid_until > now:
                lives.append((key, snapshot.valid_until - now))
        return lives

    def invalidate_if(
        self, key: Hashable, refused: Callable[[Any], bool], *, settled: float
    ) -> bool:
        """Forget ``key``'s value if ``refused(value)`` (it is the one a database just refused)
        and it landed at least ``settled`` seconds ago; whether it did.

        The refusals of a whole herd thus drop one value once: the first starts the mint the
        others join, and a value just minted (AWS still says it is current) is kept for
        ``settled`` seconds however often it is refused, which bounds the re-fetches.
        """
        with self._lock:
            entry = self._entries.get(key)
            snapshot = entry.snapshot if entry is not None else None
            if entry is None or snapshot is None or not refused(snapshot.value):
                return False
            if 0.0 <= self._clock() - snapshot.landed_at < settled:
                return False
            entry.snapshot = None
            if entry.flight is None:
                del self._entries[key]
            return True

    def clear(self) -> None:
        """Drop every value (mints in flight complete for their waiters)."""
        with self._lock:
            self._entries.clear()

    def _serve_locked(
        self,
        key: Hashable,
        entry: _Entry,
        snapshot: _Snapshot[V],
        now: float,
        mint: Mint[V],
        mint_now: MintNow[V] | None,
    ) -> V:
        """Serve a fresh or stale-but-valid value and start the refresh that is due (after the
        backoff once refreshes fail): here if it can be minted locally, else in the background."""
        if now < snapshot.usable_until:
            self._counters.hits += 1
        else:
            self._counters.stale += 1
        entry.used = True
        # A clock set back is no reason to wait: a backoff ends, a value is due.
        backed_off = entry.retry_at - _MAX_BACKOFF <= now < entry.retry_at
        if _due(snapshot, now) and not backed_off and entry.flight is None:
            lease = mint_now(snapshot.value) if mint_now is not None else None
            if lease is not None:
                self._land_locked(entry, lease, now, background=True)
                return lease.value
            self._fly(key, entry, mint, background=True)
        return snapshot.value

    def _fly(self, key: Hashable, entry: _Entry, mint: Mint[V], *, background: bool) -> Any:
        """Start the one mint for ``entry`` (the caller holds the lock)."""

        async def run() -> Lease[V]:
            try:
                lease = await within(mint, self._deadline)
            except TimeoutError:
                # Named with describe(): the raw key holds the external id.
                timeout = CredentialError(
                    f"Timed out after {self._deadline:g} s minting {describe(key)}.",
                    code="Timeout",
                )
                self._failed(key, entry, timeout, background=background)
                raise timeout from None
            except BaseException as exc:
                self._failed(key, entry, exc, background=background)
                raise
            self._landed(entry, lease, background=background)
            return lease

        entry.flight = self._service.submit(run)
        return entry.flight

    def _landed(self, entry: _Entry, lease: Lease[Any], *, background: bool) -> None:
        with self._lock:
            self._land_locked(entry, lease, self._clock(), background=background)

    def _land_locked(
        self, entry: _Entry, lease: Lease[Any], now: float, *, background: bool
    ) -> None:
        life = max(lease.usable_until - now, 0.0)
        refresh_at = now + max(life - self._refresh_margin, life / 2)
        valid_until = lease.usable_until
        if lease.valid_until is not None and lease.valid_until > valid_until:
            valid_until = lease.valid_until
        entry.snapshot = _Snapshot(lease.value, now, refresh_at, lease.usable_until, valid_until)
        entry.flight = None
        entry.failures = 0
        entry.retry_at = 0.0
        if background:
            self._counters.refreshes += 1

    def _failed(
        self, key: Hashable, entry: _Entry, exc: BaseException, *, background: bool
    ) -> None:
        now = self._clock()
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
                self._counters.refresh_failures += 1
            else:
                self._counters.errors += 1
                if snapshot is None and self._entries.get(key) is entry:
                    del self._entries[key]
        if refreshing and not isinstance(exc, asyncio.CancelledError):
            log.warning(
                "refresh of %s failed (%s); serving the cached value until "
                "it expires and retrying in %.0f s",
                describe(key),
                exc,
                entry.retry_at - now,
            )

    def _evict_locked(self) -> None:
        entries = self._entries
        chances = _SECOND_CHANCES  # bounds the work of one eviction, whatever the hit pattern
        while len(entries) > self._maxsize:
            key, entry = entries.popitem(last=False)
            if entry.used and chances:  # a second chance: it was hit since the sweep passed it
                chances -= 1
                entry.used = False
                entries[key] = entry
            else:
                self._counters.evictions += 1

    def _forget_flights(self) -> None:
        """In a forked child: drop the mints in flight at the fork (they ran on the parent's
        service thread and never complete here) and a lock another thread may have held; values
        already minted stay."""
        self._lock = threading.RLock()
        for key, entry in list(self._entries.items()):
            if entry.flight is not None:
                entry.flight = None
                if entry.snapshot is None:
                    del self._entries[key]


def _due(snapshot: _Snapshot[Any], now: float) -> bool:
    """Due for its refresh: its time has come, or the clock was set back since it landed."""
    return not snapshot.landed_at <= now < snapshot.refresh_at


def _servable(entry: _Entry, snapshot: _Snapshot[Any], now: float) -> bool:
    """Within its usable life, or stale but still valid while its refreshes fail."""
    return now < snapshot.usable_until or (entry.failures > 0 and now < snapshot.valid_until)


def describe(key: Hashable) -> str:
    """A key in words, for messages: never the raw key, whose STS part holds the external id."""
    if not isinstance(key, tuple) or not key:
        return repr(key)
    if key[0] == "aws":
        return f"AWS credentials for {key[1] or 'the default chain'} in {key[2]}"
    scope = key[-1]
    if len(key) == 3 and isinstance(scope, tuple) and str(scope[0]).endswith("token"):
        host, port, (kind, user, *_) = key  # a token's: (host, port, (kind, user, ...))
        return f"the {kind} for {user} at {host}:{port}"
    # Plain parts only: a nested tuple may be an STS key.
    return " ".join(str(part) for part in key[:5] if isinstance(part, (str, int)))
