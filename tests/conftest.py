"""Shared test configuration.

- anyio runs async tests on asyncio unless a test asks for trio.
- Every test's log is checked for secrets at teardown (DESIGN §4 invariants 6 and 11): every
  logger at DEBUG (the root logger's level and a handler on it, so botocore, aiobotocore, asyncio
  and the testing kit are read along with ``iampool``), rendered with tracebacks, searched for
  each secret the session's ``fake_aws`` issued (secret keys, session tokens, Redshift
  passwords) and each ExternalId it received, raw, URL-encoded (``quote``, ``quote_plus``) and
  JSON-escaped; for the signature of every token iampool signed in this process; and for
  anything that looks like an RDS auth token. New code is covered without asking.
- The cost stays small: a record is kept as its message (what pytest's own capture formats
  anyway), searched at teardown only if the test logged anything, the forms of each secret
  computed once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote_plus

import pytest

from iampool import _redact, _sigv4
from iampool.testing.plugin import login_user_of
from tests import users

if TYPE_CHECKING:
    from iampool.testing import FakeAws

# The mark followed by a value (raw or URL-encoded), unless the value is the redaction marker.
_TOKEN_SIGNATURE = re.compile(r"X-Amz-Signature(?:=|%3D)(?!\[REDACTED\]|%5BREDACTED%5D)\w")
_HEX_64 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
_SHORTEST_EXTERNAL_ID = 8  # shorter ones ("!") would be found in any text
_FORMS = (
    "",
    " (URL-encoded)",
    " (URL-encoded)",
    " (URL-encoded, plus for space)",
    " (JSON-escaped)",
)


def pytest_configure(config: pytest.Config) -> None:
    """The gateways the tests start log in as the run's login user, as the fixtures do."""
    users.use(login_user_of(config))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _LogRecords(logging.Handler):
    """Keeps every record it sees, from any thread, until taken: as text only.

    Each record is kept as a copy holding its message and traceback as text, not its arguments
    and exception: a record that kept them would keep objects alive (a traceback's frames hold
    sockets) past the garbage collection that reports unclosed ones in the test that left them.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._records: list[logging.LogRecord] = []
        self._taken = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.levelno < logging.WARNING and (
            record.exc_info or any(isinstance(arg, BaseException) for arg in record.args or ())
        ):
            # pytest's own capture keeps a test's records until its teardown has run, garbage
            # collection included. A DEBUG record (logged only since the root logger is at
            # DEBUG) that holds an exception would keep the frames of its traceback, and their
            # sockets, alive until then: the next test would report them unclosed. Handlers
            # after this one (pytest's) get it as text.
            record.msg, record.args = message, None
            record.exc_info, record.exc_text = None, exc_text
        copy = logging.makeLogRecord(
            {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": message,
                "exc_text": exc_text,
                "stack_info": record.stack_info,
            }
        )
        with self._taken:
            self._records.append(copy)

    def take(self) -> list[logging.LogRecord]:
        with self._taken:
            records, self._records = self._records, []
        return records


_TRACEBACKS = logging.Formatter()
_issuers: list[FakeAws] = []
_signatures: set[str] = set()  # hex signatures of the tokens iampool signed in this process
_checked: Counter[str] = Counter()  # what the teardown check read, for the terminal summary


@pytest.fixture(scope="session")
def fake_aws(fake_aws: FakeAws) -> FakeAws:
    """The plugin's ``fake_aws``, remembered so that the log check knows what it issued."""
    _issuers.append(fake_aws)
    return fake_aws


@pytest.fixture(scope="session", autouse=True)
def iampool_log() -> Iterator[_LogRecords]:
    """Every record of every logger at DEBUG and up, for the teardown check (the name is the
    one it had when it read only the ``iampool`` logger)."""
    root = logging.getLogger()
    handler = _LogRecords()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    presign = _sigv4.presign
    _sigv4.presign = _recording_signatures(presign)  # looked up at each call: every token
    # Some tests call botocore themselves (its signers are the reference iampool's tokens are
    # compared with); redacted as iampool's own calls are, from the first test on, not only
    # once some test has built an AWS source. tests/integration/test_log_redaction.py checks
    # that iampool installs the filter by itself, in processes of its own.
    _redact.install()
    yield handler
    _sigv4.presign = presign
    root.removeHandler(handler)
    root.setLevel(level)


def _recording_signatures(presign: Callable[..., _sigv4.Presigned]) -> Any:
    @functools.wraps(presign)
    def recorded(*args: Any, **kwargs: Any) -> _sigv4.Presigned:
        token = presign(*args, **kwargs)
        _signatures.add(token.signature.hex())
        return token

    return recorded


@pytest.fixture(autouse=True)
def _no_secret_in_the_log(iampool_log: _LogRecords) -> Iterator[None]:
    yield
    records = iampool_log.take()
    if not records:
        return
    started = time.perf_counter()
    text = render(records)
    leaked = leaked_secrets(text)
    _checked.update(
        tests=1, records=len(records), characters=len(text), leaks=len(leaked),
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    _checked["secrets"] = max(_checked["secrets"], len(issued_secrets()))
    _checked["signatures"] = len(_signatures)
    assert not leaked, f"secrets in the log ({len(records)} records): {', '.join(leaked)}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """With ``IAMPOOL_LOG_CHECK_STATS=1``: what the log check read and what it cost."""
    if os.environ.get("IAMPOOL_LOG_CHECK_STATS") and _checked["tests"]:
        terminalreporter.write_line(
            "log check: {tests:.0f} tests with records, {records:.0f} records, "
            "{characters:.0f} characters, up to {secrets:.0f} secrets (x5 forms) and "
            "{signatures:.0f} token signatures searched, {leaks:.0f} found, "
            "{seconds:.2f} s".format_map(_checked)
        )


_render = logging.Formatter("%(name)s %(levelname)s %(message)s").format


def render(records: Iterable[logging.LogRecord]) -> str:
    """The records as a handler would write them, tracebacks and stacks included."""
    return "\n".join(_render(record) for record in records)


@functools.cache
def _forms(secret: str) -> tuple[str, ...]:
    """``secret`` raw, URL-encoded (``quote`` with and without ``/`` safe, ``quote_plus``) and
    JSON-escaped, in the order of ``_FORMS``'s descriptions."""
    return (
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
    )


def issued_secrets() -> list[str]:
    """What the session's FakeAws issued, then the (long enough) ExternalIds it was sent."""
    secrets = [secret for aws in _issuers for secret in aws.issued_secrets()]
    external_ids = {
        str(params["ExternalId"])
        for aws in _issuers
        for params in list(aws.requests["AssumeRole"])
        if len(str(params.get("ExternalId") or "")) >= _SHORTEST_EXTERNAL_ID
    }
    return secrets + sorted(external_ids)


def leaked_secrets(text: str) -> list[str]:
    """What ``text`` gives away (described, never quoted): secrets the session's FakeAws issued
    and ExternalIds it received, in any form; signatures of tokens iampool signed; anything that
    looks like an RDS auth token."""
    leaked = []
    words = _words(text)
    for n, secret in enumerate(issued_secrets()):
        if len(secret) >= _SHORTEST_EXTERNAL_ID and _SECRET_CHARACTERS.fullmatch(secret):
            # Its JSON-escaped form is itself and its URL-encoded forms decode to it: it can only
            # be inside one of the words of the text or of the text URL-decoded.
            if secret in words:
                leaked.append(f"secret #{n} FakeAws issued (raw, URL-encoded or JSON-escaped)")
            continue
        for index, form in enumerate(_forms(secret)):
            if form in text:
                leaked.append(f"secret #{n} FakeAws issued{_FORMS[index]}")
                break
    if _signatures:
        signed = len({*_HEX_64.findall(text)} & _signatures)
        if signed:
            leaked.append(f"the signatures of {signed} tokens iampool signed")
    if _TOKEN_SIGNATURE.search(text):
        leaked.append("an RDS auth token")
    return leaked


# The characters of secrets that URL-encoding may change but JSON-escaping does not; a run of
# them is a "word". Searching each secret in the distinct words of a test's log, not in the whole
# log, keeps the check fast as secrets pile up over a session (botocore's DEBUG text repeats).
_SECRET_CHARACTERS = re.compile(r"[A-Za-z0-9+/=_.~-]+")
_WORD = re.compile(rf"[A-Za-z0-9+/=_.~-]{{{_SHORTEST_EXTERNAL_ID},}}")


def _words(text: str) -> str:
    """The distinct words of ``text`` and of ``text`` URL-decoded, one per line."""
    variants = [text, unquote_plus(text)] if "%" in text else [text]
    return "\n".join({word for variant in variants for word in _WORD.findall(variant)})
