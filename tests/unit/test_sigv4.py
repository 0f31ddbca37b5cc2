"""The local token signer gives exactly the token botocore's signer gives, for the same inputs.

botocore's ``SigV4QueryAuth`` (what ``generate_db_auth_token`` uses) is run at the same frozen
instant; the two tokens must be equal character for character, including odd users, hosts with
capitals, IPv6 addresses, https's default port, and credentials without a session token.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import create_request_object, prepare_request_dict
from botocore.credentials import ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from iampool._aws import AwsCredentials
from iampool._sigv4 import RDS_TOKEN_LIFETIME, datestamp, presign, signing_parts

NOW = 1_800_000_000.0 + 0.25  # 2027-01-15T08:00:00.25Z
SESSION = AwsCredentials(
    access_key_id="ASIAEXAMPLEKEY000001",
    secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    session_token="IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+/=" * 12,
    expires_at=NOW + 3600,
    source="test",
)
LONG_TERM = AwsCredentials("AKIAEXAMPLEKEY000002", "secret/with+plus=", None, None, "test")


@pytest.fixture
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc).replace(tzinfo=None)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *_, **__: frozen)


def botocore_token(
    credentials: AwsCredentials, host: str, port: int, user: str, region: str
) -> str:
    """What botocore's generate_db_auth_token does, minus the client around it."""
    url_host = f"[{host}]" if ":" in host else host
    request: dict[str, Any] = {
        "url_path": "/",
        "query_string": "",
        "headers": {},
        "body": {"Action": "connect", "DBUser": user},
        "method": "GET",
        "context": {},
    }
    prepare_request_dict(request, f"https://{url_host}:{port}")
    prepared = create_request_object(request)
    read_only = ReadOnlyCredentials(
        credentials.access_key_id, credentials.secret_access_key, credentials.session_token
    )
    SigV4QueryAuth(read_only, "rds-db", region, expires=RDS_TOKEN_LIFETIME).add_auth(prepared)
    prepared.prepare()
    url: str = prepared.url
    return url[len("https://") :]


def local_token(credentials: AwsCredentials, host: str, port: int, user: str, region: str) -> str:
    parts = signing_parts(credentials, region=region, datestamp=datestamp(NOW))
    return presign(parts, host=host, port=port, user=user, now=NOW).render(host, port, user)


@pytest.mark.usefixtures("frozen_botocore")
@pytest.mark.parametrize("credentials", [SESSION, LONG_TERM], ids=["session", "long-term"])
@pytest.mark.parametrize(
    ("host", "port", "user", "region"),
    [
        ("app.cluster-abc123.us-east-1.rds.amazonaws.com", 5432, "app", "us-east-1"),
        ("Mixed.Case.Example.COM", 3306, "report_user", "eu-west-1"),
        ("db.example.com", 443, "a@b c/+=%", "ap-southeast-2"),
        ("127.0.0.1", 33219, "IAM:app", "us-gov-west-1"),
        ("::1", 5432, "üser", "us-east-1"),
    ],
)
def test_local_token_equals_botocores(
    credentials: AwsCredentials, host: str, port: int, user: str, region: str
) -> None:
    assert local_token(credentials, host, port, user, region) == botocore_token(
        credentials, host, port, user, region
    )


@pytest.mark.usefixtures("frozen_botocore")
@settings(max_examples=200, deadline=None)
@given(
    user=st.text(min_size=1, max_size=40).filter(lambda text: "\x00" not in text),
    port=st.integers(1, 65535),
    label=st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True),
)
def test_local_token_equals_botocores_for_any_user_and_port(
    user: str, port: int, label: str
) -> None:
    host = f"{label}.example.com"
    assert local_token(SESSION, host, port, user, "us-east-1") == botocore_token(
        SESSION, host, port, user, "us-east-1"
    )


def test_a_presigned_token_keeps_no_text_of_its_own() -> None:
    parts = signing_parts(SESSION, region="us-east-1", datestamp=datestamp(NOW))
    token = presign(parts, host="h.example", port=5432, user="app", now=NOW)

    assert len(token.signature) == 32
    assert token.amz_date == "20270115T080000Z"
    assert "Security-Token" not in repr(token)
    assert SESSION.secret_access_key not in repr(parts)
