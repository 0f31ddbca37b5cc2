"""The dialer: one retry with fresh credentials when the server refuses them, a bounded login,
the server's text on one line (ARCHITECTURE.md, "The dialer")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import anyio
import pytest

from iampool import (
    AuthTokenRejected,
    AwsIamConfig,
    ConnectThrottled,
    CredentialError,
    DbCredentials,
    IamPoolError,
    LoginTimeoutError,
)
from iampool.pools import aiomysql as mysql
from iampool.pools import asyncpg as postgres
from iampool.pools import redshift_connector as redshift
from iampool.pools._dialer import Backoff, Classify, ConnectRate, Dialer, Refusal
from iampool.pools._tls import Tls

pytestmark = pytest.mark.anyio

CONFIG = AwsIamConfig.from_extra({"enabled": True, "region": "us-east-1", "db_username": "app"})
TOKEN = "db.example.com:5432/?Action=connect&X-Amz-Signature=feedface"
ENDPOINT = "db.example.com:5432"
PAM_REFUSAL = 'PAM authentication failed for user "app"'


class FakeAuth:
    """A DbAuth minting numbered tokens and counting invalidations."""

    def __init__(self, error: Exception | None = None) -> None:
        self.minted = 0
        self.invalidations = 0
        self.error = error

    @property
    def config(self) -> AwsIamConfig:
        return CONFIG

    async def credentials(self) -> DbCredentials:
        if self.error is not None:
            raise self.error
        self.minted += 1
        return DbCredentials(
            user="app",
            password=f"{TOKEN}{self.minted}",
            host="db.example.com",
            port=5432,
            database=None,
            expires_at=datetime.now(timezone.utc) + timedelta(minutes=15),
        )

    def invalidate(self) -> None:
        self.invalidations += 1


class Refused(Exception):
    """What a driver raises when the server refuses the password (holds only its message)."""


def refusal(exc: BaseException) -> Refusal | None:
    return Refusal("rejected", str(exc)) if isinstance(exc, Refused) else None


class Server:
    """Answers each login with the next scripted outcome: "accept" or an exception to raise."""

    def __init__(self, auth: FakeAuth, *outcomes: str | BaseException) -> None:
        self.auth = auth
        self.outcomes = list(outcomes)
        self.passwords: list[str] = []
        self.events: list[str] = []

    async def attempt(self, credentials: DbCredentials) -> str:
        self.events.append("attempt")
        password = credentials.password
        self.passwords.append(password)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return f"connection with {password}"


class RecordingRate(ConnectRate):
    def __init__(self, events: list[str]) -> None:
        super().__init__(rate=1000, burst=1000)
        self.events = events

    async def wait(self) -> float:
        self.events.append("rate")
        return await super().wait()


def dialer(
    auth: FakeAuth,
    rate: ConnectRate | None = None,
    classify: Classify = refusal,
    timeout: float = 30.0,
) -> Dialer:
    return Dialer(
        auth=auth,
        classify=classify,
        timeout=timeout,
        rate=rate,
        tls=Tls("verify-full", "test CA"),
        endpoint=ENDPOINT,
        user="app",
    )


async def connect(server: Server, rate: ConnectRate | None = None) -> str:
    return await dialer(server.auth, rate).dial(server.attempt)


async def test_accepted_first_time_makes_one_attempt_and_keeps_the_cache() -> None:
    auth = FakeAuth()
    server = Server(auth, "accept")

    connection = await connect(server)

    assert connection == f"connection with {TOKEN}1"
    assert server.events == ["attempt"]
    assert auth.invalidations == 0


async def test_first_refusal_invalidates_once_and_retries_with_fresh_credentials() -> None:
    auth = FakeAuth()
    server = Server(auth, Refused(PAM_REFUSAL), "accept")

    connection = await connect(server)

    assert connection == f"connection with {TOKEN}2"
    assert server.passwords == [f"{TOKEN}1", f"{TOKEN}2"]
    assert auth.invalidations == 1


async def test_first_refusal_is_logged_as_a_warning_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server(FakeAuth(), Refused(PAM_REFUSAL), "accept")

    with caplog.at_level(logging.DEBUG, logger="iampool"):
        await connect(server)

    [record] = [record for record in caplog.records if record.name == "iampool"]
    assert record.levelno == logging.WARNING
    assert ENDPOINT in record.getMessage()
    assert "'app'" in record.getMessage()
    assert PAM_REFUSAL in record.getMessage()
    assert TOKEN not in caplog.text


async def test_two_refusals_raise_auth_token_rejected_with_the_servers_message() -> None:
    auth = FakeAuth()
    second = Refused("password authentication failed (second)")
    server = Server(auth, Refused(PAM_REFUSAL), second)

    with pytest.raises(AuthTokenRejected) as caught:
        await connect(server)

    error = caught.value
    assert error.server_message == "password authentication failed (second)"
    assert error.user == "app"
    assert error.endpoint == ENDPOINT
    assert error.__cause__ is second
    assert server.events == ["attempt", "attempt"]
    assert auth.invalidations == 2  # the refused fresh token is not kept either
    for text in (str(error), repr(error)):
        assert ENDPOINT in text
        assert "'app'" in text
        assert "second" in text
        assert TOKEN not in text


async def test_auth_token_rejected_message_says_what_to_check() -> None:
    server = Server(FakeAuth(), Refused(PAM_REFUSAL), Refused(PAM_REFUSAL))

    with pytest.raises(AuthTokenRejected, match="rds-db:connect") as caught:
        await connect(server)

    assert "rds_iam" in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("connection refused"),
        RuntimeError("protocol error"),
        CredentialError("AssumeRole denied", code="AccessDenied", target="role"),
    ],
)
async def test_other_errors_propagate_untouched_without_retry(error: Exception) -> None:
    auth = FakeAuth()
    server = Server(auth, error, "accept")

    with pytest.raises(type(error)) as caught:
        await connect(server)

    assert caught.value is error
    assert server.events == ["attempt"]
    assert auth.invalidations == 0


async def test_aws_failure_while_minting_credentials_is_not_retried() -> None:
    auth = FakeAuth(error=CredentialError("throttled", code="Throttling", target="role"))
    server = Server(auth, "accept")

    with pytest.raises(CredentialError, match="throttled"):
        await connect(server)

    assert server.events == []  # credentials come first: no login was attempted
    assert auth.invalidations == 0


async def test_refusal_then_other_error_propagates_the_other_error() -> None:
    auth = FakeAuth()
    reset = ConnectionResetError("reset")
    server = Server(auth, Refused(PAM_REFUSAL), reset)

    with pytest.raises(ConnectionResetError) as caught:
        await connect(server)

    assert caught.value is reset
    assert auth.invalidations == 1


async def test_rate_limiter_is_awaited_before_every_attempt() -> None:
    events: list[str] = []
    server = Server(FakeAuth(), Refused(PAM_REFUSAL), "accept")
    server.events = events

    await connect(server, rate=RecordingRate(events))

    assert events == ["rate", "attempt", "rate", "attempt"]


async def test_cancelled_attempt_is_not_retried_and_keeps_the_cache() -> None:
    auth = FakeAuth()
    attempts = 0

    async def hanging_attempt(credentials: DbCredentials) -> str:
        nonlocal attempts
        attempts += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: dialer(auth).dial(hanging_attempt))
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()

    assert attempts == 1
    assert auth.invalidations == 0


# --- what each driver's refusal looks like ---------------------------------------------------


class SqlStateError(Exception):
    """Shaped like an asyncpg PostgresError: a ``sqlstate`` attribute."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["28000", "28P01"])
def test_postgres_refusal_is_sqlstate_28000_or_28p01(sqlstate: str) -> None:
    assert postgres.classify(SqlStateError(PAM_REFUSAL, sqlstate)) == Refusal(
        "rejected", PAM_REFUSAL
    )


@pytest.mark.parametrize(
    "error", [SqlStateError("relation does not exist", "42P01"), OSError("refused")]
)
def test_postgres_other_errors_are_not_refusals(error: Exception) -> None:
    assert postgres.classify(error) is None


def test_postgres_refusal_recognises_real_asyncpg_errors() -> None:
    asyncpg = pytest.importorskip("asyncpg")

    refused = postgres.classify(asyncpg.InvalidPasswordError(PAM_REFUSAL))
    assert refused == Refusal("rejected", PAM_REFUSAL)
    assert postgres.classify(asyncpg.InvalidAuthorizationSpecificationError("no")) == Refusal(
        "rejected", "no"
    )
    assert postgres.classify(asyncpg.UndefinedTableError("missing")) is None


def test_mysql_refusal_is_error_1045() -> None:
    from pymysql.err import OperationalError

    message = "Access denied for user 'app'@'10.0.0.7' (using password: YES)"

    assert mysql.classify(OperationalError(1045, message)) == Refusal("rejected", message)
    assert mysql.classify(OperationalError(2003, "Can't connect to MySQL server")) is None
    assert mysql.classify(RuntimeError(1045, message)) is None


def test_redshift_refusal_is_an_auth_sqlstate_in_the_drivers_error_dict() -> None:
    refused = Exception({"S": "FATAL", "C": "28000", "M": 'password authentication failed for "x"'})
    other = Exception({"S": "ERROR", "C": "42P01", "M": "relation does not exist"})

    assert redshift.classify(refused) == Refusal(
        "rejected", 'password authentication failed for "x"'
    )
    assert redshift.classify(other) is None
    assert redshift.classify(Exception("plain message")) is None


def mysql_access_denied() -> Exception:
    from pymysql.err import OperationalError

    error: Exception = OperationalError(1045, "Access denied for user 'app'@'10.0.0.7'")
    return error


@pytest.mark.parametrize(
    ("driver_refusal", "make_error"),
    [
        (postgres.classify, lambda: SqlStateError(PAM_REFUSAL, "28P01")),
        (mysql.classify, mysql_access_denied),
    ],
)
async def test_each_drivers_refusal_triggers_the_one_retry(
    driver_refusal: Classify,
    make_error: Callable[[], Exception],
) -> None:
    auth = FakeAuth()
    server = Server(auth, make_error(), "accept")

    await dialer(auth, classify=driver_refusal).dial(server.attempt)

    assert server.events == ["attempt", "attempt"]
    assert auth.invalidations == 1


# --- bounded logins, throttling, the server's text -------------------------------------------


async def test_a_login_that_outlasts_connect_timeout_is_a_login_timeout_error_not_retried() -> None:
    auth = FakeAuth()
    attempts = 0

    async def silent_server(credentials: DbCredentials) -> str:
        nonlocal attempts
        attempts += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.fail_after(10), pytest.raises(LoginTimeoutError) as caught:
        await dialer(auth, timeout=0.05).dial(silent_server)

    assert attempts == 1
    assert auth.invalidations == 0  # the credentials were never judged
    assert caught.value.endpoint == ENDPOINT
    assert caught.value.timeout == 0.05
    assert "connect_timeout" in str(caught.value)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


async def test_a_drivers_own_timeout_is_a_login_timeout_error_too() -> None:
    server = Server(FakeAuth(), TimeoutError("driver gave up"), "accept")

    with pytest.raises(LoginTimeoutError):
        await connect(server)

    assert server.events == ["attempt"]


THROTTLES = [
    SqlStateError("too many connections for this cluster", "53400"),  # Aurora DSQL
    SqlStateError("PAM: too many competing requests", "28000"),  # RDS IAM authentication
]


class Pauses:
    """A Backoff's ``uniform``: the bounds it was asked for, and a scripted draw for each."""

    def __init__(self, *draws: float) -> None:
        self.draws = list(draws)
        self.bounds: list[float] = []

    def __call__(self, low: float, high: float) -> float:
        assert low == 0.0
        self.bounds.append(high)
        return self.draws.pop(0)


def throttling_dialer(auth: FakeAuth, pauses: Pauses, timeout: float = 30.0) -> Dialer:
    return replace(
        dialer(auth, classify=postgres.classify, timeout=timeout),
        backoff=Backoff(base=0.001, cap=0.004, uniform=pauses),
    )


@pytest.mark.parametrize("error", THROTTLES)
async def test_a_throttled_login_is_tried_again_with_the_same_credentials(
    error: Exception,
) -> None:
    auth = FakeAuth()
    server = Server(auth, error, error, "accept")
    pauses = Pauses(0.0, 0.0)

    connection = await throttling_dialer(auth, pauses).dial(server.attempt)

    assert postgres.classify(error) == Refusal("throttled", str(error))
    assert connection.startswith("connection with ")
    assert auth.invalidations == 0  # never a reason to mint new credentials
    assert server.events == ["attempt", "attempt", "attempt"]
    assert pauses.bounds == [0.001, 0.002]  # two pauses, the second bound doubled


async def test_a_login_still_throttled_when_the_budget_is_spent_is_connect_throttled() -> None:
    auth = FakeAuth()
    error = SqlStateError("too many connections for this cluster", "53400")
    server = Server(auth, error, error, error, error, "accept")
    # Three short pauses, then one longer than connect_timeout: no point waiting for it.
    pauses = Pauses(0.0, 0.0, 0.0, 60.0)

    with pytest.raises(ConnectThrottled) as caught:
        await throttling_dialer(auth, pauses, timeout=30.0).dial(server.attempt)

    assert caught.value.tries == 4
    assert caught.value.server_message == "too many connections for this cluster"
    assert caught.value.endpoint == ENDPOINT
    assert "still throttling logins after 4 tries" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert isinstance(caught.value, IamPoolError)
    assert not isinstance(caught.value, AuthTokenRejected)
    assert caught.value.__cause__ is error
    assert error.__traceback__ is None  # detached: its frames held the token
    assert auth.invalidations == 0
    assert server.events == ["attempt"] * 4
    assert pauses.bounds == [0.001, 0.002, 0.004, 0.004]  # capped


async def test_throttled_then_rejected_still_gets_the_one_retry_with_fresh_credentials() -> None:
    auth = FakeAuth()
    server = Server(
        auth,
        SqlStateError("too many connections for this cluster", "53400"),
        SqlStateError('PAM authentication failed for user "app"', "28P01"),
        "accept",
    )

    await throttling_dialer(auth, Pauses(0.0)).dial(server.attempt)

    assert auth.invalidations == 1
    assert server.events == ["attempt"] * 3


async def test_a_throttled_login_waits_for_the_rate_cap_before_each_try() -> None:
    auth = FakeAuth()
    server = Server(auth, THROTTLES[0], "accept")
    throttled = replace(
        dialer(auth, RecordingRate(server.events), classify=postgres.classify),
        backoff=Backoff(uniform=Pauses(0.0)),
    )

    await throttled.dial(server.attempt)

    assert server.events == ["rate", "attempt", "rate", "attempt"]


def test_backoff_doubles_from_base_up_to_cap_with_full_jitter() -> None:
    bounds = Backoff(base=0.05, cap=2.0, uniform=lambda low, high: high)
    drawn = Backoff(base=0.05, cap=2.0)

    assert [bounds.delay(n) for n in range(1, 9)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert bounds.delay(10_000) == 2.0  # no overflow however long it goes on
    samples = [drawn.delay(3) for _ in range(200)]
    assert all(0.0 <= sample <= 0.2 for sample in samples)
    assert len(set(samples)) > 100  # jittered, not one value


def test_text_only_drivers_recognise_both_throttles() -> None:
    import psycopg
    from pymysql.err import OperationalError

    from iampool.pools import psycopg as libpq

    rds = "FATAL:  too many competing requests"
    dsql = "FATAL:  connection rate exceeded (53400)"
    competing = "Access denied for user 'app' (too many competing requests)"

    assert libpq.classify(psycopg.OperationalError(rds)) == Refusal(
        "throttled", "too many competing requests"
    )
    assert libpq.classify(psycopg.OperationalError(dsql)) == Refusal(
        "throttled", "connection rate exceeded (53400)"
    )
    assert mysql.classify(OperationalError(1045, competing)) == Refusal("throttled", competing)


async def test_a_servers_refusal_reaches_logs_and_errors_on_one_line_without_escapes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forged = "bad\nWARNING iampool: all good\x1b[31m\r"
    server = Server(FakeAuth(), Refused(forged), Refused(forged))

    with (
        caplog.at_level(logging.DEBUG, logger="iampool"),
        pytest.raises(AuthTokenRejected) as caught,
    ):
        await connect(server)

    texts = [record.getMessage() for record in caplog.records if record.name == "iampool"] + [
        str(caught.value),
        caught.value.server_message,
    ]
    for text in texts:
        assert "\n" not in text
        assert "\r" not in text
        assert "\x1b" not in text
        assert "bad\\nWARNING" in text  # escaped, still readable
