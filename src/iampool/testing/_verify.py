"""What the gateway checks at login: an RDS IAM token (SigV4 presigned URL) or a Redshift password.

Pure functions over a token string, a clock reading and a lookup of what the AWS stand-in issued.
They never raise on garbage from a client: every outcome is ``None`` (valid) or a reason.

The RDS token is what botocore's ``generate_db_auth_token`` returns (``botocore/signers.py``): a
presigned ``GET https://host:port/?Action=connect&DBUser=...`` signed by ``SigV4QueryAuth``
(``botocore/auth.py``) for service ``rds-db`` with ``X-Amz-Expires=900``, minus the ``https://``.
Its canonical request hashes an EMPTY payload (SHA-256 of ``b""``, not ``UNSIGNED-PAYLOAD``),
signs only the ``host`` header (``host:port``, the port dropped only when it is 443) and carries a
session token, when there is one, as ``X-Amz-Security-Token`` inside the signed query. RDS
accepts a token for 15 minutes after its ``X-Amz-Date`` at most, even one signed with a longer
``X-Amz-Expires``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol
from urllib.parse import quote, unquote

__all__ = [
    "CLOCK_SKEW",
    "RDS_TOKEN_LIFETIME",
    "CredentialAuthority",
    "RdsToken",
    "RedshiftPassword",
    "RejectReason",
    "SigningKey",
    "parse_dsql_token",
    "parse_rds_token",
    "verify_dsql_token",
    "verify_rds_token",
    "verify_redshift_password",
]

RejectReason = Literal[
    "malformed_token",  # not a presigned rds-db URL at all
    "wrong_action",  # Action is not "connect"
    "wrong_user",  # DBUser (or the Redshift password's user) is not the login user
    "wrong_endpoint",  # signed for another host:port than the gateway's endpoint
    "wrong_service",  # credential scope names another service than rds-db
    "wrong_region",  # credential scope names another region than the gateway's
    "expired",  # 900 s after X-Amz-Date at most (or the Redshift password's expiry) have passed
    "not_yet_valid",  # X-Amz-Date lies further in the future than the allowed clock skew
    "unknown_key",  # the AWS stand-in never issued this access key id
    "bad_signature",  # the signature does not match the issued secret
    "no_session_token",  # a temporary key signed without its session token
    "wrong_session_token",  # the session token is not the one issued with the key
    "expired_key",  # the signing credentials had expired
    "bad_password",  # no Redshift temporary password matches
    "wrong_database",  # the Redshift password was issued for another database
    "not_tls",  # a password on a connection without TLS
    "malformed_packet",  # bytes that are not the database's wire protocol
    "forced",  # a valid login rejected on purpose by ``IamGateway.reject_next``
    "no_such_user",  # Redshift: valid credentials for a database user that does not exist
    "throttled",  # over the gateway's login_rate (RDS: distinct tokens; DSQL: connections)
]

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future an ``X-Amz-Date`` may lie (AWS tolerates a few minutes of skew)."""

RDS_TOKEN_LIFETIME = timedelta(minutes=15)
"""How long RDS accepts an IAM token after its ``X-Amz-Date``, whatever ``X-Amz-Expires`` says
(a presigned URL may ask for up to 7 days; RDS still refuses it after 15 minutes)."""

_MAX_TOKEN_CHARS = 16_384
_MAX_EXPIRES = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
_SAFE = "-_.~"  # SigV4 URI-encodes every byte except unreserved characters
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z", re.ASCII)
_SIGNATURE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_PORT = re.compile(r"\d{1,5}", re.ASCII)
_REQUIRED = (
    "Action",
    "DBUser",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


class SigningKey(Protocol):
    """An access key the AWS stand-in issued (e.g. ``iampool.testing.FakeAws`` ``IssuedKey``)."""

    @property
    def access_key_id(self) -> str: ...
    @property
    def secret_access_key(self) -> str: ...
    @property
    def session_token(self) -> str | None: ...
    @property
    def expires_at(self) -> datetime | None: ...


class RedshiftPassword(Protocol):
    """A temporary database password the AWS stand-in issued (GetClusterCredentials & co)."""

    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def database(self) -> str | None: ...


class CredentialAuthority(Protocol):
    """Where the gateway looks up what was issued: ``FakeAws``, or a tiny stand-in in a test."""

    def signing_key(self, access_key_id: str) -> SigningKey | None:
        """The key issued under ``access_key_id``, or ``None`` if it was never issued."""
        ...

    def redshift_password(self, user: str, password: str) -> RedshiftPassword | None:
        """The temporary password issued to ``user`` equal to ``password``, if any."""
        ...


@dataclass(frozen=True)
class RdsToken:
    """The parts of an RDS IAM token that verification needs. The repr holds no secret."""

    host: str  # lower-cased, as SigV4 signs it
    port: int
    action: str
    db_user: str
    access_key_id: str
    scope_date: str
    region: str
    service: str
    signed_at: datetime
    expires_in: int
    signed_headers: str
    canonical_query: str
    signature: str
    session_token: str | None

    def __repr__(self) -> str:
        return (
            f"RdsToken(host={self.host!r}, port={self.port}, db_user={self.db_user!r}, "
            f"access_key_id={self.access_key_id!r}, region={self.region!r})"
        )

    @property
    def host_header(self) -> str:
        """The ``host`` header botocore signed: the port is dropped when it is the https one."""
        return self.host if self.port == 443 else f"{self.host}:{self.port}"

    def string_to_sign(self) -> str:
        """SigV4's string to sign for this presigned GET request."""
        canonical_request = "\n".join(
            [
                "GET",
                "/",
                self.canonical_query,
                f"host:{self.host_header}\n",
                self.signed_headers,
                _EMPTY_SHA256,
            ]
        )
        scope = f"{self.scope_date}/{self.region}/{self.service}/aws4_request"
        amz_date = self.signed_at.strftime("%Y%m%dT%H%M%SZ")
        digest = hashlib.sha256(canonical_request.encode()).hexdigest()
        return f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"

    def expected_signature(self, secret_access_key: str) -> str:
        """The signature a holder of ``secret_access_key`` would have produced."""
        key = f"AWS4{secret_access_key}".encode()
        for part in (self.scope_date, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return hmac.new(key, self.string_to_sign().encode(), hashlib.sha256).hexdigest()


def parse_rds_token(token: str) -> RdsToken | None:
    """Split ``host:port/?query`` into its signed parts, or ``None`` if it is not such a token."""
    if not token or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        return None
    netloc, separator, query = token.partition("/?")
    host, colon, port = netloc.rpartition(":")
    if not separator or not colon or not host or not _PORT.fullmatch(port):
        return None
    params = _query_params(query)
    if params is None or any(name not in params for name in _REQUIRED):
        return None
    if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        return None
    scope = params["X-Amz-Credential"].split("/")
    amz_date = params["X-Amz-Date"]
    expires = params["X-Amz-Expires"]
    signature = params["X-Amz-Signature"]
    if (
        len(scope) != 5
        or not all(scope)
        or scope[4] != "aws4_request"
        or not _AMZ_DATE.fullmatch(amz_date)
        or scope[1] != amz_date[:8]
        or not expires.isdigit()
        or not 1 <= int(expires) <= _MAX_EXPIRES
        or not _SIGNATURE.fullmatch(signature)
        or not 0 < int(port) < 65536
    ):
        return None
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return RdsToken(
        host=host.lower(),
        port=int(port),
        action=params["Action"],
        db_user=params["DBUser"],
        access_key_id=scope[0],
        scope_date=scope[1],
        region=scope[2],
        service=scope[3],
        signed_at=signed_at,
        expires_in=int(expires),
        signed_headers=params["X-Amz-SignedHeaders"],
        canonical_query=_canonical_query(params),
        signature=signature,
        session_token=params.get("X-Amz-Security-Token"),
    )


def _query_params(query: str) -> dict[str, str] | None:
    """Decode ``a=b&c=d``; ``None`` for a pair without ``=``, a repeated name or bad escapes."""
    params: dict[str, str] = {}
    for pair in query.split("&"):
        raw_name, equals, raw_value = pair.partition("=")
        try:
            name = unquote(raw_name, errors="strict")
            value = unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            return None
        if not equals or not name or name in params:
            return None
        params[name] = value
    return params


def _canonical_query(params: dict[str, str]) -> str:
    # botocore sorts (encoded name, encoded value) pairs, then joins them: sorting the joined
    # "name=value" strings would differ when one name is a prefix of another.
    pairs = sorted(
        (quote(name, safe=_SAFE), quote(value, safe=_SAFE))
        for name, value in params.items()
        if name != "X-Amz-Signature"
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def verify_rds_token(
    token: str,
    *,
    user: str,
    host: str,
    port: int,
    region: str,
    signing_key: Callable[[str], SigningKey | None],
    now: datetime,
) -> RejectReason | None:
    """Check ``token`` the way RDS does for a login as ``user`` at ``host:port``.

    Args:
        signing_key: looks an access key id up in what the AWS stand-in issued.
        now: an aware UTC datetime (injected so tests control the clock).

    Returns:
        ``None`` when the token is valid, else why it is not.
    """
    parsed = parse_rds_token(token)
    if parsed is None or parsed.signed_headers != "host":
        return "malformed_token"
    if parsed.action != "connect":
        return "wrong_action"
    if parsed.db_user != user:
        return "wrong_user"
    if (parsed.host, parsed.port) != (host.lower(), port):
        return "wrong_endpoint"
    if parsed.service != "rds-db":
        return "wrong_service"
    return _check_signed(
        parsed, region=region, signing_key=signing_key, now=now, longest=RDS_TOKEN_LIFETIME
    )


def verify_redshift_password(
    password: str,
    *,
    user: str,
    database: str | None,
    lookup: Callable[[str, str], RedshiftPassword | None],
    now: datetime,
) -> RejectReason | None:
    """Check a Redshift temporary password presented by ``user`` for ``database``.

    Returns:
        ``None`` when the password was issued to this user, for this database, and is unexpired.
    """
    issued = lookup(user, password)
    if issued is None or not hmac.compare_digest(issued.password.encode(), password.encode()):
        return "bad_password"
    if issued.user != user:
        return "wrong_user"
    if now >= issued.expires_at:
        return "expired"
    if issued.database is not None and database is not None and database != issued.database:
        return "wrong_database"
    return None


def _same_optional_secret(issued: str | None, presented: str | None) -> bool:
    if issued is None or presented is None:
        return issued is presented
    return hmac.compare_digest(issued.encode(), presented.encode())


# -- Aurora DSQL ---------------------------------------------------------------------------------
# botocore's generate_db_connect_auth_token / generate_db_connect_admin_auth_token presign
# ``GET https://<host>/?Action=DbConnect`` (or DbConnectAdmin) for service ``dsql`` with the
# caller's ExpiresIn: the same SigV4 query signature as an RDS token, but for the host alone (no
# port: the https default, 443, is what gets signed) and without a DBUser.

_DSQL_REQUIRED = tuple(name for name in _REQUIRED if name != "DBUser")
DSQL_ADMIN_ROLE = "admin"


def parse_dsql_token(token: str) -> RdsToken | None:
    """Split ``host/?query`` into its signed parts (``port`` 443, ``db_user`` empty), or
    ``None`` if it is not such a token."""
    if not token or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        return None
    host, separator, query = token.partition("/?")
    if not separator or not host or ":" in host:
        return None
    params = _query_params(query)
    if params is None or any(name not in params for name in _DSQL_REQUIRED) or "DBUser" in params:
        return None
    return _dsql_token(host, params)


def _dsql_token(host: str, params: dict[str, str]) -> RdsToken | None:
    if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        return None
    scope = params["X-Amz-Credential"].split("/")
    amz_date, expires = params["X-Amz-Date"], params["X-Amz-Expires"]
    if (
        len(scope) != 5
        or not all(scope)
        or scope[4] != "aws4_request"
        or not _AMZ_DATE.fullmatch(amz_date)
        or scope[1] != amz_date[:8]
        or not expires.isdigit()
        or not 1 <= int(expires) <= _MAX_EXPIRES
        or not _SIGNATURE.fullmatch(params["X-Amz-Signature"])
    ):
        return None
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return RdsToken(
        host=host.lower(),
        port=443,
        action=params["Action"],
        db_user="",
        access_key_id=scope[0],
        scope_date=scope[1],
        region=scope[2],
        service=scope[3],
        signed_at=signed_at,
        expires_in=int(expires),
        signed_headers=params["X-Amz-SignedHeaders"],
        canonical_query=_canonical_query(params),
        signature=params["X-Amz-Signature"],
        session_token=params.get("X-Amz-Security-Token"),
    )


def verify_dsql_token(
    token: str,
    *,
    user: str,
    host: str,
    region: str,
    signing_key: Callable[[str], SigningKey | None],
    now: datetime,
) -> RejectReason | None:
    """Check ``token`` the way Aurora DSQL does for a login as ``user`` to the cluster at
    ``host``: ``DbConnectAdmin`` for the ``admin`` role, ``DbConnect`` for any other.

    Returns:
        ``None`` when the token is valid, else why it is not.
    """
    parsed = parse_dsql_token(token)
    if parsed is None or parsed.signed_headers != "host":
        return "malformed_token"
    if parsed.action != ("DbConnectAdmin" if user == DSQL_ADMIN_ROLE else "DbConnect"):
        return "wrong_action"
    if parsed.host != host.lower():
        return "wrong_endpoint"
    if parsed.service != "dsql":
        return "wrong_service"
    return _check_signed(parsed, region=region, signing_key=signing_key, now=now)


def _check_signed(
    parsed: RdsToken,
    *,
    region: str,
    signing_key: Callable[[str], SigningKey | None],
    now: datetime,
    longest: timedelta | None = None,
) -> RejectReason | None:
    """Region, validity window, key, signature and session token of a presigned token.

    Args:
        longest: how long the service accepts a token at most, whatever its ``X-Amz-Expires``
            (RDS: 15 minutes); ``None`` honours ``X-Amz-Expires``.
    """
    if parsed.region != region:
        return "wrong_region"
    lifetime = timedelta(seconds=parsed.expires_in)
    if now >= parsed.signed_at + (lifetime if longest is None else min(lifetime, longest)):
        return "expired"
    if parsed.signed_at > now + CLOCK_SKEW:
        return "not_yet_valid"
    key = signing_key(parsed.access_key_id)
    if key is None:
        return "unknown_key"
    expected = parsed.expected_signature(key.secret_access_key)
    if not hmac.compare_digest(expected.encode(), parsed.signature.encode()):
        return "bad_signature"
    if key.session_token is not None and parsed.session_token is None:
        return "no_session_token"
    if not _same_optional_secret(key.session_token, parsed.session_token):
        return "wrong_session_token"
    if key.expires_at is not None and now >= key.expires_at:
        return "expired_key"
    return None
