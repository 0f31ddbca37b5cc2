"""Endpoint host names: the region they carry (and lookalikes that carry none), a block's region
read from the host, and the token-host override (``iam_host``) as the DSN and TLS see it.

The override is exercised end to end, through a TCP forwarder and the IAM gateway, in
tests/integration/test_tunnels.py.
"""

from __future__ import annotations

import ssl

import pytest

from iampool import AwsIamConfig, ConfigError, CredentialCache, auth_for
from iampool._endpoints import EndpointName, endpoint_name, region_of_host, with_region
from iampool.pools import _tls
from iampool.pools._dsn import parse_target
from iampool.pools._tls import ServerNamedContext, tls_context

pytestmark = pytest.mark.anyio

RDS_HOST = "db.cluster-c9akciq32.eu-west-1.rds.amazonaws.com"
BLOCK = {
    "enabled": True,
    "role_arn": "arn:aws:iam::123456789012:role/app-db",
    "db_username": "app",
}
NO_REGION = AwsIamConfig.from_extra(BLOCK)


@pytest.mark.parametrize(
    ("host", "service", "region"),
    [
        ("mydb.c9akciq32.us-east-1.rds.amazonaws.com", "rds", "us-east-1"),
        ("db.cluster-c9akciq32.eu-west-1.rds.amazonaws.com", "rds", "eu-west-1"),
        ("db.cluster-ro-c9akciq32.eu-west-1.rds.amazonaws.com", "rds", "eu-west-1"),
        ("db.cluster-custom-c9akciq32.ap-southeast-2.rds.amazonaws.com", "rds", "ap-southeast-2"),
        ("app.proxy-c9akciq32.us-west-2.rds.amazonaws.com", "rds", "us-west-2"),
        ("reader.endpoint.proxy-c9akciq32.us-west-2.rds.amazonaws.com", "rds", "us-west-2"),
        ("mydb.c9akciq32.us-gov-west-1.rds.amazonaws.com", "rds", "us-gov-west-1"),
        ("mydb.c9akciq32.cn-north-1.rds.amazonaws.com.cn", "rds", "cn-north-1"),
        ("mydb.c9akciq32.rds.cn-northwest-1.amazonaws.com.cn", "rds", "cn-northwest-1"),
        ("MyDB.Cluster-C9AKCIQ32.US-EAST-2.RDS.AMAZONAWS.COM.", "rds", "us-east-2"),
        ("analytics.c1a2b3c4d5e6.us-west-2.redshift.amazonaws.com", "redshift", "us-west-2"),
        (
            "default-wg.123456789012.eu-central-1.redshift-serverless.amazonaws.com",
            "redshift-serverless",
            "eu-central-1",
        ),
        ("abcdefghijklmnopqrst12345.dsql.us-east-1.on.aws", "dsql", "us-east-1"),
        ("abc123.dsql-fnh4.ap-northeast-1.on.aws", "dsql", "ap-northeast-1"),
    ],
)
def test_an_endpoint_name_says_its_service_and_region(host: str, service: str, region: str) -> None:
    assert endpoint_name(host) == EndpointName(service, region)  # type: ignore[arg-type]
    assert region_of_host(host) == region


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("evil.com?x.us-east-1.rds.amazonaws.com", id="query-string lookalike"),
        pytest.param("evil.com/x.us-east-1.rds.amazonaws.com", id="path lookalike"),
        pytest.param("user@mydb.c9akciq32.us-east-1.rds.amazonaws.com", id="userinfo"),
        pytest.param("rds.amazonaws.com.attacker.net", id="suffix of another domain"),
        pytest.param("mydb.c9akciq32.us-east-1.rds.amazonaws.com.attacker.net", id="prefix"),
        pytest.param("mydb.c9akciq32.us-east-1.rds.amazonaws.com:5432", id="with a port"),
        pytest.param("mydb.c9akciq32.us-east-1.rds.amazonaws.com\n", id="trailing newline"),
        pytest.param("mydb.c9akciq32.us-east-1.rds.amazonaws.co", id="another TLD"),
        pytest.param("mydb.\u212a9akciq32.us-east-1.rds.amazonaws.com", id="Kelvin sign"),
        pytest.param("mydb.c9akciq32.us-east-1.rds.amazonaws.com.cn.evil", id="cn prefix"),
        pytest.param("c9akciq32.us-east-1.rds.amazonaws.com", id="no instance name"),
        pytest.param("rds.us-east-1.amazonaws.com", id="the RDS API endpoint"),
        pytest.param("mydb.global-c9akciq32.global.rds.amazonaws.com", id="global writer"),
        pytest.param("mydb.c9akciq32.us-east.rds.amazonaws.com", id="not a region"),
        pytest.param("wg.12345.us-east-1.redshift-serverless.amazonaws.com", id="short account"),
        pytest.param("abc.dsql.us-east-1.on.aws.evil.example", id="dsql prefix"),
        pytest.param("db.internal.example.com", id="custom DNS name"),
        pytest.param("127.0.0.1", id="IPv4"),
        pytest.param("::1", id="IPv6"),
        pytest.param("localhost", id="localhost"),
        pytest.param("", id="empty"),
    ],
)
def test_other_hosts_and_lookalikes_name_no_region(host: str) -> None:
    assert endpoint_name(host) is None
    assert region_of_host(host) is None


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("a." * 10_000 + "x.us-east-1.rds.amazonaws.com", id="longer than DNS allows"),
        pytest.param(("a" * 61 + ".") * 3 + "cluster-x.us-east-1.rds.amazonaws.co", id="near miss"),
    ],
)
def test_long_hosts_are_no_endpoints(host: str) -> None:
    # Names over 253 characters are not scanned (the patterns' nested repetitions would take
    # their time over them); up to that, a near miss costs ~0.2 ms here.
    assert endpoint_name(host) is None


def test_a_block_without_region_takes_the_hosts() -> None:
    assert NO_REGION.region == ""

    assert with_region(NO_REGION, RDS_HOST).region == "eu-west-1"


def test_an_empty_region_is_a_missing_one_as_in_superset() -> None:
    config = AwsIamConfig.from_extra({**BLOCK, "region": ""})

    assert config == NO_REGION
    assert "region" not in config.to_dict()
    assert with_region(config, RDS_HOST).to_dict()["region"] == "eu-west-1"


def test_a_region_that_agrees_with_the_host_is_kept() -> None:
    config = AwsIamConfig.from_extra({**BLOCK, "region": "eu-west-1"})

    assert with_region(config, RDS_HOST) is config


def test_a_region_for_a_host_that_names_none_is_kept() -> None:
    config = AwsIamConfig.from_extra({**BLOCK, "region": "eu-west-1"})

    assert with_region(config, "127.0.0.1") is config


def test_a_region_that_disagrees_with_the_host_is_a_config_error_naming_both() -> None:
    config = AwsIamConfig.from_extra({**BLOCK, "region": "us-east-1"})

    with pytest.raises(ConfigError) as caught:
        with_region(config, RDS_HOST)

    assert caught.value.fields == ["region"]
    message = str(caught.value)
    assert "'us-east-1'" in message
    assert "'eu-west-1'" in message
    assert RDS_HOST in message


def test_no_region_and_a_host_that_names_none_asks_for_region_or_iam_host() -> None:
    with pytest.raises(ConfigError) as caught:
        with_region(NO_REGION, "127.0.0.1")

    assert caught.value.fields == ["region"]
    assert "'127.0.0.1' names no region" in str(caught.value)
    assert "iam_host" in str(caught.value)


def test_no_region_and_no_host_asks_for_region() -> None:
    config = AwsIamConfig.from_extra({**BLOCK, "cluster_identifier": "analytics", "db_name": "dev"})

    with pytest.raises(ConfigError) as caught:
        with_region(config, None)

    assert caught.value.fields == ["region"]
    assert "is required" in str(caught.value)


@pytest.mark.parametrize(
    ("block", "host", "region"),
    [
        pytest.param(BLOCK, RDS_HOST, "eu-west-1", id="rds"),
        pytest.param(
            {**BLOCK, "cluster_identifier": "analytics", "db_name": "dev"},
            "analytics.c1a2b3c4d5e6.us-west-2.redshift.amazonaws.com",
            "us-west-2",
            id="redshift",
        ),
        pytest.param(
            {"enabled": True, "workgroup_name": "default-wg", "db_name": "dev"},
            "default-wg.123456789012.eu-central-1.redshift-serverless.amazonaws.com",
            "eu-central-1",
            id="redshift-serverless",
        ),
        pytest.param(
            {**BLOCK, "dsql": True, "db_username": "admin"},
            "abc123.dsql.ap-northeast-1.on.aws",
            "ap-northeast-1",
            id="dsql",
        ),
    ],
)
def test_auth_for_reads_the_region_from_the_host(
    cache: CredentialCache, block: dict[str, object], host: str, region: str
) -> None:
    auth = auth_for(AwsIamConfig.from_extra(block), host=host, port=5432, cache=cache)

    assert auth.config.region == region  # type: ignore[attr-defined]
    assert cache.stats()["sts_calls"] == 0


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(BLOCK, id="rds"),
        pytest.param({**BLOCK, "cluster_identifier": "analytics", "db_name": "dev"}, id="redshift"),
    ],
)
def test_auth_for_without_any_region_fails_before_any_aws_call(
    cache: CredentialCache, block: dict[str, object]
) -> None:
    with pytest.raises(ConfigError) as caught:
        auth_for(AwsIamConfig.from_extra(block), host="127.0.0.1", port=5432, cache=cache)

    assert caught.value.fields == ["region"]
    assert cache.stats()["sts_calls"] == 0


# -- the token-host override in the DSN ---------------------------------------------------------


def test_iam_host_names_the_signed_endpoint_and_leaves_the_dialled_one() -> None:
    target = parse_target(
        f"postgresql://app@127.0.0.1:15432/db?iam_host={RDS_HOST}&iam_port=5433&application_name=x",
        NO_REGION,
    )

    assert (target.host, target.port) == ("127.0.0.1", 15432)
    assert (target.signed_host, target.signed_port) == (RDS_HOST, 5433)
    assert target.options == {"application_name": "x"}  # iam_* never reach the driver


@pytest.mark.parametrize(
    ("dsn", "block", "port"),
    [
        pytest.param(f"postgresql://app@127.0.0.1:15432/db?iam_host={RDS_HOST}", BLOCK, 5432),
        pytest.param(f"mysql://app@127.0.0.1:13306/db?iam_host={RDS_HOST}", BLOCK, 3306),
        pytest.param(
            f"postgresql://app@127.0.0.1:15432/db?iam_host={RDS_HOST}",
            {**BLOCK, "port": 6432},
            6432,
            id="the block's port",
        ),
    ],
)
def test_iam_port_defaults_to_the_endpoints_port_not_the_tunnels(
    dsn: str, block: dict[str, object], port: int
) -> None:
    target = parse_target(dsn, AwsIamConfig.from_extra(block))

    assert target.signed_port == port


def test_without_iam_host_the_dialled_endpoint_is_signed() -> None:
    target = parse_target(f"postgresql://app@{RDS_HOST}:5432/db", NO_REGION)

    assert (target.signed_host, target.signed_port) == (RDS_HOST, 5432)
    assert target.iam_host is None


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("iam_port=5432", "iam_port", "needs iam_host"),
        (f"iam_host={RDS_HOST}:5432", "iam_host", "with its port as iam_port"),
        ("iam_host=evil.com/x", "iam_host", "must be the endpoint's DNS name"),
        ("iam_host=", "iam_host", "must be the endpoint's DNS name"),
        (f"iam_host={RDS_HOST}&iam_port=0", "iam_port", "from 1 to 65535"),
        (f"iam_host={RDS_HOST}&iam_port=5432x", "iam_port", "from 1 to 65535"),
    ],
)
def test_a_bad_token_host_override_is_a_config_error(query: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_target(f"postgresql://app@127.0.0.1:15432/db?{query}", NO_REGION)

    assert caught.value.fields == [field]
    assert words in str(caught.value)


def test_iam_host_is_refused_for_redshift_whose_driver_cannot_verify_another_name() -> None:
    config = AwsIamConfig.from_extra(
        {**BLOCK, "region": "us-west-2", "cluster_identifier": "analytics", "db_name": "dev"}
    )

    with pytest.raises(ConfigError) as caught:
        parse_target("redshift://127.0.0.1:15439/dev?iam_host=a.b.us-west-2.redshift.amazonaws.com",
                     config)  # fmt: skip

    assert caught.value.fields == ["iam_host"]
    assert "verify-ca" in str(caught.value)


async def test_a_tunnel_and_a_direct_connection_share_the_endpoints_token(
    cache: CredentialCache,
) -> None:
    tunnel = parse_target(f"postgresql://app@127.0.0.1:15432/db?iam_host={RDS_HOST}", NO_REGION)
    direct = parse_target(f"postgresql://app@{RDS_HOST}/db", NO_REGION)
    through_tunnel = auth_for(NO_REGION, host=tunnel.signed_host, port=tunnel.signed_port,
                              cache=cache)  # fmt: skip
    straight = auth_for(NO_REGION, host=direct.signed_host, port=direct.signed_port, cache=cache)

    first = await through_tunnel.credentials()
    second = await straight.credentials()

    assert (first.host, first.port) == (RDS_HOST, 5432)
    assert second.password == first.password
    assert cache.stats()["tokens_signed"] == 1


@pytest.mark.parametrize("sslmode", ["require", "verify-ca", "verify-full"])
def test_the_tls_context_names_the_endpoint_whatever_address_the_driver_dials(
    sslmode: str,
) -> None:
    target = parse_target(
        f"postgresql://app@127.0.0.1:15432/db?iam_host={RDS_HOST}&sslmode={sslmode}", NO_REGION
    )

    context = tls_context(target)
    # What asyncio's start_tls does with the host asyncpg, aiomysql and asyncmy dial:
    tls = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1")

    assert isinstance(context, ServerNamedContext)
    assert tls.server_hostname == RDS_HOST
    assert context.check_hostname is (sslmode == "verify-full")
    assert context.verify_mode == (ssl.CERT_NONE if sslmode == "require" else ssl.CERT_REQUIRED)


def test_an_ssl_context_of_ones_own_cannot_be_combined_with_iam_host() -> None:
    target = parse_target(f"postgresql://app@127.0.0.1:15432/db?iam_host={RDS_HOST}", NO_REGION)

    with pytest.raises(ConfigError) as caught:
        tls_context(target, ssl.create_default_context())

    assert caught.value.fields == ["ssl"]
    assert "sslrootcert" in str(caught.value)


async def test_libpq_dials_the_tunnels_addresses_and_verifies_the_endpoints_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        assert (host, port) == ("tunnel.internal", 15432)
        found = [("::1", 15432, 0, 0), ("127.0.0.1", 15432), ("127.0.0.1", 15432)]
        return [(None, None, None, "", address) for address in found]

    monkeypatch.setattr(_tls.anyio, "getaddrinfo", resolve)
    target = parse_target(
        f"postgresql://app@tunnel.internal:15432/db?iam_host={RDS_HOST}", NO_REGION
    )

    settings = await _tls.libpq_server_name(target)

    # psycopg makes one attempt per (host, hostaddr) pair, libpq checking each against host.
    assert settings == {"host": f"{RDS_HOST},{RDS_HOST}", "hostaddr": "::1,127.0.0.1"}


async def test_libpq_dials_an_ip_address_as_is_and_nothing_changes_without_iam_host() -> None:
    tunnel = parse_target(f"postgresql://app@[::1]:15432/db?iam_host={RDS_HOST}", NO_REGION)
    direct = parse_target(f"postgresql://app@{RDS_HOST}/db", NO_REGION)

    assert await _tls.libpq_server_name(tunnel) == {"host": RDS_HOST, "hostaddr": "::1"}
    assert await _tls.libpq_server_name(direct) == {}


def test_endpoints_of_one_block_share_one_configuration_with_the_region() -> None:
    other_host = "replica.c9akciq32.eu-west-1.rds.amazonaws.com"

    assert with_region(NO_REGION, RDS_HOST) is with_region(NO_REGION, other_host)
