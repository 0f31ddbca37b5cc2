"""Shared test configuration.

- anyio runs async tests on asyncio unless a test asks for trio.
- Every test's ``iampool`` log (DEBUG and up, testing kit included) is checked for secrets at
  teardown (DESIGN §4 invariant 6): the secret keys, session tokens and Redshift passwords the
  session's ``fake_aws`` issued, and anything that looks like an RDS auth token. New code is
  covered without asking; a test that logged nothing costs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from iampool.testing import FakeAws

RDS_TOKEN_MARK = "X-Amz-Signature="


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _LogRecords(logging.Handler):
    """Keeps every record it sees, from any thread, until taken."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._records: list[logging.LogRecord] = []
        self._taken = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._taken:
            self._records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._taken:
            records, self._records = self._records, []
        return records


_issuers: list[FakeAws] = []


@pytest.fixture(scope="session")
def fake_aws(fake_aws: FakeAws) -> FakeAws:
    """The plugin's ``fake_aws``, remembered so that the log check knows what it issued."""
    _issuers.append(fake_aws)
    return fake_aws


@pytest.fixture(scope="session", autouse=True)
def iampool_log() -> Iterator[_LogRecords]:
    logger = logging.getLogger("iampool")
    handler = _LogRecords()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def _no_secret_in_the_log(iampool_log: _LogRecords) -> Iterator[None]:
    yield
    records = iampool_log.take()
    if not records:
        return
    render = logging.Formatter("%(name)s %(levelname)s %(message)s").format
    leaked = leaked_secrets("\n".join(render(record) for record in records))  # with tracebacks
    assert not leaked, f"secrets in the iampool log: {', '.join(leaked)}"


def leaked_secrets(text: str) -> list[str]:
    """What ``text`` gives away (described, never quoted): secrets the session's FakeAws issued
    and RDS auth tokens."""
    secrets = [secret for aws in _issuers for secret in aws.issued_secrets()]
    leaked = [f"secret #{n} FakeAws issued" for n, secret in enumerate(secrets) if secret in text]
    if RDS_TOKEN_MARK in text:
        leaked.append("an RDS auth token")
    return leaked
