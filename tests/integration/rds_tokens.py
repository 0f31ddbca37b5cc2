"""RDS tokens made by botocore's own signer (never iampool's), for the gateway tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from unittest import mock
from urllib.parse import quote

import botocore.auth
import botocore.session
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from iampool.testing import FakeAws, IamGateway, SigningKey
from tests.users import APP

REGION = "us-east-1"
BOTOCORE = botocore.session.get_session()


@dataclass(frozen=True)
class Key:
    access_key_id: str
    secret_access_key: str
    session_token: str | None
    expires_at: datetime | None


class Authority:
    """The smallest stand-in for what AWS issued, where FakeAws cannot issue the key needed."""

    def __init__(self, *keys: Key) -> None:
        self.keys = {key.access_key_id: key for key in keys}

    def signing_key(self, access_key_id: str) -> Key | None:
        return self.keys.get(access_key_id)

    def redshift_password(self, user: str, password: str) -> None:
        return None


NEVER_ISSUED = Key("ASIANEVERISSUED00001", "guessed/secret", "guessed-token", None)


@dataclass(frozen=True)
class Tokens:
    """Makes RDS tokens with botocore's signer, by default with a key FakeAws issued."""

    key: SigningKey

    def __call__(
        self,
        gateway: IamGateway,
        user: str = APP,
        *,
        key: SigningKey | None = None,
        host: str | None = None,
        port: int | None = None,
        region: str = REGION,
        without_session_token: bool = False,
        expires_in: int = 900,
        signed_at: datetime | None = None,
    ) -> str:
        """``generate_db_auth_token``; with ``expires_in`` other than its fixed 900 s, the same
        presigned URL from botocore's ``SigV4QueryAuth``. ``signed_at`` sets botocore's clock."""
        key = key or self.key
        session_token = None if without_session_token else key.session_token
        endpoint = (host or gateway.host, port or gateway.port)
        with botocore_clock(signed_at):
            if expires_in != 900:
                return presigned_token(*endpoint, user, region, key, session_token, expires_in)
            client = BOTOCORE.create_client(
                "rds",
                region_name=region,
                aws_access_key_id=key.access_key_id,
                aws_secret_access_key=key.secret_access_key,
                aws_session_token=session_token,
            )
            return str(client.generate_db_auth_token(*endpoint, user, region))


@contextmanager
def botocore_clock(moment: datetime | None) -> Iterator[None]:
    """botocore's signer reads the time as ``moment`` (aware UTC) inside the block."""
    if moment is None:
        yield
        return

    def now(remove_tzinfo: bool = True) -> datetime:
        utc = moment.astimezone(timezone.utc)
        return utc.replace(tzinfo=None) if remove_tzinfo else utc

    with mock.patch.object(botocore.auth, "get_current_datetime", now):
        yield


def presigned_token(
    host: str,
    port: int,
    user: str,
    region: str,
    key: SigningKey,
    session_token: str | None,
    expires_in: int,
) -> str:
    """An RDS token as ``generate_db_auth_token`` makes it, but asking for ``expires_in`` s."""
    request = AWSRequest(
        method="GET", url=f"https://{host}:{port}/?Action=connect&DBUser={quote(user, safe='')}"
    )
    credentials = Credentials(key.access_key_id, key.secret_access_key, session_token)
    SigV4QueryAuth(credentials, "rds-db", region, expires=expires_in).add_auth(request)
    return str(request.url).removeprefix("https://")


def assumed_role_tokens(fake_aws: FakeAws, role_name: str) -> Tokens:
    """Tokens signed with temporary credentials from AssumeRole on the fake AWS."""
    sts = BOTOCORE.create_client(
        "sts",
        region_name=REGION,
        endpoint_url=fake_aws.endpoint_url,
        aws_access_key_id=fake_aws.base_key.access_key_id,
        aws_secret_access_key=fake_aws.base_key.secret_access_key,
    )
    role_arn = fake_aws.create_role(role_name)
    issued = sts.assume_role(RoleArn=role_arn, RoleSessionName="gateway-test")["Credentials"]
    key = fake_aws.signing_key(issued["AccessKeyId"])
    assert key is not None
    assert key.session_token == issued["SessionToken"]
    return Tokens(key)
