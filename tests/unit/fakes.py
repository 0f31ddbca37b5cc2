"""A fake clock and a fake ``CredentialSource`` for unit tests of the credential core.

A cache runs every fetch on its service loop THREAD, not on the test's event loop, so the fake
source is gated with thread-safe primitives: a test closes ``source.gate``, lets its callers pile
up, then opens it. Secrets the fake hands out are recorded in ``source.secrets`` so tests can
check that none of them leaks into a repr, a message or a log line.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from iampool import CredentialCache
from iampool._aws import AwsCredentials
from iampool._cache import Lease

T = TypeVar("T")

START = 1_800_000_000.0  # 2027-01-15, any fixed epoch will do


class FakeClock:
    """A wall clock in epoch seconds that moves only when told to."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Gate:
    """Where fake AWS calls wait; opened and closed from any thread."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def passage(self) -> None:
        if not self._open.is_set():
            # Blocks a worker thread, not the service loop: other fetches keep running.
            await asyncio.get_running_loop().run_in_executor(None, self._open.wait)


class FakeSource:
    """A ``CredentialSource`` handing out numbered credentials that expire ``lifetime`` s later.

    ``calls`` counts calls by API name ("AssumeRole", "DefaultChain") as they start; ``finished``
    counts those that returned or raised. Exceptions queued in ``failures`` are raised by the
    next calls, one each. ``hang`` makes calls wait forever (until cancelled).
    """

    def __init__(self, clock: Callable[[], float], *, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.gate = Gate()
        self.calls: Counter[str] = Counter()
        self.finished = 0
        self.requests: list[dict[str, Any]] = []
        self.failures: deque[BaseException] = deque()
        self.hang = False
        self.closed = 0
        self.secrets: list[str] = []
        self._serial = itertools.count(1)

    async def assume_role(
        self,
        *,
        role_arn: str,
        region: str,
        session_name: str,
        duration: int,
        external_id: str | None,
    ) -> AwsCredentials:
        self.calls["AssumeRole"] += 1
        self.requests.append(
            {
                "RoleArn": role_arn,
                "Region": region,
                "RoleSessionName": session_name,
                "DurationSeconds": duration,
                "ExternalId": external_id,
            }
        )
        return await self._issue(f"assume-role {role_arn}")

    async def default_credentials(self, region: str) -> AwsCredentials:
        self.calls["DefaultChain"] += 1
        return await self._issue("default chain", expires=False)

    async def aclose(self) -> None:
        self.closed += 1

    async def _issue(self, source: str, *, expires: bool = True) -> AwsCredentials:
        try:
            await self.gate.passage()
            if self.hang:
                await asyncio.Event().wait()
            if self.failures:
                raise self.failures.popleft()
            serial = next(self._serial)
            secret = f"FAKESECRET{serial:04d}wJalrXUtnFEMIK7MDENGbPxRfiCY"
            token = f"FAKESESSIONTOKEN{serial:04d}IQoJb3JpZ2luX2VjEJr"
            self.secrets += [secret, token]
            return AwsCredentials(
                access_key_id=f"ASIAFAKE{serial:012d}",
                secret_access_key=secret,
                session_token=token,
                expires_at=self.clock() + self.lifetime if expires else None,
                source=source,
            )
        finally:
            self.finished += 1


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for work on the service thread to land (e.g. a background refresh).

    Polls: the cache's counters change on another thread, where no event of ours can be set.
    """
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.001)


async def settle(cache: CredentialCache) -> None:
    """Return once every fetch already submitted to the cache's service loop has started.

    The service loop runs tasks in submission order, so by the time a no-op fetch submitted now
    has finished, a background refresh started by an earlier call has reached its source. Lets a
    test assert that NO extra AWS call was started, without sleeping.
    """

    async def nothing() -> Lease[None]:
        return Lease(None, cache.clock() + 1.0)

    key = ("settle", object())
    await cache.get(key, nothing)
    cache.invalidate(key)


async def without_waiting(call: Callable[[], Awaitable[T]]) -> list[T]:
    """``[result]`` if ``call()`` completes without waiting on the service thread, else ``[]``."""
    results: list[T] = []

    async def run() -> None:
        results.append(await call())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    return results
