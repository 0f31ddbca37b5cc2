"""The SDK log filter (``iampool._redact``) on the shapes botocore and aiobotocore log.

The templates are what botocore 1.43 / aiobotocore 3 write at DEBUG during iampool's calls
(response bodies, request parameters, prepared requests, canonical requests, signatures), plus
the shapes of a presigned URL, container-metadata JSON and raw header lines. Each is filled with
random secrets and checked raw and as a whole URL-encoded (both ways) and JSON-escaped: no form
of any secret may remain, and the non-secret fields must.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import string
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from urllib.parse import quote, quote_plus

import pytest

from iampool import _redact
from iampool._redact import FILTER, REDACTED, in_flight, install, redact

BASE64 = string.ascii_letters + string.digits + "+/="
PASSWORD = string.ascii_letters + string.digits + "+/=_-~."
EXTERNAL_ID = string.ascii_letters + string.digits + "_+=,.@:/-"
# Pieces of names, separators, quotes, tags and escapes, to mix.
PIECES = [
    "token", "Token", "password", "dbPassword", "secret", "signature", "externalid",
    "authorization", "Authorization: ", "x-amz-security-token", "nexttoken", "next_token",
    "signature_version", "SessionToken", "<Token>", "</Token>", "%3CToken%3E", "%3C%2FToken%3E",
    "-", "_", "a", "X", "9", ":", "=", "%3a", "%3d", " ", "%20", "+", "\n", "\r\n", "\\n",
    "%0a", '"', "'", '\\"', "\\\\", "%22", "%27", "b'", "<", ">", "</", "/", "%3c", "%3e",
    "%2f", "%", "%2", "&", ",", ";", "\\", "abc",
]  # fmt: skip


def forms(secret: str) -> list[str]:
    """``secret`` raw, URL-encoded (``quote`` both ways, ``quote_plus``) and JSON-escaped."""
    return [
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
    ]


def sigv4(value: str) -> str:
    """URI-encoded as SigV4 writes query values."""
    return quote(value, safe="-_.~")


@dataclass(frozen=True)
class Secrets:
    secret_key: str
    session_token: str
    password: str
    external_id: str
    signature: str

    @classmethod
    def random(cls, rng: random.Random) -> Secrets:
        def pick(alphabet: str, low: int, high: int) -> str:
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))

        return cls(
            secret_key=pick(BASE64, 40, 40),
            session_token="FQoGZXIvYXdz" + pick(BASE64, 100, 400),
            password=pick(PASSWORD, 20, 64),
            external_id=pick(EXTERNAL_ID, 2, 40),
            signature=pick("0123456789abcdef", 64, 64),
        )

    def all(self) -> list[str]:
        return [
            self.secret_key,
            self.session_token,
            self.password,
            self.external_id,
            self.signature,
        ]


# Each template: what botocore logs, and the non-secret parts that must survive.
Template = tuple[str, Callable[[Secrets], str], tuple[str, ...]]
TEMPLATES: list[Template] = [
    (
        "AssumeRole response body (XML)",
        lambda s: (
            "Response body:\nb'<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/"
            '2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLEKEY</AccessKeyId>'
            f"<SecretAccessKey>{s.secret_key}</SecretAccessKey><SessionToken>{s.session_token}"
            "</SessionToken><Expiration>2026-11-30T18:45:15.123Z</Expiration></Credentials>"
            "</AssumeRoleResult></AssumeRoleResponse>'"
        ),
        ("ASIAEXAMPLEKEY", "2026-11-30T18:45:15.123Z", "SecretAccessKey", "SessionToken"),
    ),
    (
        "GetClusterCredentials response body (XML)",
        lambda s: (
            "Response body:\nb'<GetClusterCredentialsResponse><GetClusterCredentialsResult>"
            f"<DbUser>IAM:app</DbUser><DbPassword>{s.password}</DbPassword>"
            "<Expiration>2026-11-30T18:00:15Z</Expiration></GetClusterCredentialsResult>"
            "</GetClusterCredentialsResponse>'"
        ),
        ("IAM:app", "2026-11-30T18:00:15Z", "DbPassword"),
    ),
    (
        "Serverless GetCredentials response body (JSON)",
        lambda s: (
            f'Response body:\nb\'{{"dbUser": "IAMR:r1", "dbPassword": {json.dumps(s.password)}, '
            '"expiration": 1796061615.27, "nextRefreshTime": 1796061615.27}\''
        ),
        ("IAMR:r1", "1796061615.27", "dbPassword"),
    ),
    (
        "AssumeRole request parameters (repr)",
        lambda s: (
            "Making request for OperationModel(name=AssumeRole) with params: {'url_path': '/', "
            "'body': {'Action': 'AssumeRole', 'RoleArn': 'arn:aws:iam::123456789012:role/r1', "
            f"'DurationSeconds': 3600, 'ExternalId': {s.external_id!r}}}, 'url': 'http://aws/'}}"
        ),
        ("arn:aws:iam::123456789012:role/r1", "DurationSeconds", "'url': 'http://aws/'"),
    ),
    (
        "AssumeRole form body",
        lambda s: (
            "Sending http request: <AWSPreparedRequest method=POST, url=http://aws/, body=b'"
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3A"
            f"role%2Fr1&ExternalId={quote_plus(s.external_id)}&DurationSeconds=3600'>"
        ),
        ("RoleArn=arn%3Aaws", "DurationSeconds=3600"),
    ),
    (
        "prepared request headers (repr of bytes)",
        lambda s: (
            "Sending http request: <AWSPreparedRequest stream_output=False, method=POST, "
            "url=http://aws/, headers={'X-Amz-Date': b'20261130T174515Z', "
            f"'X-Amz-Security-Token': {s.session_token.encode()!r}, 'Authorization': "
            "b'AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEKEY/20261130/us-east-1/redshift/"
            "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "
            f"Signature={s.signature}', 'amz-sdk-request': b'attempt=1'}}>"
        ),
        ("20261130T174515Z", "attempt=1", "X-Amz-Security-Token"),
    ),
    (
        "canonical request",
        lambda s: (
            "CanonicalRequest:\nPOST\n/\n\ncontent-type:application/x-www-form-urlencoded; "
            "charset=utf-8\nhost:127.0.0.1:38173\nx-amz-date:20261130T174515Z\n"
            f"x-amz-security-token:{s.session_token}\n\n"
            "content-type;host;x-amz-date;x-amz-security-token\n"
            "db895791120d8b309e13ed83d97a1e145837a8fe2a577ef6d7580f9f866ece77"
        ),
        ("host:127.0.0.1:38173", "x-amz-date:20261130T174515Z", "db895791120d8b309e13ed83d97"),
    ),
    (
        "signature",
        lambda s: f"Signature:\n{s.signature}",
        ("Signature:",),
    ),
    (
        "presigned URL (an RDS token)",
        lambda s: (
            "https://db.example.com:5432/?Action=connect&DBUser=app&X-Amz-Algorithm="
            "AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLEKEY%2F20261130%2Fus-east-1%2Frds-db"
            "%2Faws4_request&X-Amz-Date=20261130T174515Z&X-Amz-Expires=900&"
            f"X-Amz-SignedHeaders=host&X-Amz-Security-Token={sigv4(s.session_token)}&"
            f"X-Amz-Signature={s.signature}"
        ),
        ("DBUser=app", "X-Amz-Expires=900", "X-Amz-SignedHeaders=host"),
    ),
    (
        "canonical request of a presigned URL",
        lambda s: (
            "CanonicalRequest:\nGET\n/\nAction=connect&DBUser=app&X-Amz-Algorithm="
            "AWS4-HMAC-SHA256&X-Amz-Date=20261130T174515Z&"
            f"X-Amz-Security-Token={sigv4(s.session_token)}&X-Amz-SignedHeaders=host\n"
            "host:db.example.com:5432\n\nhost\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        ("host:db.example.com:5432", "X-Amz-SignedHeaders=host", "e3b0c44298fc1c149afbf4c"),
    ),
    (
        "container credentials (JSON)",
        lambda s: (
            "Unable to parse JSON returned from container metadata services:"
            f'{{"AccessKeyId": "ASIAEXAMPLEKEY", "SecretAccessKey": {json.dumps(s.secret_key)}, '
            f'"Token": {json.dumps(s.session_token)}, "Expiration": "2026-11-30T18:45:15Z"}}'
        ),
        ("ASIAEXAMPLEKEY", "2026-11-30T18:45:15Z"),
    ),
    (
        "HTTP header lines",
        lambda s: (
            "POST / HTTP/1.1\nHost: sts.amazonaws.com\nAuthorization: AWS4-HMAC-SHA256 "
            "Credential=ASIAEXAMPLEKEY/20261130/us-east-1/sts/aws4_request, "
            f"SignedHeaders=host;x-amz-date, Signature={s.signature}\n"
            f"X-Amz-Security-Token: {s.session_token}\nX-Amz-Date: 20261130T174515Z"
        ),
        ("Host: sts.amazonaws.com", "X-Amz-Date: 20261130T174515Z"),
    ),
]

ENCODINGS: list[tuple[str, Callable[[str], str]]] = [
    ("raw", lambda text: text),
    ("URL-encoded", lambda text: quote(text, safe="")),
    ("URL-encoded, / kept", quote),
    ("URL-encoded, plus for space", quote_plus),
    ("JSON-escaped", lambda text: json.dumps(text)[1:-1]),
]


def leaks(text: str, secrets: Secrets) -> list[str]:
    """The secrets found in ``text`` in any form (an ExternalId of 2-3 characters may occur by
    chance: those are checked in their context only)."""
    found = []
    for secret in secrets.all():
        if secret == secrets.external_id and len(secret) < 4:
            continue
        found += [form for form in forms(secret) if form in text]
    return found


def test_every_template_loses_every_secret_in_every_encoding_and_keeps_the_rest() -> None:
    rng = random.Random(20261130)
    tried = 0
    found: list[tuple[str, str]] = []
    for _ in range(60):
        secrets = Secrets.random(rng)
        for name, fill, kept in TEMPLATES:
            for encoding, encode in ENCODINGS:
                cleaned = redact(encode(fill(secrets)))
                tried += 1
                if leaks(cleaned, secrets):
                    found.append((name, encoding))
                for part in kept:
                    assert encode(part) in cleaned, (name, encoding, part)
                assert REDACTED in cleaned, (name, encoding)
    assert found == []
    assert tried == 60 * len(TEMPLATES) * len(ENCODINGS)


def test_a_short_external_id_is_redacted_in_its_field() -> None:
    text = "{'RoleArn': 'arn:aws:iam::1:role/r', 'ExternalId': 'x9'}"
    assert redact(text) == "{'RoleArn': 'arn:aws:iam::1:role/r', 'ExternalId': '[REDACTED]'}"
    assert redact("Action=AssumeRole&ExternalId=x9&Version=1") == (
        "Action=AssumeRole&ExternalId=[REDACTED]&Version=1"
    )


@pytest.mark.parametrize(
    "text",
    [
        "{'Bucket': 'b', 'NextToken': 'page-2', 'MaxKeys': 10}",
        '{"ContinuationToken": "abc", "ClientToken": "idem-1"}',
        "Action=DescribeInstances&SignatureVersion=2&SignatureMethod=HmacSHA256",
        "Calculating signature using v4 auth.",
        "Event before-sign.sts.AssumeRole: calling handler <function remove_arn_from_signing_path>",
        "Retry needed, action of: 0.5",
        "Looking for credentials via: env",
    ],
)
def test_pagination_tokens_signature_versions_and_prose_are_left_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The quickest way for a plain field ("token: x") gives what the whole form gives:
        ("token:+%20-", "token:+%20[REDACTED]"),  # URL-encoded spacing before the value
        ("password:abcexternal_id%0a", "password:[REDACTED]%0a"),  # a value up to an escape
        ("token: %41bc%0a", "token: [REDACTED]%0a"),  # a value that starts with an escape
        ("Token: b'x'", "Token: b'[REDACTED]'"),  # b and a quote: a quoted value
        ("token:\n  x", "token:\n  [REDACTED]"),  # the value on the next line
        ("token : x", "token : [REDACTED]"),
        ("token:  x", "token:  [REDACTED]"),
        ("token=+", "token=+"),  # spacing ("+", "%20") is no value, nor starts one
        ("Authorization: %20", "Authorization: %20"),
        ("token=x&y=1", "token=[REDACTED]&y=1"),
        ('password: x"', 'password: [REDACTED]"'),
        ("x-amz-security-token:x\n", "x-amz-security-token:[REDACTED]\n"),
        # ... and leaves public names alone, however they are written:
        ("nexttoken:x", "nexttoken:x"),
        ("next-token: x", "next-token: x"),
        ("tokennexttoken: x", "tokennexttoken: x"),
        ("signature_version=4", "signature_version=4"),
        ("client-token=x&signature=y", "client-token=x&signature=[REDACTED]"),
        ("NextToken: abc\nSessionToken: def", "NextToken: abc\nSessionToken: [REDACTED]"),
        # A header whose name ends with "authorization" runs to the end of its line, also
        # after another keyword in the name (one name from the first keyword on):
        ("X-Token-Authorization: Bearer a b\nx", "X-Token-Authorization: [REDACTED]\nx"),
        ("secretAuthorization=Basic a b", "secretAuthorization=[REDACTED]"),
        ("'Authorization': 'Basic a b'", "'Authorization': '[REDACTED]'"),
        # An XML value runs to the next tag, "%3C" in raw XML being text, "<" in URL-encoded
        # XML a tag; elements are read in one encoding.
        ("<DbPassword>a%3Cb</DbPassword>", "<DbPassword>[REDACTED]</DbPassword>"),
        ("%3CToken%3Ea%2Bb%3C%2FToken%3E", "%3CToken%3E[REDACTED]%3C%2FToken%3E"),
        ("<Token></Token>", "<Token>[REDACTED]</Token>"),
        ("<NextToken>x</NextToken>", "<NextToken>x</NextToken>"),
        ("<Token>x<b>y</b></Token>", "<Token>x<b>y</b></Token>"),  # not a value: elements
    ],
)
def test_plain_fields_are_redacted_as_the_whole_form_would_and_public_names_kept(
    text: str, expected: str
) -> None:
    assert redact(text) == expected


def test_every_group_of_the_expression_is_a_value_or_a_tag() -> None:
    """The loop replaces the span of the group that ended a match, taking every group but a
    tag for a value: a group of another kind needs the loop changed too."""
    kinds = {name.partition("_")[0] for name in _redact._SCAN.groupindex}
    assert kinds == {"tag", "xml", "line", "plain", "quoted", "value"}


def fallback_filter(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``iampool._redact`` as Python 3.10 builds it (no possessive loops, no atomic groups),
    loaded again under another name."""
    monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
    spec = importlib.util.spec_from_file_location("redact_py310", _redact.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_3_10_spelling_redacts_exactly_as_the_possessive_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fallback = fallback_filter(monkeypatch)
    monkeypatch.undo()
    assert "*+" in _redact._SCAN.pattern
    assert "(?>" in _redact._SCAN.pattern
    for spelling in ("*+", "}+", "(?>"):
        assert spelling not in fallback._SCAN.pattern
    rng = random.Random(20261207)
    texts = [
        encode(fill(Secrets.random(rng))) for _, fill, _ in TEMPLATES for _, encode in ENCODINGS
    ]
    texts += ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14))) for _ in range(20_000)]
    differ = [text for text in texts if fallback.redact(text) != redact(text)]
    assert differ == []
    assert sum(redact(text) != text for text in texts) > 2_000  # the mixes do hold fields


def test_secrets_in_flight_are_removed_in_any_form_and_only_while_in_flight() -> None:
    secret, token = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "FQoGZXIvYXdzEBYaD+/8JJNGnV02=="
    text = f"unexpected: {secret} / {quote_plus(token)} / {json.dumps(secret)}"
    assert redact(text) == text  # no field name says secret
    with in_flight(secret, token, None, "short"):
        assert redact(text) == f'unexpected: {REDACTED} / {REDACTED} / "{REDACTED}"'
        assert redact("short") == "short"  # under 8 characters: too likely to occur by chance
    assert redact(text) == text


@pytest.fixture
def sdk_records() -> Iterator[list[str]]:
    """What handlers write for records of the SDK's loggers (a handler on ``botocore``, the
    parent: children's records reach it already filtered)."""
    install()
    written: list[str] = []

    class Written(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(logging.Formatter("%(name)s %(message)s").format(record))

    handler = Written(logging.DEBUG)
    parent = logging.getLogger("botocore")
    level = parent.level
    parent.setLevel(logging.DEBUG)
    parent.addHandler(handler)
    yield written
    parent.removeHandler(handler)
    parent.setLevel(level)


def test_records_of_sdk_loggers_reach_handlers_redacted(sdk_records: list[str]) -> None:
    body = b"<X><SecretAccessKey>s3cr3t-value</SecretAccessKey><Expiration>E</Expiration></X>"
    logging.getLogger("botocore.parsers").debug("Response body:\n%r", body)
    logging.getLogger("botocore.auth").debug("Signature:\n%s", "ab" * 32)
    logging.getLogger("botocore.endpoint").debug("Setting %s timeout as %s", "sts", (3.0, 5.0))
    assert sdk_records == [
        "botocore.parsers Response body:\n"
        "b'<X><SecretAccessKey>[REDACTED]</SecretAccessKey><Expiration>E</Expiration></X>'",
        "botocore.auth Signature:\n[REDACTED]",
        "botocore.endpoint Setting sts timeout as (3.0, 5.0)",
    ]


def test_a_record_without_secrets_keeps_its_message_and_arguments() -> None:
    record = logging.LogRecord("botocore.hooks", logging.DEBUG, "", 0, "Event %s", ("x",), None)
    assert FILTER.filter(record)
    assert (record.msg, record.args) == ("Event %s", ("x",))


def test_a_traceback_holding_a_secret_is_kept_as_redacted_text() -> None:
    try:
        raise RuntimeError("refused: Authorization: Bearer hunter2-token-value")
    except RuntimeError:
        record = logging.LogRecord(
            "aiobotocore.endpoint", logging.DEBUG, "", 0, "failed", (), exc_info=True
        )
        import sys

        record.exc_info = sys.exc_info()
    assert FILTER.filter(record)
    text = logging.Formatter().format(record)
    assert "hunter2" not in text
    assert "RuntimeError: refused: Authorization: [REDACTED]" in text
    assert "Traceback (most recent call last)" in text
    assert record.exc_info is None  # no handler can format the original again


def test_a_record_whose_arguments_do_not_fit_is_written_redacted_without_an_error() -> None:
    record = logging.LogRecord(
        "botocore.auth", logging.DEBUG, "", 0, "%s %s", ("SessionToken=abc123",), None
    )
    assert FILTER.filter(record)
    assert record.getMessage() == "%s %s % ('SessionToken=[REDACTED]',)"


def test_install_covers_every_sdk_module_and_loggers_created_later_and_nothing_else() -> None:
    install()
    for name in ["botocore.parsers", "botocore.auth", "botocore.endpoint", "botocore.hooks",
                 "botocore.retryhandler", "botocore.retries.standard", "aiobotocore.endpoint",
                 "aiobotocore.credentials", "aiohttp", "urllib3", "botocore"]:  # fmt: skip
        assert FILTER in logging.getLogger(name).filters, name
    later = logging.getLogger("aiohttp.created_after_install_for_a_test")
    assert FILTER not in later.filters
    install()
    assert FILTER in later.filters
    for name in ["iampool", "myapp.botocore", "botocoreish", "asyncio"]:
        assert FILTER not in logging.getLogger(name).filters, name


def test_install_is_idempotent() -> None:
    install()
    _redact._swept = -1  # force a full sweep
    install()
    assert logging.getLogger("botocore.parsers").filters.count(FILTER) == 1
