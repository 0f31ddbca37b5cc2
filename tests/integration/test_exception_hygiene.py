"""Issue 12, finding 6: the exceptions iampool raises hold no secret and end.

A refused login, a server without TLS, a certificate that does not verify: for each driver, the
error that reaches the caller is searched, chain, attributes and every traceback frame's locals
(``tests/secrets_reach.py``), for the tokens the gateway received or iampool minted. None may be
found there, and no ``__cause__``/``__context__`` chain may loop. The server's refusal text stays
in the message.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import pytest

import iampool
from iampool import AuthTokenRejected, ConnectThrottled, CredentialCache, TlsNotOfferedError
from iampool.testing import FakeAws, IamDatabase, IamGateway
from tests.secrets_reach import chain_cycle, search_secrets, secret_paths
from tests.users import APP

pytestmark = pytest.mark.anyio

log = logging.getLogger("hygiene")  # what was searched; --log-cli-level=INFO shows it

UPSTREAMS = {
    "postgresql": os.environ.get(
        "IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
}
# DSN scheme of each driver, and the wire protocol its gateway speaks.
DRIVERS = {
    "asyncpg": ("postgresql", "postgresql"),
    "psycopg": ("postgresql+psycopg", "postgresql"),
    "aiomysql": ("mysql+aiomysql", "mysql"),
    "asyncmy": ("mysql+asyncmy", "mysql"),
}


class RecordingGateway(IamGateway):
    """An IAM gateway that keeps every password it was sent, to search errors for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets: list[str] = []

    async def admit(self, user: str, secret: str, database: str | None) -> Any:
        self.secrets.append(secret)
        return await super().admit(user, secret, database)


@pytest.fixture(params=list(DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(driver: str, request: pytest.FixtureRequest) -> IamDatabase:
    """The session database of the driver's engine, for its aws_iam block and login user."""
    protocol = DRIVERS[driver][1]
    fixture = "iam_postgres" if protocol == "postgresql" else "iam_mysql"
    found: IamDatabase = request.getfixturevalue(fixture)
    return found


@pytest.fixture
def gateway(driver: str, fake_aws: FakeAws) -> Iterator[RecordingGateway]:
    gateway = RecordingGateway(
        DRIVERS[driver][1],  # type: ignore[arg-type]
        upstream=UPSTREAMS[DRIVERS[driver][1]],
        authority=fake_aws,
    )
    with gateway:
        gateway.ensure_user(APP)
        yield gateway


@pytest.fixture
async def cache() -> AsyncIterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    await cache.aclose()


def dsn_for(driver: str, gateway: IamGateway) -> str:
    return f"{DRIVERS[driver][0]}://{gateway.dsn(APP).split('://', 1)[1]}"


async def failure_of(connecting: Awaitable[Any]) -> BaseException:
    """What ``connecting`` raised, caught in a frame that holds nothing else (the test's own
    frame, where the exception would otherwise be caught, holds the secrets searched for)."""
    try:
        result = await connecting
    except BaseException as exc:
        return exc
    await close(result)
    raise AssertionError(f"no error: {result!r}")


async def close(pool_or_connection: Any) -> None:
    outcome = pool_or_connection.close()
    if hasattr(outcome, "__await__"):
        await outcome
    if hasattr(pool_or_connection, "wait_closed"):
        await pool_or_connection.wait_closed()


async def minted_token(database: IamDatabase, gateway: IamGateway, cache: CredentialCache) -> str:
    """The token iampool holds for the gateway's endpoint (the one a failed connect used)."""
    auth = iampool.auth_for(database.config, host=gateway.host, port=gateway.port, cache=cache)
    return (await auth.credentials()).password


def open_with(api: str, driver: str, dsn: str, database: IamDatabase, cache: Any) -> Any:
    if api == "connect":
        return iampool.connect(dsn, aws_iam=database.config, cache=cache)
    extra = {"timeout": 20} if driver == "psycopg" else {}
    return iampool.create_pool(
        dsn, aws_iam=database.config, cache=cache, min_size=1, max_size=1, **extra
    )


@pytest.mark.parametrize("api", ["connect", "create_pool"])
async def test_a_token_refused_twice_raises_an_error_that_reaches_neither_token(
    driver: str,
    api: str,
    database: IamDatabase,
    gateway: RecordingGateway,
    cache: CredentialCache,
) -> None:
    gateway.reject_next(2)

    error = await failure_of(open_with(api, driver, dsn_for(driver, gateway), database, cache))

    assert isinstance(error, AuthTokenRejected), repr(error)
    assert len(gateway.secrets) == 2  # the first token and the freshly minted one
    search = search_secrets(error, gateway.secrets)
    log.info(
        "%s %s: %d exceptions, %d frames, %d texts searched; %d secrets found",
        driver, api, search.exceptions, search.frames, search.texts, len(search.found),
    )  # fmt: skip
    assert search.found == []
    assert chain_cycle(error) is None
    expected = (
        "PAM authentication failed"
        if "postgresql" in dsn_for(driver, gateway)
        else ("Access denied")
    )
    assert expected in error.server_message
    assert expected in str(error)  # the server's refusal, in iampool's message
    assert error.__cause__ is not None  # the driver's own error stays, without its frames
    assert error.__cause__.__traceback__ is None


async def test_a_login_throttled_to_the_end_raises_connect_throttled_without_the_token(
    driver: str, database: IamDatabase, gateway: RecordingGateway, cache: CredentialCache
) -> None:
    gateway.limit(login_rate=0, session_lifetime=None)  # every login refused as throttled
    dsn = dsn_for(driver, gateway)

    error = await failure_of(
        iampool.connect(dsn, aws_iam=database.config, cache=cache, connect_timeout=1)
    )

    assert isinstance(error, ConnectThrottled), repr(error)
    assert len(gateway.secrets) == error.tries >= 2
    assert len(set(gateway.secrets)) == 1  # the same token each time: never invalidated
    assert search_secrets(error, gateway.secrets).found == []
    assert chain_cycle(error) is None
    assert "too many competing requests" in error.server_message
    assert error.__cause__ is not None
    assert error.__cause__.__traceback__ is None


@pytest.fixture
def plain_gateway(driver: str, fake_aws: FakeAws) -> Iterator[RecordingGateway]:
    """A gateway that does not offer TLS (a proxy that strips it, a wrong endpoint)."""
    protocol = DRIVERS[driver][1]
    gateway = RecordingGateway(
        protocol,  # type: ignore[arg-type]
        upstream=UPSTREAMS[protocol],
        authority=fake_aws,
        offer_tls=False,
    )
    with gateway:
        gateway.ensure_user(APP)
        yield gateway


async def test_a_server_without_tls_gets_a_tls_not_offered_error_without_a_cycle_or_the_token(
    driver: str, database: IamDatabase, plain_gateway: RecordingGateway, cache: CredentialCache
) -> None:
    # sslmode=require: the gateway has no certificate to verify against.
    dsn = dsn_for(driver, plain_gateway) + "?sslmode=require"

    error = await failure_of(iampool.connect(dsn, aws_iam=database.config, cache=cache))

    assert isinstance(error, TlsNotOfferedError), repr(error)
    assert chain_cycle(error) is None
    token = await minted_token(database, plain_gateway, cache)  # the one the attempt held
    assert secret_paths(error, [token]) == []
    assert plain_gateway.secrets_seen_in_plaintext == ()


@pytest.mark.parametrize("driver", ["aiomysql", "asyncmy"])
async def test_a_mysql_certificate_failure_names_the_certificate_problem(
    driver: str, database: IamDatabase, gateway: RecordingGateway, cache: CredentialCache
) -> None:
    system_ca = ssl.get_default_verify_paths().openssl_cafile  # did not sign the gateway
    dsn = (
        dsn_for(driver, gateway).split("?", 1)[0] + f"?sslmode=verify-full&sslrootcert={system_ca}"
    )

    error = await failure_of(iampool.connect(dsn, aws_iam=database.config, cache=cache))

    assert error.args[0] == 2003, repr(error)  # the driver's own "Can't connect" error
    assert "certificate verify failed" in str(error)
    assert "sslrootcert" in str(error)  # and what to check
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert chain_cycle(error) is None
    token = await minted_token(database, gateway, cache)
    assert secret_paths(error, [token]) == []
    assert gateway.accepted == 0


async def test_the_search_finds_a_token_in_a_driver_error_that_was_not_cleaned(
    fake_aws: FakeAws, iam_mysql: IamDatabase, cache: CredentialCache
) -> None:
    """The search itself works: aiomysql's own error for a refused token reaches the token (in
    its frames' locals), which is what iampool's errors must not do."""
    import aiomysql

    gateway = iam_mysql.gateway
    token = await minted_token(iam_mysql, gateway, cache)
    gateway.reject_next(1)

    error = await failure_of(
        aiomysql.connect(
            host=gateway.host,
            port=gateway.port,
            user=APP,
            password=token,
            ssl=gateway.client_ssl_context(),
            auth_plugin="mysql_clear_password",
        )
    )

    assert "Access denied" in str(error)
    found = secret_paths(error, [token])
    log.info("aiomysql's own error: the token found at %d places: %s", len(found), found)
    assert found, "the search missed the token in aiomysql's frames"
    assert any("local" in where for where in found)


# --- the boundary itself, on hand-made chains ---------------------------------------------------


def raised(make: Any) -> BaseException:
    try:
        make()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing raised")


def test_detached_drops_every_traceback_and_cuts_a_cycle() -> None:
    from iampool._errors import detached

    def inner() -> None:
        password = "s3cret-token-value-0123456789"
        raise ValueError(len(password))

    def outer() -> None:  # what aiomysql and iampool's re-raise of its cause used to do
        try:
            try:
                inner()
            except ValueError as exc:
                raise RuntimeError("can't connect") from exc
        except RuntimeError as wrapper:
            cause: Any = wrapper.__cause__
            raise cause  # noqa: B904 - its __context__ becomes the wrapper: the loop

    error = raised(outer)
    assert chain_cycle(error) is not None
    assert secret_paths(error, ["s3cret-token-value-0123456789"]) != []

    assert detached(error) is error
    assert chain_cycle(error) is None
    assert secret_paths(error, ["s3cret-token-value-0123456789"]) == []
    assert isinstance(error.__context__, RuntimeError)  # the chain is kept, only frames go
    assert error.__context__.__traceback__ is None


def test_detached_drops_the_context_an_error_raised_from_none_declared_irrelevant() -> None:
    from iampool._errors import detached

    def make() -> None:
        try:
            raise OSError("rejected SSL upgrade")
        except OSError:
            raise TlsNotOfferedError("no TLS") from None

    error = detached(raised(make))

    assert error.__context__ is None
    assert error.__cause__ is None


def test_detached_ends_on_a_long_chain_and_visits_a_shared_cause_once() -> None:
    from iampool._errors import detached

    error: BaseException = ValueError(0)
    for number in range(1, 200):  # each one's cause and context are the previous one
        newer = ValueError(number)
        newer.__cause__ = newer.__context__ = error
        error = newer

    detached(error)  # 2**200 paths if shared exceptions were walked twice

    length = 0
    link: BaseException | None = error
    while link is not None:
        length += 1
        link = link.__cause__
    assert length <= 64
