"""The PostgreSQL (and Redshift) wire-protocol front of the IAM gateway.

A client's conversation, as RDS PostgreSQL or Redshift holds it::

    SSLRequest -> 'S' + TLS handshake        ('N' when TLS is not offered; GSSENCRequest -> 'N')
    StartupMessage(user, database, ...)      (no TLS -> FATAL 28000, after capturing any password)
    <- AuthenticationCleartextPassword
    PasswordMessage(token or temporary password)
    <- FATAL 28000 "PAM authentication failed for user ..."
       (Redshift, valid password, no such user: FATAL 42704 'user "..." does not exist')
    or, once verified:
    the gateway logs in to the upstream as the same user and relays AuthenticationOk,
    ParameterStatus, BackendKeyData, ReadyForQuery and then every byte both ways.

A CancelRequest is forwarded to the upstream, whose BackendKeyData the client holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import struct

import anyio

from ._front import STREAM_ERRORS, FrontDesk, Peer, ProtocolViolation, Upstream, pipe

__all__ = [
    "REDSHIFT_SERVER_VERSION",
    "REDSHIFT_STARTUP_PARAMETERS",
    "run_admin_statements",
    "scram_client_final",
    "serve_client",
]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_PROTOCOL_3 = 196608
_MAX_STARTUP = 10_000  # PostgreSQL's own MAX_STARTUP_PACKET_LENGTH
_MAX_MESSAGE = 65_536  # tokens are 1-2 KB; anything this large is not a password
_MAX_UPSTREAM_MESSAGE = 1 << 20
_AUTH_OK = b"R" + struct.pack("!ii", 8, 0)
_ASK_CLEARTEXT_PASSWORD = b"R" + struct.pack("!ii", 8, 3)

# How each service refuses a login over its throttle (the gateway's login_rate).
_THROTTLED = {
    "rds": ("53300", "too many competing requests"),
    "dsql": ("53400", "connection rate exceeded: too many new connections to this cluster"),
    "redshift": ("53300", "too many connections"),  # no throttle in Redshift mode
    "password": ("53300", "too many connections"),
}

REDSHIFT_SERVER_VERSION = "8.0.2"
"""The ``server_version`` a Redshift cluster reports, and the Redshift-mode gateway with it."""

REDSHIFT_STARTUP_PARAMETERS = frozenset(
    {
        "user",
        "database",
        "application_name",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "IntervalStyle",
        "extra_float_digits",
        "search_path",
        "options",
    }
)
"""Startup parameters relayed in Redshift mode; PostgreSQL rejects the rest redshift-connector
sends (``client_protocol_version``, ``driver_version``, ``os_version``,
``driver_discovery_version``, ``plugin_name``, ``idp_type``, ``provider_name``, ``token_type``,
``identity_namespace``, ``idc_client_display_name``)."""


async def serve_client(client: Peer, desk: FrontDesk, *, handshake_timeout: float) -> None:
    """Hold one client's conversation until it or the upstream hangs up.

    Raises:
        ProtocolViolation: the client did not speak the PostgreSQL protocol.
    """
    with anyio.fail_after(handshake_timeout):
        login = await _client_login(client, desk)
    if login is None:
        return
    params, password = login
    async with desk.connect_upstream() as upstream:
        with anyio.fail_after(handshake_timeout):
            await upstream.send(_startup_message(_upstream_params(params, desk)))
            refusal = await _authenticate(upstream, params["user"], desk.upstream.password)
        if refusal is not None:
            await client.send(refusal)
            return
        del password  # verified; the upstream login used the gateway's own credentials
        await client.send(_AUTH_OK)
        if desk.redshift_wire:
            with anyio.fail_after(handshake_timeout):
                await _relay_session_start_as_redshift(upstream, client)
        lifetime = desk.session_lifetime
        with anyio.move_on_after(math.inf if lifetime is None else lifetime):
            await pipe(client, upstream)  # cut at the session's age: both sides closed


async def _client_login(client: Peer, desk: FrontDesk) -> tuple[dict[str, str], str] | None:
    """Negotiate TLS, read the startup parameters and the password, and verify it."""
    for _ in range(3):  # SSLRequest, GSSENCRequest and the StartupMessage, in some order
        code, body = await _read_startup_packet(client)
        if code == _SSL_REQUEST and not client.tls:
            tls = desk.server_tls
            await client.send(b"N" if tls is None else b"S")
            if tls is not None:
                await client.start_tls(tls)
        elif code == _GSSENC_REQUEST and not client.tls:
            await client.send(b"N")
        elif code == _CANCEL_REQUEST and len(body) == 8:
            await _forward_cancel(desk, body)
            return None
        elif code == _PROTOCOL_3:
            break
        else:
            raise ProtocolViolation("unsupported startup packet")
    else:
        raise ProtocolViolation("too many startup packets")
    params = _startup_params(body)
    user = params.get("user")
    if not user:
        raise ProtocolViolation("no user in the startup packet")
    params.setdefault("database", user)
    if not client.tls:
        if desk.server_tls is None:
            # Ask anyway, like a server that does not enforce TLS: a client that answers has
            # sent its secret in plain text, and the test should see that it did.
            await client.send(_ASK_CLEARTEXT_PASSWORD)
            desk.capture_plaintext(user, await _read_password(client))
        desk.refuse("not_tls")
        host = client.remote_host
        await client.send(
            _fatal(
                "28000",
                f'no pg_hba.conf entry for host "{host}", user "{user}", '
                f'database "{params["database"]}", no encryption',
            )
        )
        return None
    await client.send(_ASK_CLEARTEXT_PASSWORD)
    password = await _read_password(client)
    reason = await desk.admit(user, password, params["database"])
    if reason == "no_such_user":  # what Redshift answers valid credentials for a missing user
        await client.send(_fatal("42704", f'user "{user}" does not exist'))
        return None
    if reason == "throttled":
        await client.send(_fatal(*_THROTTLED[desk.mode]))
        return None
    if reason is not None and desk.mode == "password":  # what the server says to a bad password
        sqlstate = "28000" if desk.redshift_wire else "28P01"  # Redshift's code, PostgreSQL's
        await client.send(_fatal(sqlstate, f'password authentication failed for user "{user}"'))
        return None
    if reason is not None:
        await client.send(_fatal("28000", f'PAM authentication failed for user "{user}"'))
        return None
    return params, password


async def _read_startup_packet(client: Peer) -> tuple[int, bytes]:
    (length,) = struct.unpack("!i", await client.receive_exactly(4))
    if not 8 <= length <= _MAX_STARTUP:
        raise ProtocolViolation("startup packet length out of range")
    body = await client.receive_exactly(length - 4)
    (code,) = struct.unpack("!i", body[:4])
    return code, body[4:]


def _startup_params(body: bytes) -> dict[str, str]:
    fields = body.split(b"\0")
    # name, value, name, value, ..., "", "" (the terminating NUL after the last pair).
    if len(fields) < 2 or fields[-1] != b"" or fields[-2] != b"" or len(fields) % 2:
        raise ProtocolViolation("startup parameters are not NUL-terminated pairs")
    try:
        texts = [item.decode() for item in fields[:-2]]
    except UnicodeDecodeError:
        raise ProtocolViolation("startup parameters are not UTF-8") from None
    return dict(zip(texts[::2], texts[1::2], strict=True))


async def _read_password(client: Peer) -> str:
    kind, body = await _read_message(client, _MAX_MESSAGE)
    if kind != b"p" or not body.endswith(b"\0"):
        raise ProtocolViolation("expected a PasswordMessage")
    try:
        return body[:-1].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation("password is not UTF-8") from None


async def _read_message(peer: Peer, limit: int) -> tuple[bytes, bytes]:
    header = await peer.receive_exactly(5)
    (length,) = struct.unpack("!i", header[1:])
    if not 4 <= length <= limit:
        raise ProtocolViolation("message length out of range")
    return header[:1], await peer.receive_exactly(length - 4)


def _upstream_params(params: dict[str, str], desk: FrontDesk) -> dict[str, str]:
    if desk.redshift_wire:
        return {
            name: value for name, value in params.items() if name in REDSHIFT_STARTUP_PARAMETERS
        }
    return params


def _startup_message(params: dict[str, str]) -> bytes:
    body = struct.pack("!i", _PROTOCOL_3)
    body += b"".join(f"{name}\0{value}\0".encode() for name, value in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def _fatal(code: str, message: str) -> bytes:
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def _forward_cancel(desk: FrontDesk, body: bytes) -> None:
    """Pass a CancelRequest on: the client holds the upstream's process id and secret key."""
    async with desk.connect_upstream() as upstream:
        await upstream.send(struct.pack("!ii", 16, _CANCEL_REQUEST) + body)


async def _authenticate(upstream: Peer, user: str, password: str | None) -> bytes | None:
    """Answer the upstream's authentication requests until AuthenticationOk.

    Returns:
        ``None`` once authenticated, or the upstream's ErrorResponse to relay to the client.
    """
    scram: tuple[str, str] | None = None  # (client-first-bare, nonce) while SCRAM runs
    expected_server_signature = b""
    while True:
        kind, body = await _read_message(upstream, _MAX_UPSTREAM_MESSAGE)
        if kind == b"E":
            return kind + struct.pack("!i", len(body) + 4) + body
        if kind == b"N":
            continue
        if kind != b"R" or len(body) < 4:
            raise ProtocolViolation("unexpected message from the upstream during login")
        (request,) = struct.unpack("!i", body[:4])
        if request == 0:
            return None
        if password is None and request in (3, 5, 10):
            return _fatal("28000", "the gateway's upstream DSN has no password to log in with")
        secret = password or ""
        if request == 3:
            await upstream.send(_password_message(secret.encode() + b"\0"))
        elif request == 5:
            inner = hashlib.md5(f"{secret}{user}".encode(), usedforsecurity=False).hexdigest()
            salted = inner.encode() + body[4:8]
            outer = hashlib.md5(salted, usedforsecurity=False).hexdigest()
            await upstream.send(_password_message(f"md5{outer}\0".encode()))
        elif request == 10 and b"SCRAM-SHA-256\0" in body[4:]:
            nonce = base64.b64encode(secrets.token_bytes(18)).decode()
            client_first_bare = f"n=,r={nonce}"
            scram = (client_first_bare, nonce)
            first = f"n,,{client_first_bare}".encode()
            await upstream.send(
                _password_message(b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
            )
        elif request == 11 and scram is not None:
            server_first = body[4:].decode(errors="replace")
            final, expected_server_signature = scram_client_final(
                secret, scram[0], server_first, client_nonce=scram[1]
            )
            await upstream.send(_password_message(final.encode()))
        elif request == 12 and scram is not None:
            if not hmac.compare_digest(body[4:].strip(), b"v=" + expected_server_signature):
                raise ProtocolViolation("the upstream's SCRAM server signature does not match")
        else:
            return _fatal("28000", f"the gateway cannot answer upstream auth request {request}")


async def _relay_session_start_as_redshift(upstream: Peer, client: Peer) -> None:
    """Relay ParameterStatus .. ReadyForQuery, reporting ``server_version`` as Redshift does.

    redshift-connector parses ``server_version`` with ``packaging.version`` and fails on a
    distribution's "15.4 (Debian 15.4-1)"; Redshift itself reports 8.0.2.
    """
    while True:
        kind, body = await _read_message(upstream, _MAX_UPSTREAM_MESSAGE)
        if kind == b"S" and body.startswith(b"server_version\0"):
            body = b"server_version\0" + REDSHIFT_SERVER_VERSION.encode() + b"\0"
        await client.send(kind + struct.pack("!i", len(body) + 4) + body)
        if kind in (b"Z", b"E"):
            return


def _password_message(payload: bytes) -> bytes:
    return b"p" + struct.pack("!i", len(payload) + 4) + payload


def scram_client_final(
    password: str, client_first_bare: str, server_first: str, *, client_nonce: str
) -> tuple[str, bytes]:
    """SCRAM-SHA-256 (RFC 5802/7677) client-final-message and the server signature to expect.

    Raises:
        ProtocolViolation: the server-first-message is malformed or does not extend our nonce.
    """
    try:
        attributes = dict(item.split("=", 1) for item in server_first.split(","))
        server_nonce, salt, iterations = (
            attributes["r"],
            base64.b64decode(attributes["s"]),
            int(attributes["i"]),
        )
    except (KeyError, ValueError):
        raise ProtocolViolation("malformed SCRAM server-first-message") from None
    if not server_nonce.startswith(client_nonce) or not 0 < iterations <= 1_000_000:
        raise ProtocolViolation("the SCRAM server nonce does not extend the client's")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={server_nonce}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    return (
        f"{without_proof},p={base64.b64encode(proof).decode()}",
        base64.b64encode(server_signature),
    )


async def run_admin_statements(upstream: Upstream, statements: list[str]) -> list[str]:
    """Run SQL statements as the upstream's admin user, one simple query each.

    Returns:
        The SQLSTATE of each statement that failed ("" for those that succeeded).

    Raises:
        OSError: the upstream does not answer.
        ConnectionError: the admin login was refused.
    """
    stream = await upstream.connect()
    peer = Peer(stream)
    states: list[str] = []
    try:
        params = {"user": upstream.user, "database": upstream.database or upstream.user}
        await peer.send(_startup_message(params))
        refusal = await _authenticate(peer, upstream.user, upstream.password)
        if refusal is not None:
            raise ConnectionError(f"upstream {upstream.endpoint} refused the admin login")
        await _until_ready(peer)
        for sql in statements:
            await peer.send(b"Q" + struct.pack("!i", len(sql.encode()) + 5) + sql.encode() + b"\0")
            states.append(await _until_ready(peer))
        await peer.send(b"X" + struct.pack("!i", 4))
    except STREAM_ERRORS as exc:
        raise ConnectionError(f"upstream {upstream.endpoint} hung up during admin SQL") from exc
    finally:
        await peer.aclose()
    return states


async def _until_ready(peer: Peer) -> str:
    """Read to ReadyForQuery; the SQLSTATE of an ErrorResponse on the way, or ""."""
    state = ""
    while True:
        kind, body = await _read_message(peer, _MAX_UPSTREAM_MESSAGE)
        if kind == b"Z":
            return state
        if kind == b"E":
            fields = {item[:1]: item[1:] for item in body.split(b"\0") if item}
            state = fields.get(b"C", b"XX000").decode()
