"""MySQL DSN query options become driver keyword arguments; unknown ones are refused, and so
are options that would redirect or weaken a connection, from the DSN or keywords alike."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import iampool
from iampool import AwsIamConfig, ConfigError, CredentialCache
from iampool.pools._dsn import parse_target
from iampool.pools._mysql import _dsn_options

from .fakes import FakeSource

pytestmark = pytest.mark.anyio


def test_known_options_are_converted_to_aiomysql_types() -> None:
    settings = _dsn_options(
        {"charset": "utf8mb4", "autocommit": "true", "local_infile": "0", "connect_timeout": "2.5"}
    )
    assert settings == {
        "charset": "utf8mb4",
        "autocommit": True,
        "local_infile": False,
        "connect_timeout": 2.5,
    }


def test_unknown_and_malformed_options_are_all_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        _dsn_options({"chrset": "utf8", "autocommit": "maybe", "connect_timeout": "soon"})
    assert caught.value.fields == ["chrset", "autocommit", "connect_timeout"]
    assert "pass other aiomysql settings as keyword arguments" in str(caught.value)


# --- issue 12, finding 3: options that redirect or weaken a connection -------------------------

BLOCK = {
    "enabled": True,
    "region": "us-east-1",
    "role_arn": "arn:aws:iam::123456789012:role/app",
    "db_username": "app",
}
# Port 9 (discard): nothing listens there, so an accepted option fails later, differently.
ENDPOINT = "127.0.0.1:9"
LOCAL_FILES = 0x80


@pytest.mark.parametrize("scheme", ["mysql+aiomysql", "mysql+asyncmy"])
@pytest.mark.parametrize(
    ("query", "kwargs", "field", "reason"),
    [
        ("", {"read_default_file": "/etc/mysql/my.cnf"}, "read_default_file", "option file"),
        ("", {"read_default_group": "client"}, "read_default_group", "option file"),
        ("", {"unix_socket": "/run/mysqld/mysqld.sock"}, "unix_socket", "local socket"),
        ("", {"sock": object()}, "sock", "already connected"),
        ("", {"local_infile": True}, "local_infile", "LOAD DATA LOCAL INFILE"),
        ("", {"local_infile": "1"}, "local_infile", "LOAD DATA LOCAL INFILE"),
        ("", {"client_flag": LOCAL_FILES}, "client_flag", "CLIENT_LOCAL_FILES"),
        ("", {"client_flag": "2"}, "client_flag", "must be an integer"),
        ("?read_default_file=/tmp/evil.cnf", {}, "read_default_file", "option file"),
        ("?read_default_group=client", {}, "read_default_group", "option file"),
        ("?unix_socket=/tmp/evil.sock", {}, "unix_socket", "local socket"),
        ("?local_infile=1", {}, "local_infile", "LOAD DATA LOCAL INFILE"),
        ("?local_infile=anything", {}, "local_infile", "LOAD DATA LOCAL INFILE"),
    ],
    ids=[
        "read_default_file",
        "read_default_group",
        "unix_socket",
        "sock",
        "local_infile",
        "local_infile-text",
        "client_flag-local-files",
        "client_flag-not-int",
        "dsn-read_default_file",
        "dsn-read_default_group",
        "dsn-unix_socket",
        "dsn-local_infile",
        "dsn-local_infile-odd",
    ],
)
async def test_options_that_redirect_or_weaken_a_connection_are_refused_before_any_aws_call(
    scheme: str,
    query: str,
    kwargs: dict[str, Any],
    field: str,
    reason: str,
    cache: CredentialCache,
    source: FakeSource,
) -> None:
    dsn = f"{scheme}://app@{ENDPOINT}/db{query}"

    with pytest.raises(ConfigError) as caught:
        await iampool.connect(dsn, aws_iam=BLOCK, cache=cache, connect_timeout=1, **kwargs)

    assert caught.value.fields == [field]
    assert reason in str(caught.value)
    assert source.calls == Counter()  # refused before any AWS call
    assert cache.stats()["size"] == 0  # nor was one started in the background


@pytest.mark.parametrize("driver", ["aiomysql", "asyncmy"])
def test_options_that_neither_redirect_nor_weaken_stay_allowed(driver: Any) -> None:
    from iampool.pools._mysql import mysql_options

    target = parse_target(
        f"mysql://app@{ENDPOINT}/db?init_command=SET+time_zone%3D%27%2B00%3A00%27&local_infile=0",
        AwsIamConfig.from_extra(BLOCK),
    )
    allowed = {
        "server_public_key": b"-----BEGIN PUBLIC KEY-----",  # only used without TLS: never
        "init_command": "SET NAMES utf8mb4",  # runs after the login
        "local_infile": False,
        "client_flag": 0x10000,  # CLIENT_MULTI_STATEMENTS, which both drivers set anyway
        "program_name": "billing",
    }

    settings = mysql_options(target, allowed, driver=driver, owned=("host",))

    assert settings == {"init_command": "SET time_zone='+00:00'", "local_infile": False}


def test_dsn_option_errors_name_the_driver_the_other_settings_go_to() -> None:
    with pytest.raises(ConfigError) as caught:
        _dsn_options({"ssl_ca": "/ca.pem"}, "asyncmy")

    assert "pass other asyncmy settings as keyword arguments" in str(caught.value)


@pytest.mark.parametrize("timeout", ["\u0661\u0660", "1e400", "0", "-1", "nan", "", "5" * 40])
def test_a_connect_timeout_must_be_a_plain_positive_number(timeout: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _dsn_options({"connect_timeout": timeout})

    assert caught.value.fields == ["connect_timeout"]
