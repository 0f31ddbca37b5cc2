"""The connect plan: one pass of every check, the TLS context built once, bounded tables, and
error text that echoes nothing from the DSN it does not know to be safe (ARCHITECTURE.md,
"The connect path")."""

from __future__ import annotations

import logging
import math
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from iampool import ConfigError, CredentialCache, LoginTimeoutError
from iampool.pools import _dialer, _tls, resolve
from iampool.pools._plan import DEFAULT_LOGIN_TIMEOUT

HOST = "db.cluster-abc.us-east-1.rds.amazonaws.com"
AURORA = {"enabled": True, "region": "us-east-1", "db_username": "app"}


@pytest.fixture
def cache() -> CredentialCache:
    return CredentialCache()


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "bundle.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


# --- the TLS context ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", ["postgresql", "postgresql+asyncpg", "mysql", "mysql+aiomysql", "mysql+asyncmy"]
)
def test_plans_for_one_ca_file_share_one_context_built_once(
    cache: CredentialCache, ca_file: Path, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve(f"{scheme}://{HOST}/db", AURORA, cache)  # the driver imported (some load CAs then)
    loads: list[str] = []
    load = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, cafile: Any = None, *args: Any, **kwargs: Any) -> None:
        loads.append(str(cafile))
        load(self, cafile, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    _tls._contexts.clear()
    dsn = f"{scheme}://{HOST}/db?sslmode=verify-full&sslrootcert={ca_file}"

    plans = [resolve(dsn, AURORA, cache) for _ in range(20)]

    # The check and the context are one load, for all 20 (the AWS client, built in the
    # background, loads its own bundle: not counted).
    assert [path for path in loads if path == str(ca_file)] == [str(ca_file)]
    assert all(plan.tls.context is plans[0].tls.context for plan in plans)
    assert plans[0].tls.mode == "verify-full"


def test_a_changed_ca_file_is_read_again(cache: CredentialCache, ca_file: Path) -> None:
    dsn = f"postgresql://{HOST}/db?sslrootcert={ca_file}"
    first = resolve(dsn, AURORA, cache).tls.context

    trustme.CA().cert_pem.write_to_path(str(ca_file))  # rotated: a new CA in the same file
    os.utime(ca_file, ns=(1, 1))  # and a different modification time whatever the clock says
    second = resolve(dsn, AURORA, cache).tls.context

    assert second is not first
    assert resolve(dsn, AURORA, cache).tls.context is second


def test_contexts_iampool_builds_write_no_key_log(
    cache: CredentialCache, ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "keys.log"))
    _tls._contexts.clear()

    for query in ("", f"?sslrootcert={ca_file}", "?sslmode=verify-full"):
        context = resolve(f"postgresql://{HOST}/db{query}", AURORA, cache).tls.context
        assert context is not None
        assert context.keylog_filename is None


def test_the_tls_cache_is_bounded(tmp_path: Path) -> None:
    _tls._contexts.clear()
    for index in range(_tls._MAX_CONTEXTS + 20):
        path = tmp_path / f"ca{index}.pem"
        path.write_bytes(trustme.CA().cert_pem.bytes())
        _tls.ca_file_problem(str(path))

    assert len(_tls._contexts) == _tls._MAX_CONTEXTS


# --- the unverified-TLS warning ---------------------------------------------------------------


def test_unverified_tls_is_warned_about_once_per_endpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _tls._warned.clear()
    unverified = _tls.Tls("require", "the system store")

    with caplog.at_level(logging.WARNING, logger="iampool.tls"):
        for _ in range(3):
            _tls.warn_unverified(unverified, "a.example:5432")
        _tls.warn_unverified(unverified, "b.example:5432")
        _tls.warn_unverified(_tls.Tls("verify-full", "ca.pem"), "c.example:5432")

    messages = [record.getMessage() for record in caplog.records if record.name == "iampool.tls"]
    assert len(messages) == 2
    assert "a.example:5432" in messages[0]
    assert "b.example:5432" in messages[1]
    assert all("sslmode=verify-full" in message for message in messages)


def test_the_unverified_tls_warning_can_be_silenced(caplog: pytest.LogCaptureFixture) -> None:
    _tls._warned.clear()
    logging.getLogger("iampool.tls").setLevel(logging.ERROR)
    try:
        with caplog.at_level(logging.WARNING):
            _tls.warn_unverified(_tls.Tls("require", "the system store"), "a.example:5432")
    finally:
        logging.getLogger("iampool.tls").setLevel(logging.NOTSET)

    assert [record for record in caplog.records if record.name == "iampool.tls"] == []


# --- login bound, rate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "query", "expected"),
    [
        ({}, "", DEFAULT_LOGIN_TIMEOUT),
        ({"connect_timeout": 2.5}, "", 2.5),
        ({}, "?connect_timeout=7", 7.0),
        ({"timeout": 9}, "", 9.0),  # asyncpg's own spelling
        ({"connect_timeout": 3}, "?connect_timeout=7", 3.0),  # the keyword wins
    ],
)
def test_the_login_bound_comes_from_a_keyword_the_dsn_or_asyncpgs_timeout(
    cache: CredentialCache, kwargs: dict[str, Any], query: str, expected: float
) -> None:
    plan = resolve(f"postgresql://{HOST}/db{query}", AURORA, cache, driver_kwargs=kwargs)

    assert plan.login_timeout == expected
    assert plan.dialer.timeout == expected
    assert "connect_timeout" not in plan.target.options
    assert "timeout" not in plan.settings.connection


@pytest.mark.parametrize(
    "value", [0, -1, math.nan, math.inf, "abc", True, "1e400", 86_400, [1], "٣"]
)
@pytest.mark.parametrize("where", ["keyword", "dsn"])
def test_a_login_bound_that_is_not_a_positive_number_is_refused_before_any_aws_call(
    cache: CredentialCache, value: Any, where: str
) -> None:
    kwargs = {"connect_timeout": value} if where == "keyword" else {}
    query = f"?connect_timeout={value}" if where == "dsn" else ""

    with pytest.raises(ConfigError) as caught:
        resolve(f"mysql://{HOST}/db{query}", AURORA, cache, driver_kwargs=kwargs)

    assert caught.value.fields in (["connect_timeout"], ["dsn connect_timeout"])
    assert cache.stats()["misses"] == 0


@pytest.mark.parametrize("rate", [0, -1, math.nan, math.inf, "5", True, [5]])
def test_a_connect_rate_that_is_not_a_positive_number_is_refused_before_any_aws_call(
    cache: CredentialCache, rate: Any
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(f"postgresql://{HOST}/db", AURORA, cache, connect_rate=rate)

    assert caught.value.fields == ["connect_rate"]
    assert cache.stats()["misses"] == 0


def test_rate_caps_are_kept_for_a_bounded_number_of_endpoints() -> None:
    _dialer._rates.clear()
    first = _dialer.connect_rate_for("e0:5432", 100)
    for index in range(1, _dialer._MAX_RATES * 3):
        _dialer.connect_rate_for(f"e{index}:5432", 100)

    assert len(_dialer._rates) == _dialer._MAX_RATES
    assert _dialer.connect_rate_for("e0:5432", 100) is not first  # evicted, made anew
    recent = _dialer.connect_rate_for(f"e{_dialer._MAX_RATES * 3 - 1}:5432", 100)
    assert _dialer.connect_rate_for(f"e{_dialer._MAX_RATES * 3 - 1}:5432", 100) is recent


def test_login_timeout_error_is_an_iampool_error_and_a_timeout_error() -> None:
    error = LoginTimeoutError("slow", endpoint="a:1", timeout=2.0)

    assert isinstance(error, TimeoutError)
    assert (error.endpoint, error.timeout) == ("a:1", 2.0)


# --- what error text echoes ---------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["host", "port", "user", "database"])
def test_an_example_dsn_echoes_no_query_parameter_of_the_dsn(
    cache: CredentialCache, keyword: str
) -> None:
    dsn = f"postgresql://{HOST}/db?sslpassword=S3CRET-A&oauth_client_secret=S3CRET-B"

    with pytest.raises(ConfigError) as caught:
        resolve(dsn, AURORA, cache, driver_kwargs={keyword: "x" if keyword != "port" else 1})

    for text in (str(caught.value), repr(caught.value)):
        assert "S3CRET" not in text
    assert "?..." in str(caught.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:pa/sswordtail@db.example.com:5432/db",
        "postgresql://app:pa?sswordtail@db.example.com:5432/db",
        "postgresql://app:pa#sswordtail@db.example.com:5432/db",
        "mysql://app:hunter/twoXYZ@db.example.com/db",
        "postgresql://app:pa/ss@word@db.example.com/db",
    ],
)
def test_a_password_with_an_unencoded_delimiter_is_not_quoted_back(
    cache: CredentialCache, dsn: str
) -> None:
    password = dsn.split("//", 1)[1].split(":", 1)[1].rsplit("@", 1)[0]

    with pytest.raises(ConfigError) as caught:
        resolve(dsn, AURORA, cache)

    text = str(caught.value)
    fragments = {password[i : i + 3] for i in range(len(password) - 2)}
    assert not [fragment for fragment in fragments if fragment in text.replace(HOST, "")]
