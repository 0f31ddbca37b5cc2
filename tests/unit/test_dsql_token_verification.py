"""verify_dsql_token: what the DSQL-mode gateway accepts, on tokens signed like botocore does."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from iampool._aws import AwsCredentials
from iampool._sigv4 import sign_dsql_token, sign_rds_token
from iampool.testing import verify_dsql_token

HOST = "abc123.dsql.us-east-1.on.aws"


@dataclass(frozen=True)
class Key:
    access_key_id: str = "ASIAEXAMPLE"
    secret_access_key: str = "secret-key"
    session_token: str | None = "session-token"
    expires_at: datetime | None = None


KEY = Key()
CREDENTIALS = AwsCredentials("ASIAEXAMPLE", "secret-key", "session-token", None, "test")


def lookup(access_key_id: str) -> Key | None:
    return KEY if access_key_id == KEY.access_key_id else None


def verify(token: str, *, user: str = "admin", host: str = HOST, after: float = 0) -> str | None:
    now = datetime.now(timezone.utc) + timedelta(seconds=after)
    return verify_dsql_token(
        token, user=user, host=host, region="us-east-1", signing_key=lookup, now=now
    )


def token(*, admin: bool = True, expires: int = 900, host: str = HOST) -> str:
    return sign_dsql_token(
        CREDENTIALS, host, "us-east-1", admin=admin, expires=expires, now=time.time()
    )


def test_an_admin_token_for_the_admin_role_is_accepted() -> None:
    assert verify(token()) is None


def test_a_db_connect_token_for_another_role_is_accepted() -> None:
    assert verify(token(admin=False), user="reporting") is None


@pytest.mark.parametrize(("admin", "user"), [(False, "admin"), (True, "reporting")])
def test_the_action_must_match_the_role(admin: bool, user: str) -> None:
    assert verify(token(admin=admin), user=user) == "wrong_action"


def test_a_token_for_another_cluster_is_refused() -> None:
    assert verify(token(host="other.dsql.us-east-1.on.aws")) == "wrong_endpoint"


def test_a_token_is_valid_for_the_lifetime_its_signer_chose() -> None:
    assert verify(token(expires=120), after=100) is None
    assert verify(token(expires=120), after=121) == "expired"


def test_an_rds_token_is_not_a_dsql_token() -> None:
    rds = sign_rds_token(CREDENTIALS, HOST, 5432, "admin", "us-east-1", now=time.time())

    assert verify(rds) == "malformed_token"


def test_a_tampered_token_is_refused() -> None:
    tampered = token().replace("Action=DbConnectAdmin", "Action=DbConnect")

    assert verify(tampered, user="reporting") == "bad_signature"
