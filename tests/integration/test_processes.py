"""Processes: children forked after their parent used AWS, pre-fork servers, spawn, forkserver.

The real aiobotocore client talks to FakeAws throughout (DESIGN invariant 9): a fake credential
source hides exactly the bugs these tests are for. A child forked from a process that has made
AWS calls inherits clients bound to the parent's event loop; before iampool built new AWS
sessions and clients in the child, its first AWS call after the fork failed ("attached to a
different loop") and a pre-fork server's workers broke at their first credential refresh.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import iampool
from iampool import CredentialCache
from iampool.testing import FakeAws, IamDatabase
from tests.users import APP

from . import process_workers

CHILD_TIMEOUT = 60  # seconds; a child that hangs is killed by SIGALRM and the test fails
SESSION_SECONDS = 2  # STS sessions FakeAws issues while short_sessions is on
SERVE_SECONDS = 5.0  # long enough for at least 2 refreshes of 2 s sessions
WORKERS = 4


@pytest.fixture
def block(iam_postgres: IamDatabase, fake_aws: FakeAws) -> dict[str, Any]:
    """The gateway's aws_iam block with a role of this module's own, to count its AssumeRoles."""
    role_arn = fake_aws.create_role("iampool-test-processes")
    return {**iam_postgres.config.to_dict(), "role_arn": role_arn}


@pytest.fixture
def short_sessions(fake_aws: FakeAws) -> Iterator[None]:
    """STS credentials that expire 2 s after issue: a refresh is due every second or so."""
    fake_aws.expire_credentials_early(SESSION_SECONDS)
    yield
    fake_aws.expire_credentials_early(None)


@pytest.fixture
def assume_roles(fake_aws: FakeAws, block: dict[str, Any]) -> Callable[[], Counter[int]]:
    """AssumeRole calls for the block's role since the test started, by the caller's process id
    (iampool's default RoleSessionName ends in it)."""

    def by_pid() -> Counter[int]:
        return Counter(
            int(request["RoleSessionName"].rsplit("-", 1)[1])
            for request in fake_aws.requests["AssumeRole"]
            if request["RoleArn"] == block["role_arn"]
        )

    before = by_pid()
    return lambda: by_pid() - before


def fork(work: Callable[[], dict[str, Any]]) -> tuple[int, int]:
    """Fork a child that runs ``work()`` and writes its result as JSON; returns (pid, fd)."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a multi-threaded process may deadlock: the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's half; coverage does not follow os._exit
        os.close(read)
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(CHILD_TIMEOUT)
            result = work()
        except BaseException as exc:
            result = {"crash": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            os.write(write, json.dumps(result).encode())
            os._exit(0)
    os.close(write)
    return pid, read


def collect(pid: int, read: int) -> dict[str, Any]:
    """The forked child's result, once it exited."""
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, f"child {pid} exited with {code} (-14: hung until SIGALRM)"
    result: dict[str, Any] = json.loads(b"".join(chunks))
    assert "crash" not in result, result["crash"]
    return {"pid": pid, **result}


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return collect(*fork(work))


def login(dsn: str, block: dict[str, Any], cache: CredentialCache) -> str:
    """Connect through the gateway with the cache's current credentials; the server's user."""

    async def run() -> str:
        connection = await iampool.connect(dsn, aws_iam=block, cache=cache)
        try:
            return str(await connection.fetchval("SELECT current_user"))
        finally:
            await connection.close()

    return asyncio.run(run())


def test_a_child_forked_from_a_warm_cache_makes_its_own_aws_calls_after_clear(
    iam_postgres: IamDatabase, block: dict[str, Any], assume_roles: Callable[[], Counter[int]]
) -> None:
    cache = CredentialCache()
    try:
        assert login(iam_postgres.dsn, block, cache) == APP  # AWS clients now exist

        def child() -> dict[str, Any]:
            cache.clear()
            return {"user": login(iam_postgres.dsn, block, cache)}

        result = in_child(child)
        cache.clear()
        assert login(iam_postgres.dsn, block, cache) == APP  # the parent still works
    finally:
        cache.close()

    assert result["user"] == APP
    assert assume_roles() == Counter({os.getpid(): 2, result["pid"]: 1})


@pytest.mark.usefixtures("short_sessions")
def test_a_forked_child_refreshes_credentials_that_expired_naturally(
    iam_postgres: IamDatabase, block: dict[str, Any], assume_roles: Callable[[], Counter[int]]
) -> None:
    cache = CredentialCache()
    try:
        assert login(iam_postgres.dsn, block, cache) == APP

        def child() -> dict[str, Any]:
            time.sleep(SESSION_SECONDS + 0.5)  # the inherited credentials expire meanwhile
            return {"user": login(iam_postgres.dsn, block, cache)}

        result = in_child(child)
        assert login(iam_postgres.dsn, block, cache) == APP  # expired in the parent too
    finally:
        cache.close()

    assert result["user"] == APP
    assert assume_roles() == Counter({os.getpid(): 2, result["pid"]: 1})


def check_workers(results: list[dict[str, Any]], calls: Counter[int]) -> None:
    """Every worker served without an error through at least two refreshes, each refresh one
    AssumeRole for the whole process, never one per connection."""
    for result in results:
        # Refreshes start at half a 2 s session's usable life (0.75 s), and not before.
        most = result["seconds"] / 0.75 + 2
        assert (result["error_count"], result["errors"]) == (0, [])
        assert result["users"] == [APP]
        assert 2 <= calls[result["pid"]] <= most, result
        assert result["sts_calls"] == calls[result["pid"]]  # one call per refresh, no duplicates
        assert result["queries"] > 3 * calls[result["pid"]]  # many new connections per refresh


@pytest.mark.usefixtures("short_sessions")
def test_a_pre_fork_server_with_os_fork_keeps_refreshing_in_every_worker(
    iam_postgres: IamDatabase, block: dict[str, Any], assume_roles: Callable[[], Counter[int]]
) -> None:
    # The parent warms the process-wide cache, as an app preloaded by gunicorn does.
    assert asyncio.run(iampool.auth_for(block, host="h", port=1).credentials()).user == APP

    children = [
        fork(lambda: process_workers.serve(iam_postgres.dsn, block, SERVE_SECONDS, 8))
        for _ in range(WORKERS)
    ]
    results = [collect(pid, read) for pid, read in children]

    check_workers(results, assume_roles())
    assert len({result["pid"] for result in results}) == WORKERS


@pytest.mark.usefixtures("short_sessions")
def test_a_pre_fork_server_with_multiprocessing_fork_keeps_refreshing_in_every_worker(
    iam_postgres: IamDatabase, block: dict[str, Any], assume_roles: Callable[[], Counter[int]]
) -> None:
    assert asyncio.run(iampool.auth_for(block, host="h", port=1).credentials()).user == APP
    context = multiprocessing.get_context("fork")
    pipes, processes = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, Python 3.12+
        for _ in range(WORKERS):
            receive, send = context.Pipe(duplex=False)
            args = (send, process_workers.serve, iam_postgres.dsn, block, SERVE_SECONDS, 8)
            process = context.Process(target=process_workers.report_to, args=args)
            process.start()
            send.close()
            pipes.append(receive)
            processes.append(process)
    results = [receive.recv() for receive in pipes]
    for process in processes:
        process.join(CHILD_TIMEOUT)
        assert process.exitcode == 0

    assert all("crash" not in result for result in results), results
    check_workers(results, assume_roles())


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawn_and_forkserver_children_log_in_with_their_own_credentials(
    method: str,
    iam_postgres: IamDatabase,
    block: dict[str, Any],
    assume_roles: Callable[[], Counter[int]],
) -> None:
    asyncio.run(iampool.auth_for(block, host="h", port=1).credentials())  # the parent is warm
    context = multiprocessing.get_context(method)
    receive, send = context.Pipe(duplex=False)
    args = (send, process_workers.login_once, iam_postgres.dsn, block)
    process = context.Process(target=process_workers.report_to, args=args)
    process.start()
    send.close()
    result = receive.recv()
    process.join(CHILD_TIMEOUT)

    assert process.exitcode == 0
    assert "crash" not in result, result["crash"]
    assert (result["user"], result["sts_calls"]) == (APP, 1)
    assert assume_roles()[result["pid"]] == 1
