"""Every option of every installed driver, and every environment variable it reads, is judged:
set by iampool, refused with a reason, or allowed because it changes nothing of where a login
goes or how it is protected (ARCHITECTURE.md, "Adding a driver"). A driver release that adds
one fails here until it is judged."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iampool import ConfigError, CredentialCache
from iampool.pools import _mysql, aiomysql, asyncmy, asyncpg, psycopg, redshift_connector, resolve

HOST = "db.cluster-abc.us-east-1.rds.amazonaws.com"
AURORA = {"enabled": True, "region": "us-east-1", "db_username": "app"}
REDSHIFT = {**AURORA, "cluster_identifier": "c1", "db_name": "dev"}
ITSELF = {"self", "connect_timeout"}  # iampool's login bound, read by the plan for every driver


def parameters(*functions: Callable[..., Any]) -> set[str]:
    names: set[str] = set()
    for function in functions:
        names.update(
            parameter.name
            for parameter in inspect.signature(function).parameters.values()
            if parameter.kind
            in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
    return names - ITSELF


def test_every_asyncpg_option_is_judged() -> None:
    import asyncpg as driver

    judged = set(asyncpg.OWNED) | set(asyncpg.REFUSED) | asyncpg.ALLOWED | asyncpg.POOL_OPTIONS
    pool_sizes = {"min_size", "max_size"}  # create_pool's own arguments

    assert parameters(driver.connect, driver.create_pool) - pool_sizes <= judged


def test_every_aiomysql_option_is_judged() -> None:
    from aiomysql.connection import Connection

    judged = set(aiomysql.OWNED) | set(_mysql.REFUSED) | _mysql.ALLOWED["aiomysql"]

    assert parameters(Connection.__init__) <= judged


def test_every_asyncmy_option_is_judged() -> None:
    import asyncmy as driver

    judged = set(asyncmy.OWNED) | set(_mysql.REFUSED) | _mysql.ALLOWED["asyncmy"]
    pool_only = {"minsize", "maxsize", "echo", "pool_recycle", "loop"}

    assert parameters(driver.connect) <= judged
    assert parameters(driver.Pool) - pool_only <= judged


def test_every_redshift_connector_option_is_judged() -> None:
    import redshift_connector as driver

    judged = (
        set(redshift_connector.OWNED) | set(redshift_connector.REFUSED) | redshift_connector.ALLOWED
    )

    assert parameters(driver.connect) <= judged


def libpq_options() -> list[Any]:
    import psycopg as driver

    return list(driver.pq.Conninfo.get_defaults())


def test_every_libpq_setting_is_known_to_the_adapter() -> None:
    known = {option.keyword.decode() for option in libpq_options()}

    assert set(psycopg.REFUSED) <= known | {"oauth_issuer"}  # refused wherever libpq has it
    assert {"host", "hostaddr", "port", "sslmode", "sslrootcert", "service"} <= set(psycopg.OWNED)


@pytest.mark.parametrize(
    ("driver", "dsn", "block"),
    [
        ("asyncpg", f"postgresql://{HOST}/db", AURORA),
        ("psycopg", f"postgresql+psycopg://{HOST}/db", AURORA),
        ("aiomysql", f"mysql://{HOST}/db", AURORA),
        ("asyncmy", f"mysql+asyncmy://{HOST}/db", AURORA),
        ("redshift_connector", f"redshift://{HOST}:5439/dev", REDSHIFT),
    ],
)
def test_every_refused_option_is_refused_before_any_aws_call(
    driver: str, dsn: str, block: dict[str, Any]
) -> None:
    modules: dict[str, Any] = {
        "asyncpg": asyncpg.REFUSED,
        "psycopg": psycopg.REFUSED,
        "aiomysql": _mysql.REFUSED,
        "asyncmy": _mysql.REFUSED,
        "redshift_connector": redshift_connector.REFUSED,
    }
    cache = CredentialCache()
    for name in modules[driver]:
        with pytest.raises(ConfigError) as caught:
            resolve(dsn, block, cache, driver_kwargs={name: "x"})
        assert name in caught.value.fields, name
    assert cache.stats()["misses"] == 0  # nothing was minted, nothing prefetched


@pytest.mark.parametrize(
    ("driver", "dsn", "name"),
    [
        ("asyncpg", f"postgresql://{HOST}/db", "not_an_option_anywhere"),
        ("aiomysql", f"mysql://{HOST}/db", "not_an_option_anywhere"),
    ],
)
def test_an_option_the_driver_does_not_take_is_refused(driver: str, dsn: str, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(dsn, AURORA, CredentialCache(), driver_kwargs={name: 1})

    assert caught.value.fields == [name]


@pytest.mark.parametrize("name", ["sslkeylogfile", "hostaddr", "service", "passfile"])
@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
def test_postgresql_dsn_options_that_move_or_leak_bytes_are_refused(scheme: str, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(f"{scheme}://{HOST}/db?{name}=/tmp/x", AURORA, CredentialCache())

    assert caught.value.fields == [name]


# --- the environment ---------------------------------------------------------------------------


def test_every_libpq_environment_variable_is_overridden_or_harmless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for option in libpq_options():
        if option.envvar is not None:
            monkeypatch.setenv(option.envvar.decode(), "hostile")
    monkeypatch.delenv("PGSERVICE")  # a service file: tested below
    plan = resolve(f"postgresql+psycopg://{HOST}/db", AURORA, CredentialCache())

    settings = psycopg.libpq_settings(plan)

    from_environment = set()
    for option in libpq_options():
        name = option.keyword.decode()
        if option.envvar is None or name == "service":
            continue
        if name in settings:
            assert settings[name] != "hostile", name
        else:
            from_environment.add(name)
    # What may still come from the environment decides nothing about where bytes go.
    assert from_environment <= set(psycopg.FROM_ENVIRONMENT)
    assert from_environment <= {"application_name", "client_encoding", "options", "sslcompression"}
    assert settings["hostaddr"] == ""  # explicitly empty: PGHOSTADDR is not read
    assert (settings["host"], settings["port"]) == (HOST, "5432")


def test_a_service_file_can_set_nothing_that_matters(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # libpq applies a service's settings to those a connection leaves out: every setting that
    # could move or weaken the login is given, the key log file included.
    services = tmp_path / "pg_service.conf"
    services.write_text(
        "[evil]\nhost=attacker.example\nhostaddr=127.0.0.9\nport=1\nsslmode=disable\n"
        "sslkeylogfile=/tmp/keys.log\nrequire_auth=none\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGSERVICE", "evil")
    plan = resolve(f"postgresql+psycopg://{HOST}/db", AURORA, CredentialCache())

    settings = psycopg.libpq_settings(plan)

    for name in ("host", "hostaddr", "port", "sslmode", "sslkeylogfile", "require_auth"):
        assert name in settings, name
    assert settings["sslkeylogfile"] == ""
    assert settings["require_auth"] == "password"
    assert settings["sslmode"] == "require"


# How iampool makes each environment variable asyncpg reads irrelevant: it passes the setting
# itself, or an SSLContext (asyncpg reads its PGSSL* settings only to build one of its own).
ASYNCPG_ENVIRONMENT = {
    "PGHOST": "host is passed",
    "PGPORT": "port is passed",
    "PGUSER": "user is passed",
    "PGPASSWORD": "each attempt passes the password",
    "PGDATABASE": "database is passed",
    "PGPASSFILE": "read only without a password",
    "PGSERVICE": "a service file is read only for a DSN's ?service=, which is refused",
    "PGSERVICEFILE": "likewise",
    "PGSSLMODE": "ssl is an SSLContext",
    "PGSSLNEGOTIATION": "direct_tls is passed",
    "PGSSLROOTCERT": "ssl is an SSLContext",
    "PGSSLCRL": "ssl is an SSLContext",
    "PGSSLKEY": "ssl is an SSLContext",
    "PGSSLCERT": "ssl is an SSLContext",
    "SSLKEYLOGFILE": "ssl is an SSLContext, which iampool builds without reading it",
    "PGSSLMINPROTOCOLVERSION": "ssl is an SSLContext",
    "PGSSLMAXPROTOCOLVERSION": "ssl is an SSLContext",
    "PGTARGETSESSIONATTRS": "target_session_attrs is passed",
    "PGKRBSRVNAME": "GSSAPI is not used with a password",
    "PGGSSLIB": "GSSAPI is not used with a password",
}


def test_every_environment_variable_asyncpg_reads_is_made_irrelevant() -> None:
    from asyncpg import connect_utils

    source = inspect.getsource(connect_utils)
    read = set(re.findall(r"(?:getenv|environ\.get)\(\s*['\"]([A-Z_]+)['\"]", source))

    assert read  # the pattern still finds them
    assert read <= set(ASYNCPG_ENVIRONMENT), sorted(read - set(ASYNCPG_ENVIRONMENT))
    plan = resolve(f"postgresql://{HOST}/db", AURORA, CredentialCache())
    settings = asyncpg._settings(plan)
    assert {"host", "port", "user", "database"} <= {k for k, v in settings.items() if v}
    assert (settings["direct_tls"], settings["target_session_attrs"]) == (False, "any")
    import ssl

    assert isinstance(settings["ssl"], ssl.SSLContext)
    assert settings["ssl"].keylog_filename is None


@pytest.mark.parametrize("name", ["ssl_min_protocol_version", "ssl_max_protocol_version"])
@pytest.mark.parametrize("value", ["TLSv1", "tlsv1.1"])
def test_psycopg_refuses_tls_below_1_2(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(f"postgresql+psycopg://{HOST}/db?{name}={value}", AURORA, CredentialCache())

    assert caught.value.fields == [name]
    resolve(f"postgresql+psycopg://{HOST}/db?{name}=TLSv1.3", AURORA, CredentialCache())
