"""The gateway's login checks as pure functions: RDS IAM tokens signed by botocore, Redshift
temporary passwords, and the SCRAM exchange the gateway uses towards a password-protected upstream.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import botocore.session
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from iampool.testing import verify_rds_token, verify_redshift_password
from iampool.testing._verify import parse_rds_token
from iampool.testing.pg import scram_client_final

HOST, PORT, REGION, USER = "127.0.0.1", 15432, "us-east-1", "app"


@dataclass(frozen=True)
class Key:
    access_key_id: str
    secret_access_key: str
    session_token: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class Password:
    user: str
    password: str
    expires_at: datetime
    database: str | None


TEMPORARY = Key("ASIATEMPORARYKEY0001", "temporary/secret+key=", "FwoGZXIvYXdzE" * 60, None)
PERMANENT = Key("AKIAPERMANENTKEY0001", "permanent-secret", None, None)
BOTOCORE = botocore.session.get_session()  # loading service models once keeps the tests fast


def botocore_token(
    key: Key = TEMPORARY,
    *,
    host: str = HOST,
    port: int = PORT,
    user: str = USER,
    region: str = REGION,
    session_token: str | None = None,
    without_session_token: bool = False,
) -> str:
    """A token from botocore's own RDS ``generate_db_auth_token``."""
    token = None if without_session_token else session_token or key.session_token
    client = BOTOCORE.create_client(
        "rds",
        region_name=region,
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret_access_key,
        aws_session_token=token,
    )
    return str(client.generate_db_auth_token(host, port, user, Region=region))


def presigned_by_botocore(
    *, service: str = "rds-db", action: str = "connect", expires: int = 900
) -> str:
    """A presigned URL from botocore's ``SigV4QueryAuth``: another service, action or lifetime."""
    request = AWSRequest(
        method="GET",
        url=f"https://{HOST}:{PORT}/",
        data={"Action": action, "DBUser": USER},
    )
    credentials = Credentials(
        TEMPORARY.access_key_id, TEMPORARY.secret_access_key, TEMPORARY.session_token
    )
    SigV4QueryAuth(credentials, service, REGION, expires=expires).add_auth(request)
    return str(request.url).removeprefix("https://")


def signed_at(token: str) -> datetime:
    parsed = parse_rds_token(token)
    assert parsed is not None
    return parsed.signed_at


def verify(
    token: str,
    *,
    user: str = USER,
    host: str = HOST,
    port: int = PORT,
    issued: tuple[Key, ...] = (TEMPORARY, PERMANENT),
    now: datetime | None = None,
) -> str | None:
    keys = {key.access_key_id: key for key in issued}
    return verify_rds_token(
        token,
        user=user,
        host=host,
        port=port,
        region=REGION,
        signing_key=keys.get,
        now=now or datetime.now(timezone.utc),
    )


def test_a_botocore_token_for_a_temporary_key_is_valid() -> None:
    token = botocore_token()

    assert verify(token) is None


def test_a_botocore_token_for_a_permanent_key_is_valid() -> None:
    assert verify(botocore_token(PERMANENT)) is None


def test_a_token_is_one_to_two_kilobytes_with_a_session_token_and_verifies_whole() -> None:
    token = botocore_token()

    assert 1000 < len(token) < 4096
    assert verify(token[:-1]) == "malformed_token"


def test_user_names_with_reserved_characters_are_verified_as_botocore_encodes_them() -> None:
    user = "IAM:app user+/=~ünïcode"

    assert verify(botocore_token(user=user), user=user) is None


def test_host_names_are_compared_case_insensitively_as_sigv4_lower_cases_them() -> None:
    token = botocore_token(host="DB.Example.COM")

    assert verify(token, host="db.example.com") is None


def test_on_port_443_the_signed_host_header_has_no_port_like_botocore() -> None:
    assert verify(botocore_token(port=443), port=443) is None


def test_presigning_with_sigv4_query_auth_matches_generate_db_auth_token() -> None:
    assert verify(presigned_by_botocore()) is None


def test_a_forged_signature_is_rejected() -> None:
    token = botocore_token()
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")

    assert verify(forged) == "bad_signature"


def test_a_token_signed_with_another_secret_is_rejected() -> None:
    impostor = replace(TEMPORARY, secret_access_key="guessed")

    assert verify(botocore_token(impostor)) == "bad_signature"


def test_a_token_edited_to_name_another_user_fails_its_signature() -> None:
    token = botocore_token().replace("DBUser=app&", "DBUser=admin&")

    assert verify(token, user="admin") == "bad_signature"


def test_a_token_for_another_user_is_rejected() -> None:
    assert verify(botocore_token(user="other")) == "wrong_user"


@pytest.mark.parametrize(
    ("host", "port"), [("localhost", PORT), (HOST, PORT + 1), ("db.example.com", 5432)]
)
def test_a_token_for_another_endpoint_is_rejected(host: str, port: int) -> None:
    assert verify(botocore_token(host=host, port=port)) == "wrong_endpoint"


def test_a_token_signed_for_another_region_is_rejected() -> None:
    assert verify(botocore_token(region="eu-west-1")) == "wrong_region"


def test_a_presigned_url_for_another_service_is_rejected() -> None:
    assert verify(presigned_by_botocore(service="rds")) == "wrong_service"


def test_a_presigned_url_for_another_action_is_rejected() -> None:
    assert verify(presigned_by_botocore(action="describe")) == "wrong_action"


def test_a_token_is_valid_for_its_900_seconds_and_expired_after() -> None:
    token = botocore_token()
    start = signed_at(token)

    assert verify(token, now=start + timedelta(seconds=899)) is None
    assert verify(token, now=start + timedelta(seconds=900)) == "expired"


@pytest.mark.parametrize("expires", [901, 1800, 3600, 7 * 24 * 3600])
def test_a_token_asking_to_live_longer_than_900_seconds_expires_after_900_as_rds_decides(
    expires: int,
) -> None:
    token = presigned_by_botocore(expires=expires)
    start = signed_at(token)

    assert f"&X-Amz-Expires={expires}&" in token
    assert verify(token, now=start + timedelta(seconds=899)) is None
    assert verify(token, now=start + timedelta(seconds=900)) == "expired"
    assert verify(token, now=start + timedelta(minutes=20)) == "expired"
    assert verify(token, now=start + timedelta(minutes=30)) == "expired"


def test_a_token_asking_for_less_than_900_seconds_expires_when_it_asked() -> None:
    token = presigned_by_botocore(expires=60)
    start = signed_at(token)

    assert verify(token, now=start + timedelta(seconds=59)) is None
    assert verify(token, now=start + timedelta(seconds=60)) == "expired"


def test_a_token_dated_beyond_the_clock_skew_is_not_yet_valid() -> None:
    token = botocore_token()
    start = signed_at(token)

    assert verify(token, now=start - timedelta(minutes=4)) is None
    assert verify(token, now=start - timedelta(minutes=6)) == "not_yet_valid"


def test_a_key_the_authority_never_issued_is_unknown() -> None:
    assert verify(botocore_token(), issued=(PERMANENT,)) == "unknown_key"


def test_a_temporary_key_signing_without_its_session_token_is_rejected() -> None:
    assert verify(botocore_token(without_session_token=True)) == "no_session_token"


def test_a_temporary_key_signing_with_another_session_token_is_rejected() -> None:
    assert verify(botocore_token(session_token="stolen-elsewhere")) == "wrong_session_token"


def test_a_permanent_key_presenting_a_session_token_is_rejected() -> None:
    assert verify(botocore_token(PERMANENT, session_token="bogus")) == "wrong_session_token"


def test_a_token_signed_with_expired_credentials_is_rejected() -> None:
    token = botocore_token()
    expired = replace(TEMPORARY, expires_at=signed_at(token) + timedelta(seconds=30))

    assert verify(token, issued=(expired,), now=signed_at(token) + timedelta(seconds=10)) is None
    assert verify(token, issued=(expired,), now=signed_at(token) + timedelta(seconds=30)) == (
        "expired_key"
    )


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not a token",
        "127.0.0.1:15432",
        "127.0.0.1:15432/?",
        "127.0.0.1:99999/?Action=connect",
        "\x00\xff" * 40,
        "x" * 100_000,
    ],
)
def test_garbage_is_a_malformed_token(garbage: str) -> None:
    assert verify(garbage) == "malformed_token"


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA1"),
        lambda t: t.replace("&X-Amz-Expires=900", "&X-Amz-Expires=0"),
        lambda t: t.replace("&X-Amz-Expires=900", "&X-Amz-Expires=900&X-Amz-Expires=900"),
        lambda t: t.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=host%3Bx-amz-date"),
        lambda t: t.replace("%2Faws4_request", "%2Faws5_request"),
        lambda t: t.replace("/?", "/path?"),
        lambda t: t + "%ZZ",
        lambda t: t + "&orphan",
    ],
    ids=[
        "algorithm",
        "zero-expiry",
        "repeated-param",
        "signed-headers",
        "scope-terminator",
        "path",
        "bad-escape",
        "pair-without-equals",
    ],
)
def test_a_structurally_altered_token_is_malformed(edit: object) -> None:
    assert callable(edit)
    assert verify(edit(botocore_token())) == "malformed_token"


@given(st.text(max_size=300))
def test_verification_never_raises_on_arbitrary_text(text: str) -> None:
    assert verify(text) in REASONS  # rejected, for one of the reasons the gateway knows


@given(st.integers(min_value=0, max_value=1500), st.characters(codec="ascii"))
def test_verification_never_raises_on_a_corrupted_token(position: int, char: str) -> None:
    token = SAMPLE_TOKEN
    position %= len(token)
    corrupted = token[:position] + char + token[position + 1 :]

    assert verify(corrupted, now=signed_at(SAMPLE_TOKEN)) in (None, *REASONS)


SAMPLE_TOKEN = botocore_token()
REASONS = {
    "malformed_token",
    "wrong_action",
    "wrong_user",
    "wrong_endpoint",
    "wrong_service",
    "wrong_region",
    "expired",
    "not_yet_valid",
    "unknown_key",
    "bad_signature",
    "no_session_token",
    "wrong_session_token",
}


def test_the_parsed_token_repr_holds_no_secret() -> None:
    parsed = parse_rds_token(SAMPLE_TOKEN)

    assert parsed is not None
    assert parsed.signature not in repr(parsed)
    assert TEMPORARY.session_token is not None
    assert TEMPORARY.session_token[:20] not in repr(parsed)


# -- Redshift temporary passwords ------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
ISSUED = Password("IAM:app", "AskR3dsh1ftPassw0rd", NOW + timedelta(minutes=15), "dev")


def check_password(
    password: str,
    *,
    user: str = "IAM:app",
    database: str | None = "dev",
    issued: Password = ISSUED,
    now: datetime = NOW,
) -> str | None:
    def lookup(u: str, p: str) -> Password | None:
        return issued if (u, p) == (issued.user, issued.password) else None

    return verify_redshift_password(password, user=user, database=database, lookup=lookup, now=now)


def test_an_issued_redshift_password_is_valid_until_it_expires() -> None:
    assert check_password(ISSUED.password) is None
    assert check_password(ISSUED.password, now=ISSUED.expires_at) == "expired"


def test_a_redshift_password_that_was_not_issued_is_rejected() -> None:
    assert check_password("guessed") == "bad_password"


def test_a_redshift_password_is_bound_to_its_user() -> None:
    assert check_password(ISSUED.password, user="IAM:other") == "bad_password"


def test_a_redshift_password_is_bound_to_the_database_it_was_issued_for() -> None:
    assert check_password(ISSUED.password, database="other") == "wrong_database"
    unbound = replace(ISSUED, database=None)
    assert check_password(ISSUED.password, database="other", issued=unbound) is None


def test_a_lookup_returning_another_users_password_is_still_rejected() -> None:
    def sloppy(user: str, password: str) -> Password:
        return ISSUED

    reason = verify_redshift_password(
        ISSUED.password, user="IAM:eve", database="dev", lookup=sloppy, now=NOW
    )

    assert reason == "wrong_user"


# -- SCRAM towards a password-protected upstream ---------------------------------------------


def test_scram_client_final_matches_the_rfc_7677_example() -> None:
    client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )

    final, server_signature = scram_client_final(
        "pencil", client_first_bare, server_first, client_nonce="rOprNGfwEbeRWgbNEkqO"
    )

    assert final == (
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert server_signature == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert base64.b64decode(server_signature)
