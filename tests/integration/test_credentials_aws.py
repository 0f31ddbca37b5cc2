"""The credential core against the AWS stand-in: ``iampool.testing.FakeAws`` (moto's server on
127.0.0.1 with fault injection), through the plugin's session-wide ``fake_aws`` fixture.

Nothing here reaches real AWS: ``fake_aws`` exports ``AWS_ENDPOINT_URL`` and test credentials
and removes every other ``AWS_*`` variable. Its state is shared by the session, so tests use
roles of their own and never reset it; they read what STS received from ``fake_aws.requests``.

RDS tokens are checked with an independent SigV4 verifier written here from the specification,
against the secret the stand-in issued; it shares no code with iampool's or botocore's signer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import anyio
import pytest

from iampool import AwsIamConfig, CredentialCache, CredentialError, auth_for
from iampool._cache import mint_context
from iampool.testing._aws import FakeAws

pytestmark = pytest.mark.anyio

REGION = "us-east-1"
DB_HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"


@pytest.fixture
def aws(fake_aws: FakeAws) -> Iterator[FakeAws]:
    """The session's fake AWS; faults a test injects do not outlive it."""
    assert os.environ["AWS_ENDPOINT_URL"] == fake_aws.endpoint_url
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    yield fake_aws
    fake_aws.faults.clear()


@pytest.fixture
def new_cache() -> Iterator[Callable[..., CredentialCache]]:
    caches: list[CredentialCache] = []

    def new(**options: Any) -> CredentialCache:
        caches.append(CredentialCache(**options))
        return caches[-1]

    yield new
    for cache in caches:
        cache.close()


def new_role(aws: FakeAws, *, external_id: str | None = None) -> str:
    """A role no other test uses, so its AssumeRole requests are this test's alone."""
    return aws.create_role(f"iampool-cred-{uuid.uuid4().hex[:12]}", external_id=external_id)


def assume_role_requests(aws: FakeAws, role_arn: str) -> list[dict[str, Any]]:
    return [params for params in aws.requests["AssumeRole"] if params.get("RoleArn") == role_arn]


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
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws, external_id="ext-7f3a9c")
    cache = new_cache()
    config = rds_config(role_arn, external_id="ext-7f3a9c", session_duration=1800)
    credentials = await mint_context(cache).aws_credentials(config)

    [request] = assume_role_requests(aws, role_arn)
    assert request["ExternalId"] == "ext-7f3a9c"
    assert request["DurationSeconds"] == "1800"
    session_name = request["RoleSessionName"]
    assert re.fullmatch(rf"iampool-[\w+=,.@-]+-{os.getpid()}", session_name)
    assert len(session_name) <= 64
    # The session STS issued lasts the 1800 s asked for, and the cache knows when it ends.
    issued = aws.signing_key(credentials.access_key_id)
    assert issued is not None
    assert issued.expires_at is not None
    assert credentials.expires_at == pytest.approx(issued.expires_at.timestamp(), abs=1)
    lasts = issued.expires_at - datetime.now(timezone.utc)
    assert timedelta(seconds=1700) < lasts <= timedelta(seconds=1800)
    assert cache.stats()["sts_calls"] == 1


async def test_configured_role_session_name_reaches_sts_and_no_external_id_is_sent(
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    cache = new_cache()
    await mint_context(cache).aws_credentials(
        rds_config(role_arn, role_session_name="superset-iam-session")
    )
    [request] = assume_role_requests(aws, role_arn)
    assert request["RoleSessionName"] == "superset-iam-session"
    assert request["DurationSeconds"] == "3600"
    assert "ExternalId" not in request


async def test_herd_of_1000_first_connects_makes_one_assume_role_call(
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    cache = new_cache()
    auth = auth_for(rds_config(role_arn), host=DB_HOST, port=5432, cache=cache)
    tokens: list[str] = []

    async def connect() -> None:
        tokens.append((await auth.credentials()).password)

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(connect)
    assert len(assume_role_requests(aws, role_arn)) == 1
    assert len(tokens) == 1000
    assert len(set(tokens)) == 1
    assert (cache.stats()["sts_calls"], cache.stats()["tokens_signed"]) == (1, 1)


# -- RDS tokens ------------------------------------------------------------------------------


async def test_rds_token_verifies_against_the_secret_the_stand_in_issued(
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    cache = new_cache()
    auth = auth_for(rds_config(role_arn), host=DB_HOST, port=5432, cache=cache)
    token = (await auth.credentials()).password

    access_key_id = token_fields(token)["X-Amz-Credential"].split("/")[0]
    issued = aws.signing_key(access_key_id)
    assert issued is not None
    assert issued.session_token is not None  # an AssumeRole session, not the base key
    assert access_key_id != aws.base_key.access_key_id
    assert_token_verifies(
        token, secret=issued.secret_access_key, session_token=issued.session_token
    )
    assert urlsplit(f"https://{token}").netloc == f"{DB_HOST}:5432"

    # The verifier is not a rubber stamp: another user, endpoint or secret does not verify.
    signature = token_fields(token)["X-Amz-Signature"]
    tampered = token.replace("DBUser=app", "DBUser=admin")
    assert sigv4_signature(tampered, issued.secret_access_key) != signature
    moved = token.replace(f"{DB_HOST}:5432", f"{DB_HOST}:5433")
    assert sigv4_signature(moved, issued.secret_access_key) != signature
    assert sigv4_signature(token, aws.base_key.secret_access_key) != signature


async def test_same_account_config_signs_with_the_default_chain_and_never_calls_sts(
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    cache = new_cache()
    before = aws.calls["AssumeRole"]
    auth = auth_for(rds_config(), host=DB_HOST, port=3306, cache=cache)
    token = (await auth.credentials()).password

    base = aws.base_key
    assert token_fields(token)["X-Amz-Credential"].startswith(f"{base.access_key_id}/")
    assert_token_verifies(token, secret=base.secret_access_key, session_token=None)
    assert aws.calls["AssumeRole"] == before
    assert (cache.stats()["sts_calls"], cache.stats()["tokens_signed"]) == (0, 1)


# -- failures --------------------------------------------------------------------------------


async def test_throttled_assume_role_fails_with_throttling_after_the_configured_attempts(
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    aws.faults.throttle("AssumeRole", times=3)
    cache = new_cache(max_attempts=3)
    with pytest.raises(CredentialError) as caught:
        await mint_context(cache).aws_credentials(rds_config(role_arn))

    assert caught.value.code == "Throttling"
    message = str(caught.value)
    assert message.startswith(f"Unable to assume IAM role {role_arn} in {REGION}: Throttling")
    assert len(assume_role_requests(aws, role_arn)) == 3
    assert aws.faults.pending("AssumeRole") == 0
    assert cache.stats()["errors"] == 1


async def test_throttling_that_clears_within_the_attempts_is_retried_transparently(
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    aws.faults.throttle("AssumeRole", times=2)
    cache = new_cache(max_attempts=3)
    await mint_context(cache).aws_credentials(rds_config(role_arn))
    assert len(assume_role_requests(aws, role_arn)) == 3
    assert cache.stats()["errors"] == 0


async def test_wrong_external_id_is_access_denied_saying_unable_to_assume_iam_role(
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws, external_id="ext-right")
    cache = new_cache()
    auth = auth_for(
        rds_config(role_arn, external_id="ext-wrong"), host=DB_HOST, port=5432, cache=cache
    )
    with pytest.raises(CredentialError) as caught:
        await auth.credentials()

    assert caught.value.code == "AccessDenied"
    message = str(caught.value)
    assert message.startswith(f"Unable to assume IAM role {role_arn} in {REGION}: AccessDenied")
    assert "trust policy" in message
    assert "sts:ExternalId" in message
    assert "ext-wrong" not in message
    assert len(assume_role_requests(aws, role_arn)) == 1  # AccessDenied is not retried

    # The right external id is another cache key, and it works.
    right = rds_config(role_arn, external_id="ext-right")
    await auth_for(right, host=DB_HOST, port=5432, cache=cache).credentials()
    assert len(assume_role_requests(aws, role_arn)) == 2


class StsErrorServer:
    """Answers every request with one STS error document, as STS does (for messages the stand-in
    does not produce)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        body = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>8d5a2ed6-6d4a-4b4b-9d4e-1b6f1c0f0a11</RequestId></ErrorResponse>"
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
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


ROLE_ARN = "arn:aws:iam::123456789012:role/app-db"


async def test_access_denied_that_mentions_the_external_id_is_named_a_mismatch(
    aws: FakeAws, monkeypatch: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache]
) -> None:
    with StsErrorServer(403, "AccessDenied", "Invalid ExternalId in the request") as sts:
        monkeypatch.setenv("AWS_ENDPOINT_URL", sts.endpoint)
        cache = new_cache()
        with pytest.raises(CredentialError) as caught:
            await mint_context(cache).aws_credentials(rds_config(ROLE_ARN, external_id="wrong-id"))
    message = str(caught.value)
    assert message.startswith(f"Unable to assume IAM role {ROLE_ARN} in {REGION}: AccessDenied")
    assert "External ID mismatch" in message
    assert "sts:ExternalId" in message


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting is refused


async def test_unreachable_endpoint_fails_with_endpoint_connection_error_in_bounded_time(
    aws: FakeAws, monkeypatch: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    cache = new_cache(connect_timeout=0.5, max_attempts=1)
    with anyio.fail_after(10), pytest.raises(CredentialError) as caught:
        await mint_context(cache).aws_credentials(rds_config(ROLE_ARN))
    assert caught.value.code == "EndpointConnectionError"
    assert str(caught.value).startswith(f"Unable to assume IAM role {ROLE_ARN} in {REGION}")
    assert cache.stats()["size"] == 0  # nothing cached; the next call tries again


async def test_stand_in_outage_fails_the_call_and_the_failure_is_not_cached(
    aws: FakeAws, new_cache: Callable[..., CredentialCache]
) -> None:
    role_arn = new_role(aws)
    cache = new_cache(connect_timeout=0.5, max_attempts=1)
    with aws.outage(), pytest.raises(CredentialError) as caught:
        await mint_context(cache).aws_credentials(rds_config(role_arn))
    assert caught.value.code == "EndpointConnectionError"
    await mint_context(cache).aws_credentials(rds_config(role_arn))
    assert len(assume_role_requests(aws, role_arn)) == 1


async def test_credentials_that_appear_after_the_first_call_are_read_then(
    aws: FakeAws, new_cache: Callable[..., CredentialCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process that starts before its credentials exist (a web identity token mounted late,
    # a container credentials endpoint not yet up): the first AssumeRole finds none, and the
    # next one must read the default chain again, not reuse a client built without them.
    role_arn = new_role(aws)
    cache = new_cache(max_attempts=1)
    with monkeypatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        with pytest.raises(CredentialError) as caught:
            await mint_context(cache).aws_credentials(rds_config(role_arn))
    assert caught.value.code == "NoCredentials"
    assert assume_role_requests(aws, role_arn) == []

    credentials = await mint_context(cache).aws_credentials(rds_config(role_arn))

    assert aws.signing_key(credentials.access_key_id) is not None
    assert len(assume_role_requests(aws, role_arn)) == 1
