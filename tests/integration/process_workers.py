"""What a worker process does in tests/integration/test_processes.py (importable by name, so
``spawn`` and ``forkserver`` children can run it too).

A worker is what a pre-fork server's worker or a ``multiprocessing`` child does with iampool: it
uses the process-wide ``default_cache()`` (the real aiobotocore client, talking to the parent's
``FakeAws`` through ``AWS_ENDPOINT_URL``) and serves queries from a pool through the gateway.
It reports counts, never secrets, as a JSON-ready dict.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import iampool


def serve(
    dsn: str, block: dict[str, Any], seconds: float, tasks: int, refreshes: int = 2
) -> dict[str, Any]:
    """Serve ``SELECT current_user`` from ``tasks`` tasks on a pool of 4 that opens a new
    connection every 3 queries (every new connection needs current credentials), for at least
    ``seconds`` and until the process made ``refreshes`` AssumeRole calls (at most 60 s: a busy
    machine slows the queries that trigger refreshes, not the test's verdict)."""
    return asyncio.run(_serve(dsn, block, seconds, tasks, refreshes))


async def _serve(
    dsn: str, block: dict[str, Any], seconds: float, tasks: int, refreshes: int
) -> dict[str, Any]:
    cache = iampool.default_cache()
    before = cache.stats()  # a forked child inherits its parent's counts
    queries = 0
    errors: list[str] = []
    users: set[str] = set()
    pool = await iampool.create_pool(dsn, aws_iam=block, min_size=0, max_size=4, max_queries=3)
    started = time.monotonic()

    def serving() -> bool:
        elapsed = time.monotonic() - started
        refreshed = cache.stats()["sts_calls"] - before["sts_calls"] >= refreshes
        return elapsed < 60 and (elapsed < seconds or not refreshed)

    async def work() -> None:
        nonlocal queries
        while serving():
            try:
                async with pool.acquire() as connection:
                    users.add(await connection.fetchval("SELECT current_user"))
                queries += 1
            except Exception as exc:  # counted and reported: the test expects none
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    try:
        await asyncio.gather(*(work() for _ in range(tasks)))
    finally:
        await pool.close()
    stats = cache.stats()
    return {
        "pid": os.getpid(),
        "queries": queries,
        "errors": errors[:3],
        "error_count": len(errors),
        "users": sorted(users),
        "seconds": time.monotonic() - started,
        "sts_calls": stats["sts_calls"] - before["sts_calls"],
        "tokens_signed": stats["tokens_signed"] - before["tokens_signed"],
    }


def login_once(dsn: str, block: dict[str, Any]) -> dict[str, Any]:
    """One connection with fresh credentials from the default cache: who the server saw."""
    return asyncio.run(_login_once(dsn, block))


async def _login_once(dsn: str, block: dict[str, Any]) -> dict[str, Any]:
    before = iampool.default_cache().stats()["sts_calls"]
    connection = await iampool.connect(dsn, aws_iam=block)
    try:
        user = await connection.fetchval("SELECT current_user")
    finally:
        await connection.close()
    sts_calls = iampool.default_cache().stats()["sts_calls"] - before
    return {"pid": os.getpid(), "user": user, "sts_calls": sts_calls}


def report_to(connection: Any, work: Any, *args: Any) -> None:
    """A ``multiprocessing`` target: send ``work(*args)``, or the error it raised, to the parent."""
    try:
        connection.send(work(*args))
    except BaseException as exc:  # the parent shows it
        connection.send({"pid": os.getpid(), "crash": f"{type(exc).__name__}: {exc}"[:500]})
    finally:
        connection.close()
