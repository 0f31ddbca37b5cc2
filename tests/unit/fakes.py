"""A fake clock and a fake ``AwsSource`` for unit tests of the credential core.

A cache runs every fetch on its service loop THREAD, not on the test's event loop, so the fake
source is gated with thread-safe primitives: a test closes ``source.gate`` (STS) or
``source.api_gate`` (Redshift APIs), lets its callers pile up, then opens it. Secrets the fake
hands out are recorded in ``source.secrets`` so tests can check that none of them leaks into a
repr, a message or a log line.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from iampool import AwsIamConfig, CredentialCache
from iampool._aws import AwsCredentials, RedshiftLogin, SecretValue
from iampool._cache import mint_context
from iampool._leases import Lease, Leases

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
    """An ``AwsSource`` handing out numbered credentials that expire ``lifetime`` s later.

    ``calls`` counts calls by API name ("AssumeRole", "DefaultChain", "GetClusterCredentials",
    "GetCredentials", "DescribeClusters", "GetWorkgroup") as they start; ``finished`` counts the
    credential calls that returned or raised. Exceptions queued in ``failures`` are raised by the
    next credential calls, those in ``api_failures`` by the next Redshift logins, one each.
    ``hang`` makes credential calls wait forever (until cancelled). Redshift logins are numbered
    passwords (``passwords``), valid for the requested duration, for the user the API would name;
    ``logins`` records who asked. ``prepared`` lists the regions ``prepare`` was called for.
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
        self.prepared: list[str] = []
        self.api_gate = Gate()
        self.api_failures: deque[BaseException] = deque()
        self.logins: list[tuple[str, dict[str, Any]]] = []
        self.passwords: list[str] = []
        self.endpoint = ("analytics.abc123.us-east-1.redshift.amazonaws.com", 5439)
        # Secrets Manager: the AWSCURRENT text GetSecretValue answers (None: not found)
        self.secret_text: str | None = None

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

    async def prepare(self, region: str) -> None:
        self.prepared.append(region)

    async def cluster_credentials(
        self,
        credentials: AwsCredentials,
        *,
        region: str,
        cluster_identifier: str,
        db_user: str,
        db_name: str | None,
        duration: int,
        auto_create: bool,
        db_groups: tuple[str, ...],
    ) -> RedshiftLogin:
        request = {
            "region": region,
            "cluster_identifier": cluster_identifier,
            "db_user": db_user,
            "db_name": db_name,
            "duration": duration,
            "auto_create": auto_create,
            "db_groups": db_groups,
        }
        prefix = "IAMA" if auto_create else "IAM"
        return await self._login(
            "GetClusterCredentials", credentials, request, f"{prefix}:{db_user}"
        )

    async def serverless_credentials(
        self,
        credentials: AwsCredentials,
        *,
        region: str,
        workgroup_name: str,
        db_name: str | None,
        duration: int,
    ) -> RedshiftLogin:
        request = {
            "region": region,
            "workgroup_name": workgroup_name,
            "db_name": db_name,
            "duration": duration,
        }
        role = credentials.source.rpartition("/")[2]  # Serverless names the role's user IAMR:<role>
        return await self._login("GetCredentials", credentials, request, f"IAMR:{role}")

    async def cluster_endpoint(
        self, credentials: AwsCredentials, *, region: str, cluster_identifier: str
    ) -> tuple[str, int]:
        self.calls["DescribeClusters"] += 1
        return self.endpoint

    async def workgroup_endpoint(
        self, credentials: AwsCredentials, *, region: str, workgroup_name: str
    ) -> tuple[str, int]:
        self.calls["GetWorkgroup"] += 1
        return self.endpoint

    async def _login(
        self, api: str, credentials: AwsCredentials, request: dict[str, Any], user: str
    ) -> RedshiftLogin:
        self.calls[api] += 1
        self.logins.append((credentials.access_key_id, request))
        await self.api_gate.passage()
        if self.api_failures:
            raise self.api_failures.popleft()
        password = f"FakeRedshiftPassword{len(self.passwords) + 1:04d}Zq8"
        self.passwords.append(password)
        self.secrets.append(password)
        return RedshiftLogin(user, password, self.clock() + request["duration"])

    async def secret_value(
        self, credentials: AwsCredentials, *, region: str, secret_id: str
    ) -> SecretValue:
        self.calls["GetSecretValue"] += 1
        self.logins.append((credentials.access_key_id, {"region": region, "secret_id": secret_id}))
        await self.api_gate.passage()
        if self.api_failures:
            raise self.api_failures.popleft()
        if self.secret_text is None:
            from iampool import CredentialError

            raise CredentialError("Failed to get secret: ResourceNotFoundException.", code="R")
        self.secrets.append(self.secret_text)
        return SecretValue(arn=secret_id, version_id=str(self.calls["GetSecretValue"]),
                           text=self.secret_text)  # fmt: skip

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

    context = mint_context(cache)

    async def nothing() -> Lease[None]:
        return Lease(None, context.clock() + 1.0)

    key = ("settle", object())
    leases = context.leases
    await leases.get(key, nothing)
    leases.invalidate(key)


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


def aws_credentials(cache: CredentialCache, config: AwsIamConfig) -> Awaitable[AwsCredentials]:
    """The cache's STS (or default-chain) credentials for ``config``, as a backend gets them."""
    return mint_context(cache).aws_credentials(config)


def leases(cache: CredentialCache) -> Leases:
    """The cache's lease table, for tests of the mechanism itself."""
    return mint_context(cache).leases
