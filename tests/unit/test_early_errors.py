"""Issue 12, finding 4 (API): a setting the driver module would refuse is a ``ConfigError``
before any AWS call, for every driver; a CA file that cannot be used is one too, not an
``OSError`` at connect time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import iampool
from iampool import ConfigError, CredentialCache

from .fakes import FakeSource

pytestmark = pytest.mark.anyio

RDS = {
    "enabled": True,
    "region": "us-east-1",
    "role_arn": "arn:aws:iam::123456789012:role/app",
    "db_username": "app",
}
REDSHIFT = {**RDS, "cluster_identifier": "analytics", "db_name": "dev"}
SCHEMES = ["postgresql", "postgresql+psycopg", "mysql+aiomysql", "mysql+asyncmy"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    ("ca", "message"),
    [
        ("/no/such/ca.pem", "sslrootcert: no file '/no/such/ca.pem'"),
        ("/", "sslrootcert: cannot read '/': Is a directory"),
        (__file__, "holds no PEM certificate"),
    ],
    ids=["missing", "directory", "not-pem"],
)
@pytest.mark.parametrize("api", ["connect", "create_pool"])
async def test_an_unusable_ca_file_is_a_config_error_before_any_aws_call(
    scheme: str, ca: str, message: str, api: str, cache: CredentialCache, source: FakeSource
) -> None:
    dsn = f"{scheme}://app@127.0.0.1:9/db?sslmode=verify-full&sslrootcert={ca}"
    opening = getattr(iampool, api)

    with pytest.raises(ConfigError) as caught:
        await opening(dsn, aws_iam=RDS, cache=cache)

    assert message in str(caught.value)
    assert source.calls == Counter()
    assert cache.stats()["size"] == 0  # nor was one started in the background


@pytest.mark.parametrize(
    ("dsn", "block", "kwargs", "field"),
    [
        ("postgresql://app@127.0.0.1:9/db", RDS, {"ssl": False}, "ssl"),
        ("postgresql://app@127.0.0.1:9/db", RDS, {"passfile": "/home/app/.pgpass"}, "passfile"),
        ("postgresql+psycopg://app@127.0.0.1:9/db", RDS, {"sslmode": "disable"}, "sslmode"),
        ("postgresql+psycopg://app@127.0.0.1:9/db", RDS, {"hostaddr": "10.0.0.1"}, "hostaddr"),
        ("mysql://app@127.0.0.1:9/db", RDS, {"ssl": "disable"}, "ssl"),
        ("mysql+asyncmy://app@127.0.0.1:9/db", RDS, {"password_creator": str}, "password_creator"),
        ("redshift://h.example:5439/dev", REDSHIFT, {"sslmode": "disable"}, "sslmode"),
        ("redshift://h.example:5439/dev?sslrootcert=/ca.pem", REDSHIFT, {}, "sslrootcert"),
    ],
    ids=[
        "asyncpg-ssl-off",
        "asyncpg-passfile",
        "psycopg-sslmode",
        "psycopg-hostaddr",
        "aiomysql-ssl-off",
        "asyncmy-password-creator",
        "redshift-sslmode",
        "redshift-ca-file",
    ],
)
async def test_a_refused_driver_setting_is_a_config_error_before_any_aws_call(
    dsn: str,
    block: dict[str, Any],
    kwargs: dict[str, Any],
    field: str,
    cache: CredentialCache,
    source: FakeSource,
) -> None:
    with pytest.raises(ConfigError) as caught:
        await iampool.connect(dsn, aws_iam=block, cache=cache, **kwargs)

    assert caught.value.fields == [field]
    assert source.calls == Counter()
    assert cache.stats()["size"] == 0  # nor was one started in the background


async def test_psycopg_may_name_the_system_trust_store_as_its_ca(
    cache: CredentialCache, tmp_path: Path
) -> None:
    from iampool.pools import resolve

    target = resolve(
        "postgresql+psycopg://app@127.0.0.1:9/db?sslmode=verify-full&sslrootcert=system",
        RDS,
        cache,
    ).target

    assert target.sslrootcert == "system"
