"""iampool.dsql.retry_serialization: a transaction run again on SQLSTATE 40001, and only then."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

from iampool import ConfigError
from iampool.dsql import retry_serialization

pytestmark = pytest.mark.anyio


class Wrapped(Exception):
    """Shaped like SQLAlchemy's DBAPIError: the driver's error in ``orig``."""

    def __init__(self, orig: Exception) -> None:
        super().__init__(str(orig))
        self.orig = orig


CONFLICTS = [
    asyncpg.SerializationError("OC000: mutation conflicts with another transaction"),
    psycopg.errors.SerializationFailure("OC001: schema has been updated"),
    Wrapped(psycopg.errors.SerializationFailure("could not serialize access")),
]


class Transaction:
    def __init__(self, *outcomes: Exception | str) -> None:
        self.outcomes = list(outcomes)
        self.runs = 0

    async def __call__(self) -> str:
        self.runs += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.mark.parametrize("conflict", CONFLICTS, ids=["asyncpg", "psycopg", "sqlalchemy"])
async def test_a_conflict_runs_the_transaction_again_until_it_commits(conflict: Exception) -> None:
    transaction = Transaction(conflict, conflict, "committed")

    assert await retry_serialization(transaction) == "committed"
    assert transaction.runs == 3


async def test_the_conflict_is_raised_after_the_last_attempt() -> None:
    conflict = CONFLICTS[0]
    transaction = Transaction(conflict, conflict, conflict, "never")

    with pytest.raises(asyncpg.SerializationError):
        await retry_serialization(transaction, attempts=3)

    assert transaction.runs == 3


@pytest.mark.parametrize(
    "error",
    [asyncpg.UniqueViolationError("duplicate key"), psycopg.OperationalError("gone"), KeyError()],
)
async def test_other_errors_are_raised_at_once(error: Exception) -> None:
    transaction = Transaction(error, "never")

    with pytest.raises(type(error)):
        await retry_serialization(transaction)

    assert transaction.runs == 1


@pytest.mark.parametrize("attempts", [0, -1, 1.5, True, "3"])
async def test_attempts_must_be_a_whole_number_of_at_least_one(attempts: object) -> None:
    transaction = Transaction("never")

    with pytest.raises(ConfigError) as caught:
        await retry_serialization(transaction, attempts=attempts)  # type: ignore[arg-type]

    assert caught.value.fields == ["attempts"]
    assert transaction.runs == 0
