"""parse_target and tls_context: one place decides engine, endpoint, login user and TLS."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from iampool import AwsIamConfig, ConfigError
from iampool.pools._dsn import DEFAULT_PORTS, Target, parse_target, tls_context

AURORA = AwsIamConfig.from_extra({"enabled": True, "region": "us-east-1", "db_username": "app"})
PROVISIONED = AwsIamConfig.from_extra(
    {
        "enabled": True,
        "region": "us-east-1",
        "cluster_identifier": "analytics",
        "db_username": "etl",
        "db_name": "dev",
    }
)
SERVERLESS = AwsIamConfig.from_extra(
    {"enabled": True, "region": "us-east-1", "workgroup_name": "analytics-wg", "db_name": "dev"}
)
HOST = "db.cluster-abc.us-east-1.rds.amazonaws.com"


def config(**fields: Any) -> AwsIamConfig:
    return AwsIamConfig.from_extra(
        {"enabled": True, "region": "us-east-1", "db_username": "app", **fields}
    )


def dsn_error(dsn: str, cfg: AwsIamConfig = AURORA) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_target(dsn, cfg)
    assert caught.value.context == "DSN"
    return caught.value


# --- schemes, ports, database ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "engine", "driver", "cfg"),
    [
        ("postgresql", "postgresql", "asyncpg", AURORA),
        ("postgres", "postgresql", "asyncpg", AURORA),
        ("postgresql+asyncpg", "postgresql", "asyncpg", AURORA),
        ("POSTGRESQL", "postgresql", "asyncpg", AURORA),
        ("postgresql+psycopg", "postgresql", "psycopg", AURORA),
        ("postgresql+psycopg_async", "postgresql", "psycopg", AURORA),
        ("mysql", "mysql", "aiomysql", AURORA),
        ("mysql+aiomysql", "mysql", "aiomysql", AURORA),
        ("mysql+asyncmy", "mysql", "asyncmy", AURORA),
        ("redshift", "redshift", "redshift_connector", PROVISIONED),
        ("redshift+redshift_connector", "redshift", "redshift_connector", PROVISIONED),
    ],
)
def test_each_supported_scheme_selects_its_engine_and_driver(
    scheme: str, engine: str, driver: str, cfg: Any
) -> None:
    target = parse_target(f"{scheme}://{HOST}/dev", cfg)

    assert (target.engine, target.driver) == (engine, driver)
    assert target.host == HOST
    assert target.database == "dev"


@pytest.mark.parametrize(
    "dsn",
    [
        f"sqlite://{HOST}/appdb",
        f"mysql+pymysql://{HOST}/appdb",
        f"postgresql+psycopg2://{HOST}/appdb",
        f"://{HOST}/appdb",
        f"{HOST}/appdb",
        "postgresql:/appdb",
    ],
)
def test_unknown_scheme_is_a_config_error_listing_the_allowed_schemes(dsn: str) -> None:
    error = dsn_error(dsn)

    assert error.fields == ["dsn"]
    for allowed in ("postgresql://", "postgres://", "mysql://", "redshift://"):
        assert allowed in str(error)


@pytest.mark.parametrize(
    ("scheme", "port", "cfg"),
    [("postgresql", 5432, AURORA), ("mysql", 3306, AURORA), ("redshift", 5439, PROVISIONED)],
)
def test_dsn_without_port_uses_the_engine_default(scheme: str, port: int, cfg: Any) -> None:
    target = parse_target(f"{scheme}://{HOST}/dev", cfg)

    assert target.port == port
    assert DEFAULT_PORTS[target.engine] == port
    assert target.endpoint == f"{HOST}:{port}"


def test_dsn_without_port_falls_back_to_aws_iam_port_before_the_default() -> None:
    target = parse_target(f"postgresql://{HOST}/appdb", config(port=6543))

    assert target.port == 6543


def test_port_in_the_dsn_wins_over_aws_iam_port() -> None:
    target = parse_target(f"postgresql://{HOST}:7777/appdb", config(port=6543))

    assert target.port == 7777


@pytest.mark.parametrize("port", ["99999", "abc"])
def test_invalid_port_is_a_config_error(port: str) -> None:
    error = dsn_error(f"postgresql://{HOST}:{port}/appdb")

    assert "port" in str(error)


def test_database_is_url_decoded_and_absent_database_is_none() -> None:
    assert parse_target(f"postgresql://{HOST}/my%20db", AURORA).database == "my db"
    assert parse_target(f"postgresql://{HOST}", AURORA).database is None
    assert parse_target(f"postgresql://{HOST}/", AURORA).database is None


def test_redshift_database_falls_back_to_db_name() -> None:
    assert parse_target(f"redshift://{HOST}", PROVISIONED).database == "dev"
    assert parse_target(f"redshift://{HOST}/dev", PROVISIONED).database == "dev"


def test_redshift_database_other_than_db_name_is_a_config_error() -> None:
    # The temporary password is minted for db_name; connecting elsewhere would be refused.
    message = str(dsn_error(f"redshift://{HOST}/sales", PROVISIONED))
    assert "'sales'" in message
    assert "'dev'" in message


def test_redshift_dsn_query_options_are_refused() -> None:
    error = dsn_error(f"redshift://{HOST}/dev?timeout=5", PROVISIONED)
    assert error.fields == ["timeout"]
    assert "keyword arguments" in str(error)


def test_rds_database_does_not_fall_back_to_db_name() -> None:
    assert parse_target(f"postgresql://{HOST}", config(db_name="dev")).database is None


# --- host -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_missing_host_is_a_config_error_for_rds(scheme: str) -> None:
    error = dsn_error(f"{scheme}:///appdb")

    assert "host" in str(error)


@pytest.mark.parametrize("cfg", [PROVISIONED, SERVERLESS])
def test_redshift_may_leave_out_the_host_to_discover_it(cfg: AwsIamConfig) -> None:
    target = parse_target("redshift:///", cfg)

    assert target.host is None
    assert target.port == 5439
    assert target.database == "dev"


@pytest.mark.parametrize(
    "netloc",
    ["h1,h2", "h1:5432,h2:5432", "app@h1:5432,h2"],
)
def test_several_hosts_are_a_config_error(netloc: str) -> None:
    error = dsn_error(f"postgresql://{netloc}/appdb")

    assert error.fields == ["dsn"]  # one problem: no misleading "bad port" besides
    assert "several hosts" in str(error)


def test_ipv6_host_is_bracketed_in_endpoint_and_driver_dsn() -> None:
    target = parse_target("postgresql://[::1]:5433/appdb", AURORA)

    assert target.host == "::1"
    assert target.endpoint == "[::1]:5433"
    parts = urlsplit(target.driver_dsn())
    assert (parts.hostname, parts.port) == ("::1", 5433)


# --- login user and password ----------------------------------------------------------------


def test_login_user_defaults_to_db_username() -> None:
    assert parse_target(f"postgresql://{HOST}/appdb", AURORA).user == "app"


def test_dsn_user_equal_to_db_username_is_accepted() -> None:
    assert parse_target(f"mysql://app@{HOST}/appdb", AURORA).user == "app"
    assert parse_target(f"postgresql://{HOST}/appdb?user=app", AURORA).user == "app"


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://admin@{HOST}/appdb",
        f"mysql://admin@{HOST}/appdb",
        f"postgresql://{HOST}/appdb?user=admin",
        f"postgresql://app@{HOST}/appdb?user=admin",
    ],
)
def test_dsn_user_other_than_db_username_is_a_config_error_naming_both(dsn: str) -> None:
    error = dsn_error(dsn)

    assert "'admin'" in str(error)
    assert "'app'" in str(error)
    assert "db_username" in str(error)


def test_url_encoded_dsn_user_is_compared_decoded() -> None:
    cfg = config(db_username="app@corp")

    assert parse_target(f"postgresql://app%40corp@{HOST}/appdb", cfg).user == "app@corp"


def test_redshift_login_user_comes_from_the_aws_api_not_the_config() -> None:
    # GetClusterCredentials answers "IAM:etl": the DSN may repeat db_username, nothing else.
    assert parse_target(f"redshift://{HOST}/dev", PROVISIONED).user is None
    assert parse_target(f"redshift://etl@{HOST}/dev", PROVISIONED).user is None
    message = str(dsn_error(f"redshift://someone@{HOST}/dev", PROVISIONED))
    assert "'someone'" in message
    assert "'etl'" in message


def test_dsn_written_as_user_colon_name_is_read_as_a_password() -> None:
    # "IAM:etl@" is userinfo with a password; Redshift's IAM user name must be URL-encoded.
    assert "password" in str(dsn_error(f"redshift://IAM:etl@{HOST}/dev", PROVISIONED))
    assert parse_target(f"redshift://IAM%3Aetl@{HOST}/dev", PROVISIONED).user is None


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://app:secret@{HOST}/appdb",
        f"mysql://app:secret@{HOST}/appdb",
        f"postgresql://{HOST}/appdb?password=secret",
        f"postgresql://{HOST}/appdb?password=",
    ],
)
def test_password_in_the_dsn_is_a_config_error_without_echoing_it(dsn: str) -> None:
    error = dsn_error(dsn)

    assert "password" in str(error)
    assert "secret" not in str(error)


# --- sslmode --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "DISABLE"])
def test_sslmode_that_may_fall_back_to_plain_text_is_a_config_error(mode: str) -> None:
    error = dsn_error(f"postgresql://{HOST}/appdb?sslmode={mode}")

    assert error.fields == ["sslmode"]
    assert mode.lower() in str(error)
    assert "require" in str(error)


def test_unknown_sslmode_is_a_config_error() -> None:
    error = dsn_error(f"postgresql://{HOST}/appdb?sslmode=sometimes")

    assert error.fields == ["sslmode"]
    assert "verify-full" in str(error)


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full", "Verify-Full"])
def test_tls_sslmodes_are_accepted(mode: str) -> None:
    assert parse_target(f"postgresql://{HOST}/appdb?sslmode={mode}", AURORA).sslmode == (
        mode.lower()
    )


def test_sslmode_defaults_to_require() -> None:
    target = parse_target(f"postgresql://{HOST}/appdb", AURORA)

    assert target.sslmode == "require"
    assert target.sslrootcert is None


def test_several_problems_are_reported_together() -> None:
    error = dsn_error("postgresql://admin:secret@/appdb?sslmode=disable")

    assert sorted(error.fields) == ["dsn", "dsn", "dsn", "sslmode"]
    message = str(error)
    assert "4 problems" in message
    for expected in ("'admin'", "password", "host", "disable"):
        assert expected in message
    assert "secret" not in message


# --- driver_dsn -----------------------------------------------------------------------------


def test_driver_dsn_keeps_other_query_parameters_and_drops_secrets_and_tls() -> None:
    target = parse_target(
        f"postgresql+asyncpg://app@{HOST}:6000/appdb"
        "?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=a%26b&connect_timeout=5",
        AURORA,
    )

    assert target.sslmode == "verify-full"
    assert target.sslrootcert == "/etc/ca.pem"
    assert target.options == {"application_name": "a&b", "connect_timeout": "5"}
    dsn = target.driver_dsn()
    parts = urlsplit(dsn)
    assert parts.scheme == "postgresql"
    assert (parts.hostname, parts.port, parts.path) == (HOST, 6000, "/appdb")
    assert parts.username is None
    assert parts.password is None
    assert dict(parse_qsl(parts.query)) == {"application_name": "a&b", "connect_timeout": "5"}
    for absent in ("sslmode", "sslrootcert", "password", "user"):
        assert absent not in dsn


@pytest.mark.parametrize(
    ("scheme", "driver_scheme", "cfg"),
    [("mysql+aiomysql", "mysql", AURORA), ("redshift", "postgresql", PROVISIONED)],
)
def test_driver_dsn_uses_the_drivers_plain_scheme(
    scheme: str, driver_scheme: str, cfg: AwsIamConfig
) -> None:
    assert (
        parse_target(f"{scheme}://{HOST}/dev", cfg).driver_dsn().startswith(f"{driver_scheme}://")
    )


@pytest.mark.parametrize("database", ["my db", "a/b", "q?x=1", "hash#tag", "per%cent"])
def test_driver_dsn_round_trips_a_database_name_that_needs_escaping(database: str) -> None:
    target = Target(
        engine="postgresql",
        driver="asyncpg",
        host=HOST,
        port=5432,
        user="app",
        database=database,
        sslmode="require",
        sslrootcert=None,
        options={"application_name": "x"},
    )

    reparsed = parse_target(target.driver_dsn(), AURORA)

    assert reparsed.database == database
    assert reparsed.options == {"application_name": "x"}


def test_driver_dsn_without_database_has_an_empty_path() -> None:
    assert parse_target(f"postgresql://{HOST}", AURORA).driver_dsn() == (
        f"postgresql://{HOST}:5432/"
    )


# --- tls_context ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway self-signed CA certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iampool unit test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


CN = "commonName"


def loaded_ca_names(context: ssl.SSLContext) -> list[str]:
    subjects: list[Any] = [cert["subject"] for cert in context.get_ca_certs()]
    return [value for subject in subjects for rdn in subject for key, value in rdn if key == CN]


def test_default_tls_is_encrypted_without_verification() -> None:
    context = tls_context(parse_target(f"postgresql://{HOST}/appdb", AURORA))

    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False


@pytest.mark.parametrize("option", [None, True, "require"])
def test_require_like_ssl_options_keep_encryption_on(option: object) -> None:
    context = tls_context(parse_target(f"postgresql://{HOST}/appdb", AURORA), option)

    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE


def test_sslrootcert_upgrades_require_to_verify_full_with_the_ca_loaded(ca_pem: Path) -> None:
    target = parse_target(f"postgresql://{HOST}/appdb?sslrootcert={ca_pem}", AURORA)

    context = tls_context(target)

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert loaded_ca_names(context) == ["iampool unit test CA"]


def test_verify_full_checks_certificate_and_hostname(ca_pem: Path) -> None:
    target = parse_target(
        f"postgresql://{HOST}/appdb?sslmode=verify-full&sslrootcert={ca_pem}", AURORA
    )

    context = tls_context(target)

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_verify_ca_checks_the_certificate_but_not_the_hostname(ca_pem: Path) -> None:
    target = parse_target(f"mysql://{HOST}/appdb?sslmode=verify-ca&sslrootcert={ca_pem}", AURORA)

    context = tls_context(target)

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False
    assert loaded_ca_names(context) == ["iampool unit test CA"]


def test_ssl_option_string_overrides_the_dsn_sslmode(ca_pem: Path) -> None:
    target = parse_target(f"postgresql://{HOST}/appdb?sslrootcert={ca_pem}", AURORA)

    context = tls_context(target, "verify-ca")

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False


def test_ssl_context_passed_by_the_user_is_used_as_is() -> None:
    mine = ssl.create_default_context()
    target = parse_target(f"postgresql://{HOST}/appdb?sslmode=verify-ca", AURORA)

    assert tls_context(target, mine) is mine


@pytest.mark.parametrize("option", [False, "disable", "allow", "prefer", "off", 0])
def test_ssl_option_that_turns_tls_off_is_a_config_error(option: object) -> None:
    target = parse_target(f"postgresql://{HOST}/appdb", AURORA)

    with pytest.raises(ConfigError) as caught:
        tls_context(target, option)

    assert caught.value.fields == ["ssl"]
    assert "TLS" in str(caught.value)


def test_redshift_dsn_may_name_the_auto_created_user() -> None:
    assert parse_target(f"redshift://IAMA%3Aetl@{HOST}/dev", PROVISIONED).user is None


def test_serverless_dsn_naming_a_user_is_a_config_error() -> None:
    # GetCredentials decides the user (IAMR:<role>); a DSN user would be silently ignored.
    error = dsn_error(f"redshift://someone@{HOST}/dev", SERVERLESS)
    assert "'someone'" in str(error)
    assert "GetCredentials" in str(error)
