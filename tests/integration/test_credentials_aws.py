"""The credential core against a real AWS stand-in: moto's server on 127.0.0.1.

Nothing here reaches real AWS: every test points ``AWS_ENDPOINT_URL`` at a local server and uses
dummy base credentials, with instance metadata and shared config files switched off. Faults moto
cannot produce (throttling, AccessDenied) come from a tiny local server that answers STS requests
with the error documents STS sends.

RDS tokens are checked with an independent SigV4 verifier written here from the specification,
against the secret moto issued; it shares no code with iampool's or botocore's signer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import anyio
import botocore.session
import pytest
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from iampool import AwsIamConfig, CredentialCache, CredentialError, auth_for

pytestmark = pytest.mark.anyio

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
DB_HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"
BASE_KEY_ID = "AKIAIAMPOOLTESTBASE1"
BASE_SECRET = "base-secret-for-tests-only/0123456789abcdef"


# -- the AWS stand-in ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def isolate_from_real_aws(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", BASE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", BASE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """moto's endpoint, reset, with the environment pointing at it."""
    reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(reset, timeout=10):  # noqa: S310 - a local http URL
        pass
    isolate_from_real_aws(monkeypatch, moto_endpoint)
    return moto_endpoint


@pytest.fixture
def new_cache() -> Iterator[Callable[..., CredentialCache]]:
    caches: list[CredentialCache] = []

    def new(**options: Any) -> CredentialCache:
        caches.append(CredentialCache(**options))
        return caches[-1]

    yield new
    for cache in caches:
        cache.close()


def create_role(endpoint: str, name: str) -> str:
    iam = botocore.session.get_session().create_client(
        "iam", region_name=REGION, endpoint_url=endpoint
    )
    trust = '{"Version":"2012-10-17","Statement":[]}'
    arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.close()
    return arn


def assumed_roles() -> list[Any]:
    """What moto's STS recorded for every AssumeRole it answered (key, secret, parameters)."""
    return list(sts_backends[ACCOUNT]["aws"].assumed_roles)


def rds_config(role_arn: str | None = None, **fields: Any) -> AwsIamConfig:
    block: dict[str, Any] = {"enabled": True, "region": REGION, "db_username": "app", **fields}
    if role_arn is not None:
        block["role_arn"] = role_arn
    return AwsIamConfig.from_extra(block)


# -- an independent SigV4 verifier -----------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_signature(token: str, secret: str) -> str:
    """Recompute an RDS token's signature from the SigV4 specification: canonical request, string
    to sign, derived key."""
    url = urlsplit(f"https://{token}")
    params = parse_qsl(url.query, keep_blank_values=True, strict_parsing=True)
    fields = dict(params)
    canonical_query = "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(params)
        if name != "X-Amz-Signature"
    )
    canonical_request = "\n".join(
        [
            "GET",
            "/",
            canonical_query,
            f"host:{url.netloc}",
            "",
            "host",
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    amz_date = fields["X-Amz-Date"]
    _, date, region, service, terminal = fields["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/{terminal}"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, terminal):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def token_fields(token: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(f"https://{token}").query, keep_blank_values=True))


def assert_token_verifies(token: str, *, secret: str, session_token: str | None) -> None:
    fields = token_fields(token)
    assert fields["Action"] == "connect"
    assert fields["DBUser"] == "app"
    assert fields["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["X-Amz-SignedHeaders"] == "host"
    assert fields["X-Amz-Expires"] == "900"
    assert fields["X-Amz-Credential"].endswith(f"/{REGION}/rds-db/aws4_request")
    assert fields.get("X-Amz-Security-Token") == session_token
    signed_at = datetime.strptime(fields["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc
    )
    assert abs(datetime.now(timezone.utc) - signed_at) < timedelta(minutes=5)
    assert hmac.compare_digest(fields["X-Amz-Signature"], sigv4_signature(token, secret))


# -- STS AssumeRole --------------------------------------------------------------------------


async def test_assume_role_sends_external_id_duration_and_a_traceable_session_name(
    aws: str, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = create_role(aws, "app-db")
    cache = new_cache()
    config = rds_config(role_arn, external_id="ext-7f3a9c", session_duration=1800)
    credentials = await cache.aws_credentials(config)

    [assumed] = assumed_roles()
    assert assumed.role_arn == role_arn
    assert assumed.external_id == "ext-7f3a9c"
    assert re.fullmatch(rf"iampool-[\w+=,.@-]+-{os.getpid()}", assumed.session_name)
    assert len(assumed.session_name) <= 64
    assert assumed.access_key_id == credentials.access_key_id
    # DurationSeconds reached STS: the session it issued lasts 1800 s.
    issued_for = assumed.expiration.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)
    assert timedelta(seconds=1700) < issued_for <= timedelta(seconds=1800)
    assert credentials.expires_at == pytest.approx(
        assumed.expiration.replace(tzinfo=timezone.utc).timestamp(), abs=1
    )
    assert cache.stats()["sts_calls"] == 1


async def test_configured_role_session_name_reaches_sts(
    aws: str, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = create_role(aws, "app-db")
    cache = new_cache()
    await cache.aws_credentials(rds_config(role_arn, role_session_name="superset-iam-session"))
    [assumed] = assumed_roles()
    assert assumed.session_name == "superset-iam-session"
    assert assumed.external_id is None


async def test_herd_of_200_first_connects_makes_one_assume_role_call(
    aws: str, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = create_role(aws, "app-db")
    cache = new_cache()
    auth = auth_for(rds_config(role_arn), host=DB_HOST, port=5432, cache=cache)
    tokens: list[str] = []

    async def connect() -> None:
        tokens.append((await auth.credentials()).password)

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(connect)
    assert len(assumed_roles()) == 1
    assert len(set(tokens)) == 1
    assert (cache.stats()["sts_calls"], cache.stats()["tokens_signed"]) == (1, 1)


# -- RDS tokens ------------------------------------------------------------------------------


async def test_rds_token_verifies_against_the_secret_moto_issued(
    aws: str, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = create_role(aws, "app-db")
    cache = new_cache()
    auth = auth_for(rds_config(role_arn), host=DB_HOST, port=5432, cache=cache)
    token = (await auth.credentials()).password

    [assumed] = assumed_roles()
    assert token_fields(token)["X-Amz-Credential"].startswith(f"{assumed.access_key_id}/")
    assert_token_verifies(
        token, secret=assumed.secret_access_key, session_token=assumed.session_token
    )
    assert urlsplit(f"https://{token}").netloc == f"{DB_HOST}:5432"

    # The verifier is not a rubber stamp: another user, endpoint or secret does not verify.
    tampered = token.replace("DBUser=app", "DBUser=admin")
    assert (
        sigv4_signature(tampered, assumed.secret_access_key)
        != token_fields(token)["X-Amz-Signature"]
    )
    moved = token.replace(f"{DB_HOST}:5432", f"{DB_HOST}:5433")
    assert (
        sigv4_signature(moved, assumed.secret_access_key) != token_fields(token)["X-Amz-Signature"]
    )
    assert sigv4_signature(token, BASE_SECRET) != token_fields(token)["X-Amz-Signature"]


async def test_same_account_config_signs_with_the_default_chain_and_never_calls_sts(
    aws: str, new_cache: Callable[..., CredentialCache]
) -> None:
    cache = new_cache()
    auth = auth_for(rds_config(), host=DB_HOST, port=3306, cache=cache)
    token = (await auth.credentials()).password

    assert token_fields(token)["X-Amz-Credential"].startswith(f"{BASE_KEY_ID}/")
    assert_token_verifies(token, secret=BASE_SECRET, session_token=None)
    assert assumed_roles() == []
    assert (cache.stats()["sts_calls"], cache.stats()["tokens_signed"]) == (0, 1)


# -- failures --------------------------------------------------------------------------------


class StsErrorServer:
    """Answers every request with one STS error document, as STS does, and counts requests."""

    def __init__(self, status: int, code: str, message: str) -> None:
        body = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>8d5a2ed6-6d4a-4b4b-9d4e-1b6f1c0f0a11</RequestId></ErrorResponse>"
        ).encode()
        self.requests: list[dict[str, str]] = []
        server_state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                server_state.requests.append(form)
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StsErrorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/app-db"


async def test_throttled_assume_role_fails_with_throttling_after_the_configured_attempts(
    monkeypatch: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache]
) -> None:
    with StsErrorServer(400, "Throttling", "Rate exceeded") as sts:
        isolate_from_real_aws(monkeypatch, sts.endpoint)
        cache = new_cache(max_attempts=3)
        with pytest.raises(CredentialError) as caught:
            await cache.aws_credentials(rds_config(ROLE_ARN))

    assert caught.value.code == "Throttling"
    message = str(caught.value)
    assert message.startswith(f"Unable to assume IAM role {ROLE_ARN} in {REGION}: Throttling")
    assert [request["Action"] for request in sts.requests] == ["AssumeRole"] * 3
    assert cache.stats()["errors"] == 1


async def test_access_denied_says_unable_to_assume_iam_role_and_what_to_check(
    monkeypatch: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache]
) -> None:
    denial = (
        f"User: arn:aws:iam::{ACCOUNT}:user/app is not authorized to perform: sts:AssumeRole "
        f"on resource: {ROLE_ARN}"
    )
    with StsErrorServer(403, "AccessDenied", denial) as sts:
        isolate_from_real_aws(monkeypatch, sts.endpoint)
        cache = new_cache()
        config = rds_config(ROLE_ARN, external_id="ext-7f3a9c")
        auth = auth_for(config, host=DB_HOST, port=5432, cache=cache)
        with pytest.raises(CredentialError) as caught:
            await auth.credentials()

    assert caught.value.code == "AccessDenied"
    message = str(caught.value)
    assert message.startswith(f"Unable to assume IAM role {ROLE_ARN} in {REGION}: AccessDenied")
    assert "trust policy" in message
    assert "ext-7f3a9c" not in message
    assert len(sts.requests) == 1  # AccessDenied is not retried
    assert sts.requests[0]["ExternalId"] == "ext-7f3a9c"


async def test_external_id_mismatch_is_named_as_such(
    monkeypatch: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache]
) -> None:
    with StsErrorServer(403, "AccessDenied", "Invalid ExternalId in the request") as sts:
        isolate_from_real_aws(monkeypatch, sts.endpoint)
        cache = new_cache()
        with pytest.raises(CredentialError) as caught:
            await cache.aws_credentials(rds_config(ROLE_ARN, external_id="wrong-id"))
    assert "External ID mismatch" in str(caught.value)
    assert "sts:ExternalId" in str(caught.value)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting is refused


async def test_unreachable_endpoint_fails_with_endpoint_connection_error_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache]
) -> None:
    isolate_from_real_aws(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    cache = new_cache(connect_timeout=0.5, max_attempts=1)
    with anyio.fail_after(10), pytest.raises(CredentialError) as caught:
        await cache.aws_credentials(rds_config(ROLE_ARN))
    assert caught.value.code == "EndpointConnectionError"
    assert str(caught.value).startswith(f"Unable to assume IAM role {ROLE_ARN} in {REGION}")
    assert cache.stats()["size"] == 0  # nothing cached; the next call tries again
