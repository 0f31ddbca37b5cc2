"""Database auth tokens: SigV4 presigned ``connect`` URLs, signed locally and fast.

An RDS IAM auth token is ``host:port/?Action=connect&DBUser=<user>&X-Amz-...&X-Amz-Signature=``,
presigned with Signature Version 4 for the service ``rds-db``: what botocore's
``generate_db_auth_token`` returns, character for character (the tests compare the two). An
Aurora DSQL token is ``host/?Action=DbConnect&X-Amz-...`` (``DbConnectAdmin`` for the ``admin``
role) for the service ``dsql``: no port, no user, a lifetime of the signer's choosing, as
botocore's ``generate_db_connect_auth_token`` makes it. Signing is local computation, not an AWS
call, so it runs wherever a token is needed, in a few microseconds instead of botocore's ~150:

- the signing key is derived once per (credentials, day, region, service), not per token;
- what all tokens signed with one set of credentials share (the credential scope, the URL-encoded
  session token) is encoded once, in :class:`SigningParts`;
- a token is kept as a :class:`Presigned`: the shared text around its per-token parts
  (:class:`TokenText`), its ``X-Amz-Date`` and its signature (32 bytes), about a tenth of the
  text it renders to. The text is built when a driver reads it.

A token can mint nothing more (DESIGN invariant 12): a :class:`Presigned`, and so a
``DbCredentials``, reaches neither the credentials that signed it nor the signing key, only the
text every copy of the token carries anyway (the access key id, the URL-encoded session token).

Nothing here logs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from ._aws import AwsCredentials

__all__ = [
    "DSQL_TOKEN_LIFETIME",
    "RDS_TOKEN_LIFETIME",
    "Presigned",
    "SigningParts",
    "TokenSigner",
    "TokenText",
    "amz_date_of",
    "datestamp",
    "presign",
    "sign_dsql_token",
    "sign_rds_token",
    "signing_parts",
]

RDS_TOKEN_LIFETIME = 900  # seconds; fixed by RDS
DSQL_TOKEN_LIFETIME = 900  # seconds; botocore's default, the caller may choose another
_ENDPOINT_BOUND = frozenset({"rds-db"})  # services whose tokens name host:port and the user
_ALGORITHM = "AWS4-HMAC-SHA256"
_EMPTY_PAYLOAD_HASH = hashlib.sha256(b"").hexdigest()  # botocore hashes the empty body


@functools.lru_cache(maxsize=1024)
def _encode(value: str) -> str:
    """URI-encode as SigV4 asks: everything but unreserved characters (users repeat: cached)."""
    return quote(value, safe="-_.~")


@dataclass(frozen=True, slots=True, eq=False)
class TokenText:
    """The text of a day's tokens around their per-token parts: what a token needs to render,
    and nothing that signs (no secret key, no signing key)."""

    service: str
    action: str
    endpoint_bound: bool  # the token names host:port and DBUser (RDS), or the host only (DSQL)
    query_before_date: str = field(repr=False)  # "X-Amz-Algorithm=...&X-Amz-Date="
    url_after_date: str = field(repr=False)  # "&X-Amz-Expires=...&X-Amz-Signature="


@dataclass(frozen=True, slots=True, eq=False)
class SigningParts:
    """What every token signed with one set of credentials on one day shares: the signing key,
    derived for one day, region and service (the credentials themselves are not kept)."""

    text: TokenText
    access_key_id: str
    datestamp: str
    key: bytes = field(repr=False)
    scope: str
    canonical_after_date: str = field(repr=False)  # "&X-Amz-Expires=...&X-Amz-SignedHeaders=host"


def signing_parts(
    credentials: AwsCredentials,
    *,
    region: str,
    datestamp: str,
    service: str = "rds-db",
    action: str = "connect",
    expires: int = RDS_TOKEN_LIFETIME,
) -> SigningParts:
    """Derive the signing key and encode what the day's tokens share (the slow part, ~10 us)."""
    key = ("AWS4" + credentials.secret_access_key).encode()
    for part in (datestamp, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    credential = _encode(f"{credentials.access_key_id}/{scope}")
    before_date = f"X-Amz-Algorithm={_ALGORITHM}&X-Amz-Credential={credential}&X-Amz-Date="
    token = credentials.session_token
    # Canonical order sorts the parameters: Security-Token before SignedHeaders; botocore's URL
    # lists SignedHeaders first. Both are kept as botocore writes them.
    security = f"&X-Amz-Security-Token={_encode(token)}" if token is not None else ""
    text = TokenText(
        service=service,
        action=action,
        endpoint_bound=service in _ENDPOINT_BOUND,
        query_before_date=before_date,
        url_after_date=f"&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host{security}"
        "&X-Amz-Signature=",
    )
    return SigningParts(
        text=text,
        access_key_id=credentials.access_key_id,
        datestamp=datestamp,
        key=key,
        scope=scope,
        canonical_after_date=f"&X-Amz-Expires={expires}{security}&X-Amz-SignedHeaders=host",
    )


class Presigned:
    """A signed token, kept small: the shared text around it, its date and its signature.

    ``render(host, port, user)`` gives the token text for the endpoint and user it was signed
    for; the caller keeps those (they are the token's key), so they are not stored twice.
    """

    __slots__ = ("amz_date", "signature", "text")

    def __init__(self, text: TokenText, amz_date: str, signature: bytes) -> None:
        self.text = text
        self.amz_date = amz_date
        self.signature = signature

    def render(self, host: str, port: int, user: str) -> str:
        """The token: ``host:port/?Action=...&X-Amz-Signature=...`` (no scheme)."""
        text = self.text
        url_host, query_head = _url_host(text, host, port), _query_head(text, user)
        return (
            f"{url_host}/?{query_head}{text.query_before_date}{self.amz_date}"
            f"{text.url_after_date}{self.signature.hex()}"
        )

    def __repr__(self) -> str:
        return f"Presigned(service={self.text.service!r}, amz_date={self.amz_date!r})"


def presign(parts: SigningParts, *, host: str, port: int, user: str, now: float) -> Presigned:
    """Sign a token for ``user`` at ``host:port`` at ``now`` (epoch seconds, same day as
    ``parts``); a DSQL token names neither the port nor the user."""
    amz_date = amz_date_of(now)
    if amz_date[:8] != parts.datestamp:
        raise ValueError("presign: parts were derived for another day")
    text = parts.text
    canonical_request = (
        f"GET\n/\n{_query_head(text, user)}{text.query_before_date}{amz_date}"
        f"{parts.canonical_after_date}\nhost:{_signed_host(text, host, port)}\n\nhost\n"
        f"{_EMPTY_PAYLOAD_HASH}"
    )
    string_to_sign = (
        f"{_ALGORITHM}\n{amz_date}\n{parts.scope}\n"
        f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    )
    return Presigned(text, amz_date, hmac.digest(parts.key, string_to_sign.encode(), "sha256"))


def sign_rds_token(
    credentials: AwsCredentials, host: str, port: int, user: str, region: str, *, now: float
) -> str:
    """An RDS IAM auth token as text, signed at ``now`` (for tools and tests)."""
    parts = signing_parts(credentials, region=region, datestamp=datestamp(now))
    return presign(parts, host=host, port=port, user=user, now=now).render(host, port, user)


def sign_dsql_token(
    credentials: AwsCredentials,
    host: str,
    region: str,
    *,
    admin: bool,
    expires: int = DSQL_TOKEN_LIFETIME,
    now: float,
) -> str:
    """An Aurora DSQL auth token as text, signed at ``now`` (for tools and tests)."""
    parts = signing_parts(
        credentials,
        region=region,
        datestamp=datestamp(now),
        service="dsql",
        action="DbConnectAdmin" if admin else "DbConnect",
        expires=expires,
    )
    return presign(parts, host=host, port=0, user="", now=now).render(host, 0, "")


def datestamp(now: float) -> str:
    """The UTC day of ``now`` as SigV4 writes it (``YYYYMMDD``)."""
    return amz_date_of(now)[:8]


_last_date: tuple[int, str] = (-1, "")


def amz_date_of(now: float) -> str:
    """``now`` as SigV4's ``X-Amz-Date`` (``YYYYMMDDTHHMMSSZ``)."""
    # Tokens signed in the same second share one string. One tuple, swapped whole: another
    # thread sees the old pair or the new one, never half of each.
    global _last_date
    second = int(now)
    cached_second, text = _last_date
    if second != cached_second:
        text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        _last_date = (second, text)
    return text


def _query_head(text: TokenText, user: str) -> str:
    if text.endpoint_bound:
        return f"Action={text.action}&DBUser={_encode(user)}&"
    return f"Action={text.action}&"


def _url_host(text: TokenText, host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return f"{name}:{port}" if text.endpoint_bound else name


def _signed_host(text: TokenText, host: str, port: int) -> str:
    # botocore's host header: lower-case, IPv6 in brackets, no port when it is https's 443.
    name = f"[{host.lower()}]" if ":" in host else host.lower()
    return name if port == 443 or not text.endpoint_bound else f"{name}:{port}"


class TokenSigner:
    """Signs tokens, deriving each (credentials, day, region, service) signing key once.

    A token is signed at the wall clock's time (``X-Amz-Date`` is what the server checks), even
    when a cache runs on a clock of its own (tests move a cache's clock to skip time). Keeps the
    parts of the last few credentials it signed with, by access key id (one secret key each),
    never the credentials themselves; safe to use from any thread (a race at worst derives the
    same parts twice).
    """

    def __init__(self, remember: int = 64, wall_clock: Callable[[], float] = time.time) -> None:
        self._remember = remember
        self._wall_clock = wall_clock
        self._parts: dict[tuple[str | int, ...], SigningParts] = {}

    def sign(
        self,
        credentials: AwsCredentials,
        *,
        host: str,
        port: int,
        user: str,
        region: str,
        service: str = "rds-db",
        action: str = "connect",
        expires: int = RDS_TOKEN_LIFETIME,
    ) -> Presigned:
        """A token for ``user`` at ``host:port``, signed now with ``credentials``."""
        now = self._wall_clock()
        day = amz_date_of(now)[:8]
        # An access key id has one secret key (and, if temporary, one session token).
        key = (credentials.access_key_id, day, region, service, action, expires)
        parts = self._parts.get(key)
        if parts is None:
            if len(self._parts) >= self._remember:
                self._parts.clear()
            parts = self._parts[key] = signing_parts(
                credentials,
                region=region,
                datestamp=day,
                service=service,
                action=action,
                expires=expires,
            )
        return presign(parts, host=host, port=port, user=user, now=now)
