"""Aurora DSQL helpers: ``await iampool.dsql.retry_serialization(transaction)``.

Aurora DSQL uses optimistic concurrency control: a transaction that conflicts with another
one that committed first is aborted at COMMIT with SQLSTATE ``40001`` (serialization_failure,
DSQL's codes ``OC000``/``OC001`` in the message), and the remedy is to run it again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._errors import ConfigError, ConfigProblem, shown
from .pools._dialer import Backoff

__all__ = ["SERIALIZATION_FAILURE", "retry_serialization"]

T = TypeVar("T")
log = logging.getLogger("iampool")

SERIALIZATION_FAILURE = "40001"
"""The SQLSTATE of a transaction aborted for a concurrency conflict."""

_BACKOFF = Backoff(base=0.01, cap=1.0)


def _conflict(exc: BaseException) -> bool:
    """An asyncpg or psycopg error (or SQLAlchemy's wrapping of one, ``orig``) with 40001."""
    for error in (exc, getattr(exc, "orig", None)):
        if getattr(error, "sqlstate", None) == SERIALIZATION_FAILURE:
            return True
    return False


async def retry_serialization(transaction: Callable[[], Awaitable[T]], *, attempts: int = 5) -> T:
    """Run ``transaction()`` and, while it fails with SQLSTATE ``40001`` (an optimistic
    concurrency conflict), run it again after a jittered pause growing from 10 ms to 1 s, at
    most ``attempts`` times in all; returns what it returns.

    ``transaction`` must be the whole transaction, connection included, and safe to repeat::

        async def transfer() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("UPDATE account SET balance = balance - 10 WHERE id = 1")
                await conn.execute("UPDATE account SET balance = balance + 10 WHERE id = 2")

        await iampool.dsql.retry_serialization(transfer)

    Raises:
        ConfigError: ``attempts`` is not a whole number of at least 1.
        Exception: any other error at once; the conflict itself after the last attempt.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        problem = ConfigProblem("attempts", f"must be a whole number >= 1, got {shown(attempts)}")
        raise ConfigError(problem, context="argument")
    for attempt in range(1, attempts + 1):
        try:
            return await transaction()
        except Exception as exc:
            if attempt == attempts or not _conflict(exc):
                raise
            pause = _BACKOFF.delay(attempt)
            log.info(
                "transaction aborted by a concurrency conflict (attempt %d of %d); "
                "running it again in %.3f s",
                attempt,
                attempts,
                pause,
            )
        await anyio.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover
