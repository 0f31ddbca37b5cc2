"""parse_target and tls_context: one place decides engine, endpoint, login user and TLS."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from iampool import AwsIamConfig, ConfigError
from iampool.pools._dsn import DEFAULT_PORTS, parse_target
from iampool.pools._tls import tls_context

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

    assert error.fields == ["dsn host"]  # one problem: no misleading "bad port" besides
    assert "several hosts" in str(error)


def test_ipv6_host_is_bracketed_in_endpoint_only() -> None:
    target = parse_target("postgresql://[::1]:5433/appdb", AURORA)

    assert target.host == "::1"
    assert target.port == 5433
    assert target.endpoint == "[::1]:5433"


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


# --- query parameters ------------------------------------------------------------------------


def test_other_query_parameters_are_kept_decoded_without_secrets_and_tls() -> None:
    target = parse_target(
        f"postgresql+asyncpg://app@{HOST}:6000/appdb"
        "?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=a%26b&connect_timeout=5",
        AURORA,
    )

    assert (target.host, target.port, target.database) == (HOST, 6000, "appdb")
    assert target.sslmode == "verify-full"
    assert target.sslrootcert == "/etc/ca.pem"
    assert target.options == {"application_name": "a&b", "connect_timeout": "5"}


@pytest.mark.parametrize("database", ["my db", "a/b", "q?x=1", "hash#tag", "per%cent"])
def test_a_database_name_that_needs_escaping_is_read_back_whole(database: str) -> None:
    target = parse_target(f"postgresql://{HOST}/{quote(database, safe='')}?x=1", AURORA)

    assert target.database == database
    assert target.options == {"x": "1"}


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


# --- hostile hosts and ports (issue 12, findings 2 and 4) -----------------------------------


@pytest.mark.parametrize(
    ("netloc", "says"),
    [
        # Decoded once here, once more by asyncpg: a Unix socket, the token sent in clear.
        ("app@%252Ftmp%252Fsock", "percent-encoded"),
        ("%252Fvar%252Frun%252Fpostgresql", "percent-encoded"),
        ("%2F", "path"),  # asyncpg then tried its default sockets
        ("%2Ftmp", "path"),
        ("%2Frun%2Fpostgresql:5432", "path"),
        ("%40abstract", "path"),  # libpq: a socket in the abstract namespace
        ("%5Cserver%5Cpipe", "path"),
        ("h1%2Ch2", "several hosts"),  # past the one-host rule
        ("h1%252Ch2", "percent-encoded"),
        ("a%20b", "whitespace"),
        ("db%00.example.com", "control character"),
        ("db%09x", "whitespace"),
        ("db%0A.example.com", "whitespace"),
        ("db%7F", "control character"),
        ("db%3Fx", "'?'"),
        ("db%23x", "'#'"),
        ("db%40x", "'@'"),
        ("db%3Dx", "'='"),
        ("db%27x", '"\'"'),
        ("a..b", "empty label"),
        (".db", "path"),
        ("d%C3%A9.example.com", "IDNA"),
        ("db%FF", "IDNA"),  # not UTF-8: decoded to U+FFFD
        ("h" * 254, "254 characters"),
        ("h" * 5000, "5000 characters"),
        (("a" * 64) + ".example.com", "longer than 63"),
        ("[::1", "brackets"),
        ("app@[::1", "brackets"),
        ("[::1]x", "brackets"),
        ("[::g]", "IPv6"),
        ("[1.2.3.4]", "brackets hold an IPv6"),
        ("[db.example.com]:5432", "brackets hold an IPv6"),
        ("[fe80::1%25eth0]", "percent-encoded"),  # a zone would name an interface
        ("::1", "brackets"),
        ("fe80::1:5432", "brackets"),
    ],
)
def test_a_host_a_driver_could_read_as_something_else_is_a_config_error(
    netloc: str, says: str
) -> None:
    error = dsn_error(f"postgresql://{netloc}/db?sslmode=verify-full")

    assert error.fields == ["dsn host"]
    assert says in str(error)
    assert len(str(error)) < 600  # a 5,000-character host is not echoed whole


@pytest.mark.parametrize(
    ("netloc", "host"),
    [
        (HOST, HOST),
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "localhost"),
        ("%31%32%37.0.0.1", "127.0.0.1"),  # encoded once: decoded once
        ("DB_1-a.Example.com.", "db_1-a.example.com."),  # lower case, as the token is signed
        ("[2001:db8::1]", "2001:db8::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("h" * 63 + "." + "h" * 63 + "." + "h" * 63 + "." + "h" * 61, None),  # 253 characters
    ],
)
def test_a_host_name_or_address_is_accepted_as_given_decoded_once(
    netloc: str, host: str | None
) -> None:
    target = parse_target(f"postgresql://{netloc}:6000/db", AURORA)

    assert target.host == (host or netloc)
    assert target.port == 6000


@pytest.mark.parametrize(
    "port",
    ["0", "65536", "99999", "-1", "+5432", " 5432", "5432 ", "1e3", "\uff11\uff12", "9" * 5000],
)
def test_a_port_outside_1_to_65535_or_not_digits_is_a_config_error(port: str) -> None:
    # Port 0 used to become 5432 silently; "9" * 5000 would exceed int()'s digit limit;
    # fullwidth digits pass str.isdigit().
    error = dsn_error(f"postgresql://{HOST}:{quote(port, safe='+')}/db")

    assert error.fields == ["dsn port"]
    assert "1 to 65535" in str(error)
    assert len(str(error)) < 400


def test_an_empty_port_means_the_default() -> None:
    assert parse_target(f"postgresql://{HOST}:/db", AURORA).port == 5432


def test_a_fragment_is_a_config_error() -> None:
    # urllib dropped it: "h#@evil/db" read as host h, and no one said so.
    error = dsn_error(f"postgresql://app@{HOST}#@evil.example.com/db")

    assert error.fields == ["dsn"]
    assert "%23" in str(error)


def test_a_query_parameter_given_twice_with_different_values_is_a_config_error() -> None:
    # The last one won: "?sslmode=disable&sslmode=require" hid the refused mode.
    error = dsn_error(f"postgresql://{HOST}/db?sslmode=require&sslmode=disable")

    assert error.fields == ["sslmode"]
    assert "twice" in str(error)
    assert parse_target(f"postgresql://{HOST}/db?x=1&x=1", AURORA).options == {"x": "1"}


# --- ?host= and ?port= as libpq reads them (issue 14) ---------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "mysql", "mysql+asyncmy"])
def test_query_host_and_port_are_used_when_the_authority_has_none(scheme: str) -> None:
    target = parse_target(f"{scheme}:///db?host={HOST}&port=6000", AURORA)

    assert (target.host, target.port) == (HOST, 6000)
    assert target.options == {}


def test_query_port_is_used_with_the_authority_host() -> None:
    # It used to be ignored silently (5432) and handed to the driver as an option.
    target = parse_target(f"postgresql://{HOST}/db?port=6000", AURORA)

    assert target.port == 6000
    assert "port" not in target.options


def test_query_host_and_port_repeating_the_authority_are_accepted() -> None:
    target = parse_target(f"postgresql://{HOST}:6000/db?host={HOST}&port=6000", AURORA)

    assert (target.host, target.port) == (HOST, 6000)


def test_query_host_and_port_disagreeing_with_the_authority_are_config_errors() -> None:
    error = dsn_error(f"postgresql://{HOST}:6000/db?host=other.example.com&port=7000")

    assert error.fields == ["dsn ?host=", "dsn ?port="]
    assert "give the host once" in str(error)
    assert "give the port once" in str(error)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("host=/tmp", "dsn ?host="),
        ("host=%2Ftmp", "dsn ?host="),
        ("host=%252Ftmp", "dsn ?host="),
        ("host=@abstract", "dsn ?host="),
        ("host=h1,h2", "dsn ?host="),
        ("host=a+b", "dsn ?host="),  # '+' is a space in a query
        ("host=[::1]", "dsn ?host="),
        ("host=" + "h" * 300, "dsn ?host="),
        ("port=0", "dsn ?port="),
        ("port=5432,5433", "dsn ?port="),
        ("port=65536", "dsn ?port="),
        ("port=x", "dsn ?port="),
    ],
)
def test_a_hostile_query_host_or_port_is_a_config_error(query: str, field: str) -> None:
    error = dsn_error(f"postgresql:///db?{query}")

    assert field in error.fields
    assert "needs a host" not in str(error) or field == "dsn ?port="


def test_an_empty_query_host_is_no_host() -> None:
    assert "needs a host" in str(dsn_error("postgresql:///db?host="))


def test_redshift_takes_query_host_and_port_too() -> None:
    target = parse_target(f"redshift:///dev?host={HOST}&port=5440", PROVISIONED)

    assert (target.host, target.port, target.discover_from) == (HOST, 5440, None)


# --- auth_for checks host and port before anything that calls AWS ---------------------------


@pytest.mark.parametrize(
    ("host", "port", "field"),
    [
        ("h", 99999, "port"),  # was ValueError("Port out of range") after one AssumeRole
        ("h", 0, "port"),
        ("h", -1, "port"),
        ("h", True, "port"),
        ("h", "5432", "port"),
        ("h", 5432.0, "port"),
        ("/var/run/sock", 5432, "host"),
        ("h1,h2", 5432, "host"),
        ("a b", 5432, "host"),
        ("db\x00.example.com", 5432, "host"),
        ("h" * 5000, 5432, "host"),
        ("[::1]", 5432, "host"),
        ("::g", 5432, "host"),
        (b"h", 5432, "host"),
    ],
)
def test_auth_for_refuses_a_bad_host_or_port_naming_it(host: Any, port: Any, field: str) -> None:
    from iampool import auth_for

    cfg = config(role_arn="arn:aws:iam::123456789012:role/app")
    with pytest.raises(ConfigError) as caught:
        auth_for(cfg, host=host, port=port)

    assert caught.value.fields == [field]
    assert caught.value.context == "auth_for"
    assert len(str(caught.value)) < 600


@pytest.mark.parametrize(("host", "port"), [(HOST, 5432), ("::1", 1), ("127.0.0.1", 65535)])
def test_auth_for_accepts_a_host_name_or_address_and_a_port(host: str, port: int) -> None:
    from iampool import auth_for

    assert auth_for(AURORA, host=host, port=port).config == AURORA


# --- what asyncpg is given -----------------------------------------------------------------


def test_asyncpg_gets_host_port_and_database_as_keywords_and_a_dsn_of_options_only() -> None:
    from iampool import CredentialCache
    from iampool.pools import asyncpg, resolve

    cache = CredentialCache()
    dsn = f"postgresql://{HOST}:6000/app%2Fdb?application_name=a%26b&sslmode=verify-full"
    settings = asyncpg._settings(resolve(dsn, AURORA, cache))

    assert (settings["host"], settings["port"], settings["database"]) == (HOST, 6000, "app/db")
    assert settings["user"] == "app"
    assert settings["dsn"] == "postgresql://?application_name=a%26b"
    plain = resolve(f"postgresql://{HOST}/db", AURORA, cache)
    assert asyncpg._settings(plain)["dsn"] is None


def auth_for_target(target: Any) -> Any:
    from iampool import auth_for

    return auth_for(AURORA, host=target.host, port=target.port)
