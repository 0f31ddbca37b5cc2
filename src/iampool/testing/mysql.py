"""The MySQL / MariaDB wire-protocol front of the IAM gateway.

A client's conversation, as RDS MySQL holds it for IAM users::

    (gateway connects to the upstream and mirrors its greeting, adding CLIENT_SSL)
    <- HandshakeV10 (server version, capabilities, mysql_native_password)
    SSLRequest -> TLS handshake               (plain-text clients are refused)
    HandshakeResponse41(user, ...)
    <- AuthSwitchRequest(mysql_clear_password) unless the client already used that plugin
    token + NUL
    <- ERR 1045 (28000) "Access denied for user ..."   or, once verified:
    the gateway logs in to the upstream as the same user with the client's capabilities,
    relays the upstream's OK and then every byte both ways.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import struct
from dataclasses import dataclass

import anyio

from ._front import STREAM_ERRORS, FrontDesk, Peer, ProtocolViolation, Upstream, pipe

__all__ = ["run_admin_statements", "scramble_native_password", "serve_client"]

# Capability flags (include/mysql_com.h).
_LONG_PASSWORD = 1
_CONNECT_WITH_DB = 1 << 3
_COMPRESS = 1 << 5
_PROTOCOL_41 = 1 << 9
_SSL = 1 << 11
_TRANSACTIONS = 1 << 13
_SECURE_CONNECTION = 1 << 15
_MULTI_RESULTS = 1 << 17
_PLUGIN_AUTH = 1 << 19
_CONNECT_ATTRS = 1 << 20
_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
_ZSTD_COMPRESSION = 1 << 26
_SSL_VERIFY_SERVER_CERT = 1 << 30
_NOT_RELAYED = _SSL | _COMPRESS | _ZSTD_COMPRESSION | _SSL_VERIFY_SERVER_CERT

_MAX_CLIENT_PACKET = 65_536  # tokens are 1-2 KB; a handshake this large is not a login
_MAX_UPSTREAM_PACKET = 1 << 20
_SSL_REQUEST_SIZE = 32
_NATIVE = b"mysql_native_password"
_CLEAR = b"mysql_clear_password"
_SALT_ALPHABET = (string.ascii_letters + string.digits).encode()


async def serve_client(client: Peer, desk: FrontDesk, *, handshake_timeout: float) -> None:
    """Hold one client's conversation until it or the upstream hangs up.

    Raises:
        ProtocolViolation: the client or the upstream did not speak the MySQL protocol.
    """
    async with desk.connect_upstream() as upstream:
        with anyio.fail_after(handshake_timeout):
            logged_in = await _handshake(client, upstream, desk)
        if logged_in:
            await pipe(client, upstream)


async def _handshake(client: Peer, upstream: Peer, desk: FrontDesk) -> bool:
    _, payload = await _read_packet(upstream, _MAX_UPSTREAM_PACKET)
    if payload[:1] == b"\xff":  # e.g. "Too many connections": the client hears it as is
        await _send_packet(client, 0, payload)
        return False
    greeting = _Greeting.parse(payload)
    tls = desk.server_tls
    await _send_packet(client, 0, greeting.for_client(offer_tls=tls is not None))
    sequence, payload = await _read_packet(client, _MAX_CLIENT_PACKET)
    if len(payload) == _SSL_REQUEST_SIZE and _capabilities(payload) & _SSL:
        if tls is None:
            raise ProtocolViolation("SSLRequest although TLS was not offered")
        await client.start_tls(tls)
        sequence, payload = await _read_packet(client, _MAX_CLIENT_PACKET)
    response = _HandshakeResponse.parse(payload)
    if response.plugin == _CLEAR:
        secret = response.auth_response
    else:
        if not response.capabilities & _PLUGIN_AUTH:
            raise ProtocolViolation("the client cannot switch to mysql_clear_password")
        sequence = (sequence + 1) % 256
        await _send_packet(client, sequence, b"\xfe" + _CLEAR + b"\0")
        sequence, secret = await _read_packet(client, _MAX_CLIENT_PACKET)
    password = secret.removesuffix(b"\0").decode("latin-1")  # the encoding clients send it in
    reply = (sequence + 1) % 256
    user = response.user
    if not client.tls:
        desk.capture_plaintext(user, password)
        desk.refuse("not_tls")
        message = "Connections using insecure transport are prohibited while "
        message += "--require_secure_transport=ON."
        await _send_packet(client, reply, _error(3159, "HY000", message))
        return False
    reason = await desk.admit(user, password, response.database)
    if reason is not None:
        why = "too many competing requests" if reason == "throttled" else "using password: YES"
        message = f"Access denied for user '{user}'@'{client.remote_host}' ({why})"
        await _send_packet(client, reply, _error(1045, "28000", message))
        return False
    outcome = await _login(upstream, greeting, response, desk.upstream.password)
    await _send_packet(client, reply, outcome)
    return outcome[:1] == b"\x00"


@dataclass(frozen=True)
class _Greeting:
    """The upstream's HandshakeV10, kept to mirror it and to answer its challenge."""

    server_version: bytes
    connection_id: int
    salt: bytes
    capabilities: int
    charset: int
    status: int
    reserved: bytes  # MariaDB keeps its extended capabilities in the last 4 of these 10 bytes
    auth_plugin: bytes

    @classmethod
    def parse(cls, payload: bytes) -> _Greeting:
        try:
            if payload[0] != 10:
                raise ProtocolViolation("the upstream greeting is not protocol version 10")
            end = payload.index(b"\0", 1)
            version = payload[1:end]
            position = end + 1
            (connection_id,) = struct.unpack_from("<I", payload, position)
            salt = payload[position + 4 : position + 12]
            (low,) = struct.unpack_from("<H", payload, position + 13)
            charset = payload[position + 15]
            status, high = struct.unpack_from("<HH", payload, position + 16)
            salt_size = payload[position + 20]
            reserved = payload[position + 21 : position + 31]
            position += 31
            capabilities = low | high << 16
            if capabilities & _SECURE_CONNECTION:
                size = max(13, salt_size - 8)
                salt += payload[position : position + size].removesuffix(b"\0")
                position += size
            plugin = _NATIVE
            if capabilities & _PLUGIN_AUTH:
                plugin = payload[position:].split(b"\0", 1)[0]
        except (IndexError, ValueError, struct.error):
            raise ProtocolViolation("malformed upstream greeting") from None
        return cls(version, connection_id, salt, capabilities, charset, status, reserved, plugin)

    def for_client(self, *, offer_tls: bool) -> bytes:
        """The greeting RDS would send: the upstream's, with TLS offered and a fresh salt."""
        capabilities = (self.capabilities | _PLUGIN_AUTH | _SECURE_CONNECTION) & ~_NOT_RELAYED
        if offer_tls:
            capabilities |= _SSL
        salt = bytes(secrets.choice(_SALT_ALPHABET) for _ in range(20))
        return b"".join(
            [
                b"\x0a",
                self.server_version + b"\0",
                struct.pack("<I", self.connection_id),
                salt[:8] + b"\0",
                struct.pack(
                    "<HBHH", capabilities & 0xFFFF, self.charset, self.status, capabilities >> 16
                ),
                bytes([len(salt) + 1]),
                self.reserved,
                salt[8:] + b"\0",
                _NATIVE + b"\0",
            ]
        )


@dataclass(frozen=True)
class _HandshakeResponse:
    """A client's HandshakeResponse41."""

    capabilities: int
    max_packet: int
    charset: int
    filler: bytes
    user: str
    auth_response: bytes
    database: str | None
    plugin: bytes | None
    attributes: bytes  # raw, with its length prefix; b"" when absent

    @classmethod
    def parse(cls, payload: bytes) -> _HandshakeResponse:
        try:
            capabilities, max_packet, charset = struct.unpack_from("<IIB", payload)
            if not capabilities & _PROTOCOL_41:
                raise ProtocolViolation("pre-4.1 handshake response")
            filler = payload[9:32]
            user, position = _nul_terminated(payload, 32)
            if capabilities & (_PLUGIN_AUTH_LENENC_CLIENT_DATA | _SECURE_CONNECTION):
                if capabilities & _PLUGIN_AUTH_LENENC_CLIENT_DATA:
                    size, position = _lenenc_int(payload, position)
                else:
                    size, position = payload[position], position + 1
                auth_response = payload[position : position + size]
                position += size
                if len(auth_response) != size:
                    raise ProtocolViolation("truncated auth response")
            else:
                auth_response, position = _nul_terminated(payload, position)
            database = None
            if capabilities & _CONNECT_WITH_DB and position < len(payload):
                raw_database, position = _nul_terminated(payload, position)
                database = raw_database.decode()
            plugin = None
            if capabilities & _PLUGIN_AUTH and position < len(payload):
                plugin, position = _nul_terminated(payload, position)
            attributes = b""
            if capabilities & _CONNECT_ATTRS and position < len(payload):
                attributes = payload[position:]
            return cls(
                capabilities=capabilities,
                max_packet=max_packet,
                charset=charset,
                filler=filler,
                user=user.decode(),
                auth_response=auth_response,
                database=database,
                plugin=plugin,
                attributes=attributes,
            )
        except (IndexError, ValueError, struct.error):
            raise ProtocolViolation("malformed handshake response") from None

    def for_upstream(self, auth_plugin: bytes, auth_response: bytes) -> bytes:
        """The same response as the client's, minus TLS and compression, answering upstream."""
        capabilities = self.capabilities & ~_NOT_RELAYED | _PLUGIN_AUTH
        if self.database is None:
            capabilities &= ~_CONNECT_WITH_DB
        if capabilities & _PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = _lenenc(len(auth_response)) + auth_response
        elif capabilities & _SECURE_CONNECTION:
            auth = bytes([len(auth_response)]) + auth_response
        else:
            auth = auth_response + b"\0"
        parts = [
            struct.pack("<IIB", capabilities, self.max_packet, self.charset),
            self.filler,
            self.user.encode() + b"\0",
            auth,
        ]
        if self.database is not None:
            parts.append(self.database.encode() + b"\0")
        parts.append(auth_plugin + b"\0")
        if capabilities & _CONNECT_ATTRS:
            parts.append(self.attributes or b"\0")
        return b"".join(parts)


async def _login(
    upstream: Peer, greeting: _Greeting, response: _HandshakeResponse, password: str | None
) -> bytes:
    """Log in to the upstream as ``response.user``; returns its OK or ERR payload."""
    plugin = greeting.auth_plugin
    await _send_packet(
        upstream, 1, response.for_upstream(plugin, _answer(plugin, greeting.salt, password))
    )
    for _ in range(4):
        sequence, payload = await _read_packet(upstream, _MAX_UPSTREAM_PACKET)
        if payload[:1] in (b"\x00", b"\xff"):
            return payload
        if payload[:1] == b"\xfe":  # AuthSwitchRequest: plugin name, NUL, challenge
            plugin, _, challenge = payload[1:].partition(b"\0")
            answer = _answer(plugin, challenge.removesuffix(b"\0"), password)
            await _send_packet(upstream, (sequence + 1) % 256, answer)
        elif payload[:2] == b"\x01\x03":  # caching_sha2_password fast path: OK follows
            continue
        else:
            break
    return _error(1045, "28000", "the gateway cannot complete the upstream's authentication")


def _answer(plugin: bytes, challenge: bytes, password: str | None) -> bytes:
    secret = (password or "").encode()
    if plugin == _CLEAR:
        return secret + b"\0"
    if not secret:
        return b""
    if plugin == b"caching_sha2_password":
        return _scramble_caching_sha2(secret, challenge[:20])
    return scramble_native_password(secret, challenge[:20])


def scramble_native_password(password: bytes, salt: bytes) -> bytes:
    """``mysql_native_password``: SHA1(password) XOR SHA1(salt + SHA1(SHA1(password)))."""
    stage1 = hashlib.sha1(password, usedforsecurity=False).digest()
    stage2 = hashlib.sha1(stage1, usedforsecurity=False).digest()
    mask = hashlib.sha1(salt + stage2, usedforsecurity=False).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def _scramble_caching_sha2(password: bytes, salt: bytes) -> bytes:
    stage1 = hashlib.sha256(password).digest()
    stage2 = hashlib.sha256(stage1).digest()
    mask = hashlib.sha256(stage2 + salt).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def _capabilities(payload: bytes) -> int:
    return int.from_bytes(payload[:4], "little")


def _error(code: int, state: str, message: str) -> bytes:
    return b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + message.encode()


def _nul_terminated(payload: bytes, position: int) -> tuple[bytes, int]:
    end = payload.index(b"\0", position)
    return payload[position:end], end + 1


def _lenenc_int(payload: bytes, position: int) -> tuple[int, int]:
    first = payload[position]
    if first < 0xFB:
        return first, position + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if width is None:
        raise ProtocolViolation("bad length-encoded integer")
    raw = payload[position + 1 : position + 1 + width]
    if len(raw) != width:
        raise ProtocolViolation("truncated length-encoded integer")
    return int.from_bytes(raw, "little"), position + 1 + width


def _lenenc(value: int) -> bytes:
    if value < 0xFB:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


async def _read_packet(peer: Peer, limit: int) -> tuple[int, bytes]:
    header = await peer.receive_exactly(4)
    size = int.from_bytes(header[:3], "little")
    if size > limit:
        raise ProtocolViolation("packet larger than a handshake can be")
    return header[3], await peer.receive_exactly(size)


async def _send_packet(peer: Peer, sequence: int, payload: bytes) -> None:
    await peer.send(len(payload).to_bytes(3, "little") + bytes([sequence]) + payload)


async def run_admin_statements(upstream: Upstream, statements: list[str]) -> list[str]:
    """Run SQL statements as the upstream's admin user (COM_QUERY each).

    Returns:
        For each statement, ``""`` when it succeeded, else its SQLSTATE and MySQL error number,
        e.g. ``"HY000 (1396)"``.

    Raises:
        OSError: the upstream does not answer.
        ConnectionError: the admin login was refused.
    """
    stream = await upstream.connect()
    peer = Peer(stream)
    states: list[str] = []
    try:
        _, payload = await _read_packet(peer, _MAX_UPSTREAM_PACKET)
        greeting = _Greeting.parse(payload)
        wanted = (
            _LONG_PASSWORD
            | _PROTOCOL_41
            | _TRANSACTIONS
            | _SECURE_CONNECTION
            | _MULTI_RESULTS
            | _PLUGIN_AUTH
            | _PLUGIN_AUTH_LENENC_CLIENT_DATA
        )
        admin = _HandshakeResponse(
            capabilities=wanted & greeting.capabilities,
            max_packet=1 << 24,
            charset=greeting.charset,
            filler=bytes(23),
            user=upstream.user,
            auth_response=b"",
            database=None,
            plugin=None,
            attributes=b"",
        )
        if (await _login(peer, greeting, admin, upstream.password))[:1] != b"\x00":
            raise ConnectionError(f"upstream {upstream.endpoint} refused the admin login")
        for sql in statements:
            await _send_packet(peer, 0, b"\x03" + sql.encode())
            _, result = await _read_packet(peer, _MAX_UPSTREAM_PACKET)
            if result[:1] == b"\xff":
                errno = int.from_bytes(result[1:3], "little")
                states.append(f"{result[4:9].decode(errors='replace')} ({errno})")
            elif result[:1] == b"\x00":
                states.append("")
            else:
                raise ProtocolViolation("an admin statement returned rows")
        await _send_packet(peer, 0, b"\x01")
    except STREAM_ERRORS as exc:
        raise ConnectionError(f"upstream {upstream.endpoint} hung up during admin SQL") from exc
    finally:
        await peer.aclose()
    return states
