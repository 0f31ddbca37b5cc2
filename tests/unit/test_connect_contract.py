"""Issue 20, the connect contract: the parts that need no server (black box: public API only).

Every mistake here is a ``ConfigError`` naming the field, raised before any AWS call (the fake
source saw no call and the cache holds nothing, so no background mint was started either):

- an invalid ``connect_timeout``, as a keyword of any driver or in a postgresql/mysql DSN
  (contract item 1); a valid one is taken by every driver;
- an invalid ``connect_rate``, through every entry point (item 5);
- driver options that move or leak bytes: psycopg's ``sslkeylogfile`` and ``hostaddr``,
  redshift-connector's ``unix_sock`` (item 3);
- error text: an example DSN that echoes other query parameters' values, a password with an
  unencoded ``/ ? #`` quoted back (item 4);
- a scheme no driver serves (item 6).

Each test here failed on the connect path before the rewrite (9af94da), where it was marked
``xfail(strict=True)``; the marks went when the rewrite landed.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import iampool
import iampool.aiomysql
import iampool.asyncmy
import iampool.asyncpg
import iampool.psycopg
import iampool.redshift
import iampool.sqlalchemy
from iampool import ConfigError, CredentialCache

from .fakes import FakeSource
from .test_early_errors import RDS, REDSHIFT

pytestmark = pytest.mark.anyio

HOST = "db.cluster-abc.us-east-1.rds.amazonaws.com"
DRIVERS = ["asyncpg", "psycopg", "aiomysql", "asyncmy", "redshift"]
SCHEMES = {
    "asyncpg": "postgresql",
    "psycopg": "postgresql+psycopg",
    "aiomysql": "mysql+aiomysql",
    "asyncmy": "mysql+asyncmy",
    "redshift": "redshift",
}
TYPED = {
    "asyncpg": iampool.asyncpg,
    "psycopg": iampool.psycopg,
    "aiomysql": iampool.aiomysql,
    "asyncmy": iampool.asyncmy,
    "redshift": iampool.redshift,
}


def closed_port() -> int:
    """A loopback port nothing listens on (a connect there is refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def dsn_for(driver: str, query: str = "", port: int = 9) -> str:
    database = "dev" if driver == "redshift" else "db"
    user = "" if driver == "redshift" else "app@"
    return f"{SCHEMES[driver]}://{user}127.0.0.1:{port}/{database}{'?' + query if query else ''}"


def block_for(driver: str) -> dict[str, Any]:
    return REDSHIFT if driver == "redshift" else RDS


async def close_quietly(opened: Any) -> None:
    """Close what an entry point returned when it was expected to refuse (today's code)."""
    if opened is None or callable(opened):  # nothing, or an async_creator's creator
        return
    wait_closed = getattr(opened, "wait_closed", None)
    if wait_closed is not None:  # aiomysql's interface: close(), then wait_closed()
        opened.close()
        await wait_closed()
    else:
        result = opened.close()
        if isinstance(result, Awaitable):
            await result


Opening = Callable[..., Awaitable[Any]]


def entry(driver: str, api: str) -> Opening:
    """An entry point as one awaitable call: ``connect``, ``create_pool`` (``min_size=0``, so
    a pool that should not exist opens nothing), the typed module's (``typed.connect``,
    ``typed.create_pool``) or an ``async_creator`` (made, not called)."""

    async def opening(dsn: str, **kwargs: Any) -> Any:
        if api == "connect":
            return await iampool.connect(dsn, **kwargs)
        if api == "create_pool":
            return await iampool.create_pool(dsn, min_size=0, **kwargs)
        if api == "typed.connect":
            return await TYPED[driver].connect(dsn, **kwargs)
        if api == "typed.create_pool":
            return await TYPED[driver].create_pool(dsn, min_size=0, **kwargs)
        assert api == "async_creator"
        return iampool.sqlalchemy.async_creator(dsn, **kwargs)

    return opening


ENTRIES = [
    (driver, api)
    for driver in DRIVERS
    for api in ("connect", "create_pool", "typed.connect", "typed.create_pool", "async_creator")
    if not (driver == "redshift" and api == "async_creator")  # SQLAlchemy's are synchronous
]


async def refused(opening: Opening, dsn: str, **kwargs: Any) -> ConfigError:
    """The ConfigError ``opening`` raises; what it returned instead is closed, then the test
    fails."""
    try:
        opened = await opening(dsn, **kwargs)
    except ConfigError as exc:
        return exc
    await close_quietly(opened)
    pytest.fail(f"no ConfigError: {type(opened).__name__} returned")


async def failure_of(opening: Awaitable[Any]) -> Exception | None:
    """What ``opening`` raised; ``None`` (after closing what it opened) if it raised nothing."""
    try:
        opened = await opening
    except Exception as exc:  # the caller judges it
        return exc
    await close_quietly(opened)
    return None


def assert_no_aws_call(source: FakeSource, cache: CredentialCache) -> None:
    assert source.calls == Counter()
    assert cache.stats()["size"] == 0  # nor was a mint started in the background


# -- items 1 and 5: connect_timeout, connect_rate --------------------------------------------

BAD_TIMEOUTS = [0, -1, float("nan"), float("inf"), "abc", True]
BAD_TIMEOUT_TEXTS = ["0", "-1", "nan", "inf", "abc", ""]


BAD_RATES = [0, -1, float("nan"), float("inf"), "5", True]
BAD_NUMBERS = [("connect_timeout", value) for value in BAD_TIMEOUTS] + [
    ("connect_rate", value) for value in BAD_RATES
]


@pytest.mark.parametrize(("field", "value"), BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize(("driver", "api"), ENTRIES)
async def test_an_invalid_connect_timeout_or_rate_is_a_config_error_before_any_aws_call(
    driver: str, api: str, field: str, value: Any, cache: CredentialCache, source: FakeSource
) -> None:
    # items 1 and 5 of the contract
    error = await refused(
        entry(driver, api), dsn_for(driver), aws_iam=block_for(driver), cache=cache,
        **{field: value},
    )  # fmt: skip

    assert error.fields == [field]
    # refused as a bad value, not as a keyword the driver does not take (asyncpg, Redshift)
    assert "is not a keyword" not in str(error)
    assert_no_aws_call(source, cache)


@pytest.mark.parametrize("text", BAD_TIMEOUT_TEXTS, ids=repr)
@pytest.mark.parametrize(
    "driver",
    ["asyncpg", "psycopg", "aiomysql", "asyncmy"],
)
async def test_an_invalid_connect_timeout_in_the_dsn_is_a_config_error(
    driver: str, text: str, cache: CredentialCache, source: FakeSource
) -> None:
    error = await refused(
        entry(driver, "connect"), dsn_for(driver, f"connect_timeout={text}"), aws_iam=RDS,
        cache=cache,
    )  # fmt: skip

    assert error.fields == ["connect_timeout"]
    assert_no_aws_call(source, cache)


@pytest.mark.parametrize(
    "driver",
    DRIVERS,
)
async def test_a_valid_connect_timeout_keyword_is_taken_by_every_driver(
    driver: str, cache: CredentialCache
) -> None:
    # A refused port: the attempt fails on the network, not on the keyword.
    error = await failure_of(
        iampool.connect(
            dsn_for(driver, port=closed_port()), aws_iam=block_for(driver), cache=cache,
            connect_timeout=2.5,
        )
    )  # fmt: skip

    assert error is not None
    assert not isinstance(error, ConfigError), str(error)


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg", "aiomysql", "asyncmy"])
async def test_a_valid_connect_timeout_in_the_dsn_is_taken(
    driver: str, cache: CredentialCache
) -> None:
    error = await failure_of(
        iampool.connect(
            dsn_for(driver, "connect_timeout=2.5", port=closed_port()), aws_iam=RDS, cache=cache
        )
    )

    assert error is not None
    assert not isinstance(error, ConfigError), str(error)
    assert "connect_timeout" not in str(error)


def test_login_timeout_error_is_an_iampool_error_and_a_timeout_error() -> None:
    error = iampool.LoginTimeoutError
    assert issubclass(error, iampool.IamPoolError)
    assert issubclass(error, TimeoutError)
    assert "LoginTimeoutError" in iampool.__all__


# -- item 3: options that move or leak bytes --------------------------------------------------

REFUSED_OPTIONS = [
    pytest.param(
        "psycopg", "sslkeylogfile=/tmp/keys.log", {}, "sslkeylogfile",
        id="psycopg-dsn-sslkeylogfile",
    ),
    pytest.param(
        "psycopg", "", {"sslkeylogfile": "/home/app/keys.log"}, "sslkeylogfile",
        id="psycopg-keyword-sslkeylogfile",
    ),
    pytest.param("psycopg", "hostaddr=10.0.0.1", {}, "hostaddr", id="psycopg-dsn-hostaddr"),
    pytest.param(
        "psycopg", "", {"hostaddr": "10.0.0.1"}, "hostaddr", id="psycopg-keyword-hostaddr"
    ),
    pytest.param(
        "redshift", "", {"unix_sock": "/var/run/redshift/.s.PGSQL.5439"}, "unix_sock",
        id="redshift-keyword-unix_sock",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("driver", "query", "kwargs", "field"), REFUSED_OPTIONS)
@pytest.mark.parametrize("api", ["connect", "create_pool"])
async def test_an_option_that_moves_or_leaks_bytes_is_refused_before_any_aws_call(
    driver: str,
    query: str,
    kwargs: dict[str, Any],
    field: str,
    api: str,
    cache: CredentialCache,
    source: FakeSource,
) -> None:
    if driver == "psycopg" and api == "create_pool" and kwargs:
        kwargs = {"kwargs": kwargs}  # psycopg_pool's connection settings

    error = await refused(
        entry(driver, api), dsn_for(driver, query), aws_iam=block_for(driver), cache=cache,
        **kwargs,
    )  # fmt: skip

    assert [name for name in error.fields if name.rpartition(".")[2] == field]
    assert_no_aws_call(source, cache)


# -- item 4: error text ----------------------------------------------------------------------

SECRET_QUERY = "sslpassword=S3CRET-A&oauth_client_secret=S3CRET-B"


@pytest.mark.parametrize("keyword", ["host", "port", "database", "user"])
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_an_example_dsn_in_an_error_never_echoes_other_query_values(
    driver: str, keyword: str, cache: CredentialCache, source: FakeSource
) -> None:
    value: Any = 5432 if keyword == "port" else "elsewhere"
    error = await refused(
        entry(driver, "connect"), dsn_for(driver, SECRET_QUERY), aws_iam=RDS, cache=cache,
        **{keyword: value},
    )  # fmt: skip

    assert keyword in error.fields
    assert "://" in str(error)  # the message still shows where the setting goes
    for shown in (str(error), repr(error)):
        assert "S3CRET-A" not in shown
        assert "S3CRET-B" not in shown
    assert_no_aws_call(source, cache)


PASSWORDS = [
    ("postgresql", "Xq7/Zk9"),
    ("postgresql", "Xq7?Zk9"),
    ("postgresql", "Xq7#Zk9"),
    ("postgresql", "Xq7/Zk9?Wm3#Vb8"),
    ("postgresql+psycopg", "Jd4?Hy6/Pt2"),
    ("mysql", "Rn5#Gc1"),
    ("mysql+asyncmy", "Lw8/Qe4"),
]


def fragments(password: str) -> set[str]:
    return {password[i : i + 3] for i in range(len(password) - 2)}


@pytest.mark.parametrize(("scheme", "password"), PASSWORDS)
async def test_a_password_with_unencoded_separators_is_refused_without_quoting_it(
    scheme: str, password: str, cache: CredentialCache, source: FakeSource
) -> None:
    dsn = f"{scheme}://app:{password}@{HOST}:5432/db"

    error = await refused(entry("asyncpg", "connect"), dsn, aws_iam=RDS, cache=cache)

    for shown in (str(error), repr(error)):
        leaked = sorted(piece for piece in fragments(password) if piece in shown)
        assert not leaked, f"password fragments {leaked} in {shown!r}"
    assert_no_aws_call(source, cache)


# -- item 6: a scheme no driver serves -------------------------------------------------------

UNKNOWN_SCHEMES = [
    "cockroachdb://app@127.0.0.1:26257/db",
    "postgresql+pg8000://app@127.0.0.1:5432/db",
    "mysql+pymysql://app@127.0.0.1:3306/db",
    "redshift+psycopg2://127.0.0.1:5439/dev",
    "mssql://app@127.0.0.1:1433/db",
    "asyncpg://app@127.0.0.1:5432/db",
]


@pytest.mark.parametrize("dsn", UNKNOWN_SCHEMES)
@pytest.mark.parametrize(
    ("driver", "api"),
    [(None, "connect"), (None, "create_pool"), (None, "async_creator")]
    + [(driver, "typed.create_pool") for driver in DRIVERS],
)
async def test_a_scheme_mapped_to_no_driver_is_a_config_error_naming_the_schemes(
    dsn: str, driver: str | None, api: str, cache: CredentialCache, source: FakeSource
) -> None:
    block = REDSHIFT if dsn.startswith("redshift") else RDS

    error = await refused(entry(driver or "asyncpg", api), dsn, aws_iam=block, cache=cache)

    assert error.fields == ["dsn"]
    message = str(error)
    for supported in ("postgresql://", "postgresql+psycopg://", "mysql+asyncmy://", "redshift://"):
        assert supported in message
    assert_no_aws_call(source, cache)
