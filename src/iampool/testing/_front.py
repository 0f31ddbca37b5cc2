"""What a wire-protocol front (pg.py, mysql.py) needs: a buffered peer, a pipe, the front desk.

The front desk is the gateway as a front sees it: it verifies a login and keeps the counters;
the fronts only speak their protocol.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSStream

from ._verify import RejectReason

__all__ = [
    "STREAM_ERRORS",
    "FrontDesk",
    "Mode",
    "Peer",
    "ProtocolViolation",
    "Upstream",
    "pipe",
]

Mode = Literal["rds", "redshift", "dsql", "password"]

_CHUNK = 65_536
_CLOSE_NOTIFY_GRACE = 1.0  # seconds a TLS peer gets to answer close_notify

STREAM_ERRORS: tuple[type[BaseException], ...] = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ssl.SSLError,
    OSError,
)
"""What a peer that hangs up, resets or fails its TLS handshake raises."""


class ProtocolViolation(Exception):
    """The peer sent bytes its wire protocol does not allow (the message never quotes them)."""


@dataclass(frozen=True)
class Upstream:
    """The real database behind the gateway, from its admin DSN. The repr hides the password."""

    scheme: str
    host: str
    port: int
    user: str
    password: str | None = field(repr=False)
    database: str | None

    @classmethod
    def from_dsn(cls, dsn: str) -> Upstream:
        """Parse ``postgresql://user:password@host:port/database`` or ``mysql://...``.

        Raises:
            ValueError: an unknown scheme (the message does not echo the DSN).
        """
        parts = urlsplit(dsn)
        scheme = {"postgres": "postgresql", "postgresql": "postgresql", "mysql": "mysql"}.get(
            parts.scheme.lower()
        )
        if scheme is None:
            raise ValueError("the upstream DSN must start with postgresql:// or mysql://")
        default_user = "postgres" if scheme == "postgresql" else "root"
        user = unquote(parts.username) if parts.username else default_user
        database = unquote(parts.path.lstrip("/")) or None
        # libpq style "?host=/run/postgresql" names a Unix-socket directory (pgserver uses it).
        socket_dir = dict(parse_qsl(parts.query)).get("host")
        return cls(
            scheme=scheme,
            host=socket_dir or parts.hostname or "127.0.0.1",
            port=parts.port or (5432 if scheme == "postgresql" else 3306),
            user=user,
            password=unquote(parts.password) if parts.password is not None else None,
            database=database or (user if scheme == "postgresql" else None),
        )

    @property
    def endpoint(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    async def connect(self) -> ByteStream:
        """A byte stream to the server: TCP, or PostgreSQL's socket when ``host`` is a directory."""
        if self.host.startswith("/"):
            return await anyio.connect_unix(f"{self.host}/.s.PGSQL.{self.port}")
        return await anyio.connect_tcp(self.host, self.port)


class FrontDesk(Protocol):
    """The gateway's services to a protocol front."""

    @property
    def mode(self) -> Mode: ...
    @property
    def redshift_wire(self) -> bool:
        """Speaks to clients as Redshift does (startup parameters, ``server_version``)."""
        ...

    @property
    def upstream(self) -> Upstream: ...
    @property
    def server_tls(self) -> ssl.SSLContext | None:
        """The context to accept TLS with, or ``None`` when TLS is not offered."""
        ...

    @property
    def session_lifetime(self) -> float | None:
        """Seconds after which a session is cut, or ``None``."""
        ...

    async def admit(self, user: str, secret: str, database: str | None) -> RejectReason | None:
        """Verify a login's password; counts the acceptance or the rejection."""
        ...

    def refuse(self, reason: RejectReason) -> None:
        """Count a connection turned away before its password could be checked."""
        ...

    def capture_plaintext(self, user: str, secret: str) -> None:
        """Record (as a hash and a length) a password that arrived without TLS."""
        ...

    def connect_upstream(self) -> AbstractAsyncContextManager[Peer]:
        """Open a TCP connection to the upstream server, counted while it is open."""
        ...


class Peer:
    """One side of a relayed connection: exact reads over a buffer, TLS upgrade in place."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted."""
        return isinstance(self._stream, TLSStream)

    @property
    def remote_host(self) -> str:
        """The peer's IP address, as the database would name the client host."""
        try:
            address: Any = self._stream.extra(SocketAttribute.remote_address)  # noqa: S610 (anyio)
        except anyio.TypedAttributeLookupError:
            return "localhost"
        return str(address[0]) if isinstance(address, tuple) else "localhost"

    async def receive_exactly(self, size: int) -> bytes:
        """Read exactly ``size`` bytes; raises ``anyio.EndOfStream`` if the peer hangs up."""
        while len(self._buffer) < size:
            self._buffer += await self._stream.receive(_CHUNK)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the peer."""
        await self._stream.send(data)

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Accept a TLS handshake on this connection (server side).

        Bytes the client sent early (its ClientHello may follow a MySQL SSLRequest at once) are
        replayed into the handshake rather than lost.
        """
        early = bytes(self._buffer)
        self._buffer.clear()
        transport: ByteStream = _Replay(self._stream, early) if early else self._stream
        self._stream = await TLSStream.wrap(
            transport, server_side=True, ssl_context=context, standard_compatible=False
        )

    async def aclose(self) -> None:
        """Close the connection; a TLS peer first gets close_notify, as a real server sends.

        Without it, some clients (asyncpg under load) keep their socket open after a refused
        login. The peer gets a moment to answer; it is then closed regardless.
        """
        stream = self._stream
        if isinstance(stream, TLSStream):
            with anyio.move_on_after(_CLOSE_NOTIFY_GRACE, shield=True), suppress(*STREAM_ERRORS):
                await stream.unwrap()
        await anyio.aclose_forcefully(stream)

    async def copy_to(self, other: Peer) -> None:
        """Send everything this peer says to ``other`` until this peer hangs up."""
        if self._buffer:
            await other.send(bytes(self._buffer))
            self._buffer.clear()
        while True:
            await other.send(await self._stream.receive(_CHUNK))


class _Replay(ByteStream):
    """A stream that first yields bytes already read from it, then reads on."""

    def __init__(self, stream: ByteStream, early: bytes) -> None:
        self._stream = stream
        self._early = early

    async def receive(self, max_bytes: int = _CHUNK) -> bytes:
        if self._early:
            data, self._early = self._early[:max_bytes], self._early[max_bytes:]
            return data
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Any]:
        return self._stream.extra_attributes


async def pipe(client: Peer, upstream: Peer) -> None:
    """Relay bytes both ways until either side hangs up; then both directions stop."""

    async def copy(source: Peer, target: Peer, scope: anyio.CancelScope) -> None:
        try:
            with suppress(*STREAM_ERRORS):
                await source.copy_to(target)
        finally:
            scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(copy, client, upstream, group.cancel_scope)
        group.start_soon(copy, upstream, client, group.cancel_scope)
