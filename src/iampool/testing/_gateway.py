"""``IamGateway``: a local stand-in for the RDS / Redshift front door, in front of a real server.

The gateway runs its own event loop in a background thread, so sync tests, asyncio or trio tests
and session-scoped fixtures all use it the same way. It owns the lifecycle, the counters and the
login decision; the wire protocols live in ``pg.py`` and ``mysql.py``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import ssl
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import quote, urlencode

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.streams.stapled import MultiListener

from . import mysql, pg
from ._admission import Admission
from ._front import STREAM_ERRORS, Mode, Peer, ProtocolViolation, Upstream
from ._logins import LoginRecord, PlaintextSecret, WireProtocol
from ._throttle import LoginThrottle
from ._tls import TlsMaterial
from ._users import UpstreamUsers
from ._verify import (
    CredentialAuthority,
    RejectReason,
)

__all__ = ["IamGateway", "PlaintextSecret"]

_log = logging.getLogger("iampool.testing.gateway")


class _Front(Protocol):
    async def __call__(
        self, client: Peer, desk: IamGateway, *, handshake_timeout: float
    ) -> None: ...


_FRONTS: dict[WireProtocol, _Front] = {
    "postgresql": pg.serve_client,
    "mysql": mysql.serve_client,
}


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class IamGateway:
    """A TLS front that checks IAM credentials like RDS or Redshift, then relays to a real server.

    Args:
        protocol: the wire protocol, ``"postgresql"`` or ``"mysql"``.
        upstream: DSN of the real server with an admin login, e.g.
            ``postgresql://postgres@127.0.0.1:5432/postgres``; clients are logged in to it as
            their own user (see :meth:`ensure_user`) with this DSN's password, if any.
        authority: what the AWS stand-in issued (``FakeAws``, or any object with
            ``signing_key(access_key_id)`` and ``redshift_password(user, password)``).
        region: the region RDS tokens must be signed for.
        mode: ``"rds"`` checks RDS IAM tokens; ``"redshift"`` checks Redshift temporary
            passwords and drops the startup parameters only Redshift understands; ``"dsql"``
            checks Aurora DSQL tokens (``DbConnectAdmin`` for the ``admin`` role, ``DbConnect``
            for others, signed for this host); ``"password"`` checks plain passwords against
            its own table (:meth:`set_password`), as a database does (PostgreSQL answers a bad
            one with 28P01, MySQL with 1045), so it stands in front of a trust-auth or
            password-less server for Secrets Manager tests.
        offer_tls: ``False`` makes a server that does not offer TLS, to prove that clients refuse
            to send it a secret (any secret they do send is recorded, see
            :attr:`secrets_seen_in_plaintext`).
        host: the address to listen on, also the host tokens must be signed for.
        port: the port to listen on; 0 picks a free one at each start, a fixed port keeps
            the endpoint across a restart (``stop()`` then ``start()``).
        server_name: the DNS name the gateway stands for, as an RDS endpoint reached through a
            tunnel: its certificate then carries this name only, and tokens must be signed for
            it (with ``server_port``) instead of ``host`` and the listening port.
        server_port: the port tokens are signed for with ``server_name`` (default: the
            listening port).
        handshake_timeout: seconds a client and the upstream get to complete a login.
        clock: returns the current aware UTC time (tests shift it to expire tokens).
        login_rate: the service's login throttle, off by default. RDS mode: more than this many
            *distinct* tokens a second are refused with "too many competing requests" (a login
            with a token already accepted is not counted, as RDS's IAM authentication
            throttle); DSQL mode: more than this many new connections a second are refused
            with SQLSTATE 53400 (Aurora DSQL's connection rate). Refusals count as
            ``rejected["throttled"]``. See :meth:`limit`.
        redshift_wire: password mode only: speak to clients as a Redshift cluster does (drop
            the startup parameters only Redshift understands, report its ``server_version``,
            refuse a bad password with SQLSTATE 28000), for redshift:// password logins.
        session_lifetime: seconds after which a session is cut (the connection closed), as
            Aurora DSQL ends a session at one hour; ``None`` (the default) never cuts.
    """

    def __init__(
        self,
        protocol: WireProtocol,
        *,
        upstream: str,
        authority: CredentialAuthority,
        region: str = "us-east-1",
        mode: Mode = "rds",
        offer_tls: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        server_name: str | None = None,
        server_port: int | None = None,
        handshake_timeout: float = 30.0,
        clock: Callable[[], datetime] = _utc_now,
        login_rate: int | None = None,
        session_lifetime: float | None = None,
        redshift_wire: bool = False,
    ) -> None:
        if protocol not in _FRONTS:
            raise ValueError("protocol must be 'postgresql' or 'mysql'")
        if mode not in ("rds", "redshift", "dsql", "password"):
            raise ValueError("mode must be 'rds', 'redshift', 'dsql' or 'password'")
        if redshift_wire and (mode != "password" or protocol != "postgresql"):
            raise ValueError("redshift_wire is for a postgresql gateway in password mode")
        if mode in ("redshift", "dsql") and protocol != "postgresql":
            raise ValueError(f"{mode} speaks the PostgreSQL protocol: use protocol='postgresql'")
        self._protocol: WireProtocol = protocol
        self._upstream = Upstream.from_dsn(upstream)
        if self._upstream.scheme != protocol:
            raise ValueError(f"the upstream DSN is not a {protocol}:// DSN")
        self._users = UpstreamUsers(self._upstream)
        self._admission = Admission(mode, authority, self._users, region)
        self._region = region
        self._mode: Mode = mode
        self._redshift_wire = redshift_wire or mode == "redshift"
        self._offer_tls = offer_tls
        self._host = host
        self._requested_port = port
        self._server_name = server_name
        self._server_port = server_port
        self._port = 0
        self._handshake_timeout = handshake_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._logins = LoginRecord(protocol)
        self._active = 0
        self._upstream_active = 0
        self._tls: TlsMaterial | None = None
        self._server_context: ssl.SSLContext | None = None
        self._portal_manager: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._serving: Future[None] | None = None
        self._stop_serving: anyio.CancelScope | None = None
        self._throttle: LoginThrottle | None = None
        self.session_lifetime: float | None = None
        self.limit(login_rate=login_rate, session_lifetime=session_lifetime)

    def __repr__(self) -> str:
        state = f"listening on {self.endpoint}" if self._portal is not None else "stopped"
        return (
            f"IamGateway({self._protocol!r}, mode={self._mode!r}, {state}, "
            f"upstream={self._upstream.endpoint!r})"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> IamGateway:
        """Check the upstream answers and start listening; the first start creates the TLS
        material.

        A stopped gateway can start again: it keeps its certificate and CA (a rebooted RDS
        instance keeps its certificate too), its counters and, when constructed with a fixed
        ``port``, its endpoint, so clients configured for it reconnect as they would to a
        restarted database.

        Raises:
            ConnectionError: the upstream server does not answer (the message says where).
            RuntimeError: the gateway is already running.
        """
        if self._portal is not None:
            raise RuntimeError("the gateway is already running")
        try:
            if self._tls is None:
                self._tls = self._create_tls_material()
            self._server_context = self._tls.server_context()
            self._portal_manager = start_blocking_portal(name="iampool-gateway")
            self._portal = self._portal_manager.__enter__()
            self._portal.call(self._probe_upstream)
            listener = self._portal.call(self._listen)
            self._port = listener.extra(SocketAttribute.local_port)  # noqa: S610 (anyio)
            self._serving, self._stop_serving = self._portal.start_task(self._serve, listener)
        except BaseException:
            self.stop()
            raise
        self._users.hold_again()
        return self

    def stop(self) -> None:
        """Close every connection and the listener and stop the loop (``start()`` may follow).

        The TLS files stay for a restart; they are deleted with the gateway object (when it is
        garbage collected, at the latest when the interpreter exits). The upstream users stay
        too; a stopped gateway no longer counts as relying on them (see
        :meth:`drop_created_users`).
        """
        portal, manager = self._portal, self._portal_manager
        self._portal = self._portal_manager = None
        self._users.let_go()
        try:
            if portal is not None and self._stop_serving is not None:
                portal.call(self._stop_serving.cancel)
                if self._serving is not None:
                    self._serving.result()
        finally:
            self._serving = self._stop_serving = None
            if manager is not None:
                manager.__exit__(None, None, None)
            self._server_context = None

    def _create_tls_material(self) -> TlsMaterial:
        directory = Path(tempfile.mkdtemp(prefix="iampool-gateway-"))
        # The files outlive stop() so that a restart presents the same certificate.
        weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
        if self._server_name is not None:  # like an RDS certificate: the endpoint's name only
            return TlsMaterial.create(directory, names=[self._server_name])
        return TlsMaterial.create(directory, names=[self._host, "localhost", "127.0.0.1"])

    def __enter__(self) -> IamGateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> IamGateway:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    async def _probe_upstream(self) -> None:
        try:
            with anyio.fail_after(5):
                stream = await self._upstream.connect()
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"the upstream {self._protocol} server at {self._upstream.endpoint} does not answer"
            ) from exc
        await stream.aclose()

    async def _listen(self) -> MultiListener[SocketStream]:
        return await anyio.create_tcp_listener(
            local_host=self._host, local_port=self._requested_port, backlog=4096
        )

    async def _serve(
        self, listener: MultiListener[SocketStream], *, task_status: TaskStatus[anyio.CancelScope]
    ) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            async with listener:
                await listener.serve(self._handle)

    async def _handle(self, stream: ByteStream) -> None:
        with self._lock:
            self._active += 1
        client = Peer(stream)
        try:
            front = _FRONTS[self._protocol]
            await front(client, self, handshake_timeout=self._handshake_timeout)
        except ProtocolViolation as exc:
            self.refuse("malformed_packet")
            _log.debug("closed a connection that broke the protocol: %s", exc)
        except TimeoutError:
            _log.debug("closed a connection that did not complete its login in time")
        except STREAM_ERRORS as exc:
            _log.debug("a connection ended: %s", type(exc).__name__)
        except Exception:
            _log.exception("unexpected error in a gateway connection")
        finally:
            # Count the connection closed even when aclose() re-raises the cancellation that
            # stop() delivers: otherwise ``active`` stays above 0 after every restart.
            try:
                await client.aclose()
            finally:
                with self._lock:
                    self._active -= 1
                    self._idle.notify_all()

    # -- endpoint ----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address clients connect to (and sign tokens for)."""
        return self._host

    @property
    def port(self) -> int:
        """The listening port (0 until started)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """``host:port``, where the gateway listens (and, without ``server_name``, the endpoint
        RDS tokens must be signed for: see :attr:`signed_endpoint`)."""
        return f"{self._host}:{self._port}"

    @property
    def signed_endpoint(self) -> tuple[str, int]:
        """The host and port RDS and DSQL tokens must be signed for: ``server_name`` and
        ``server_port`` when given, else the listening host and port."""
        if self._server_name is None:
            return self._host, self._port
        return self._server_name, self._server_port or self._port

    @property
    def protocol(self) -> WireProtocol:
        """``"postgresql"`` or ``"mysql"``."""
        return self._protocol

    @property
    def mode(self) -> Mode:
        """``"rds"`` (IAM tokens), ``"redshift"`` (temporary passwords) or ``"dsql"``."""
        return self._mode

    @property
    def redshift_wire(self) -> bool:
        """Whether it speaks to clients as Redshift does (Redshift mode, or ``redshift_wire``)."""
        return self._redshift_wire

    @property
    def region(self) -> str:
        """The region RDS tokens must be signed for."""
        return self._region

    @property
    def upstream(self) -> Upstream:
        """The real server behind the gateway (its repr hides the password)."""
        return self._upstream

    @property
    def ca_path(self) -> Path:
        """PEM file of the CA that signed the gateway's certificate (from the first start on).

        Raises:
            RuntimeError: the gateway was never started.
        """
        return self._material().ca_path

    def client_ssl_context(self) -> ssl.SSLContext:
        """An ``SSLContext`` that trusts only the gateway's CA and checks the host name."""
        return self._material().client_context()

    def dsn(self, user: str, database: str | None = None) -> str:
        """A DSN for ``user`` at the gateway, without password, with verify-full TLS options.

        The scheme is ``postgresql``, ``mysql`` or (Redshift mode) ``redshift``; the database
        defaults to the upstream DSN's. Redshift DSNs carry ``sslmode=verify-full`` only:
        redshift-connector takes its CA from ``SSL_CERT_FILE``, not from a DSN.
        """
        scheme = "redshift" if self._redshift_wire else self._protocol
        name = database if database is not None else self._upstream.database or ""
        query: dict[str, str] = {}
        if self._offer_tls:
            query["sslmode"] = "verify-full"
            if self._mode in ("rds", "dsql", "password") and not self._redshift_wire:
                query["sslrootcert"] = str(self.ca_path)
        suffix = f"?{urlencode(query)}" if query else ""
        return f"{scheme}://{quote(user, safe='')}@{self.endpoint}/{quote(name)}{suffix}"

    def _material(self) -> TlsMaterial:
        if self._tls is None:
            raise RuntimeError("the gateway was never started: call start() first")
        return self._tls

    # -- counters ----------------------------------------------------------------------------

    @property
    def accepted(self) -> int:
        """Logins whose credentials were verified (and then relayed to the upstream)."""
        return self._logins.accepted

    @property
    def rejected(self) -> Counter[str]:
        """Refused logins by reason (a copy), e.g. ``{"bad_signature": 1, "not_tls": 2}``."""
        return self._logins.rejected

    @property
    def active(self) -> int:
        """Client connections open right now."""
        return self._active

    @property
    def upstream_active(self) -> int:
        """Connections to the upstream server open right now."""
        return self._upstream_active

    @property
    def secrets_seen_in_plaintext(self) -> tuple[PlaintextSecret, ...]:
        """Passwords clients sent over connections without TLS, as hashes (in arrival order)."""
        return self._logins.plaintext

    def saw_in_plaintext(self, secret: str) -> bool:
        """Whether this exact secret reached the gateway without TLS."""
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return any(seen.sha256 == digest for seen in self.secrets_seen_in_plaintext)

    def reject_next(self, n: int = 1) -> None:
        """Reject the next ``n`` otherwise valid logins as a bad password would be (``forced``)."""
        self._logins.reject_next(n)

    def limit(self, *, login_rate: int | None, session_lifetime: float | None) -> None:
        """Set (or, with ``None``, lift) the login throttle and the session lifetime, as the
        constructor's ``login_rate`` and ``session_lifetime`` do; a new throttle starts with
        an empty second. Takes effect for logins from now on.

        Raises:
            ValueError: ``login_rate`` is negative, ``session_lifetime`` not above 0, or a
                throttle asked of a Redshift-mode gateway (Redshift has none of these).
        """
        if login_rate is not None and self._mode == "redshift":
            raise ValueError("login_rate emulates RDS and Aurora DSQL: not in redshift mode")
        if session_lifetime is not None and not session_lifetime > 0:
            raise ValueError("session_lifetime must be > 0 seconds")
        self._throttle = (
            None
            if login_rate is None
            else LoginThrottle(login_rate, reuse_free=self._mode == "rds")
        )
        self.session_lifetime = session_lifetime

    def reset_counters(self) -> None:
        """Zero ``accepted``, ``rejected``, the plaintext record and pending forced rejections."""
        self._logins.reset()

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until no client or upstream connection is open.

        From async code: ``await anyio.to_thread.run_sync(gateway.wait_idle)``.

        Raises:
            TimeoutError: connections were still open after ``timeout`` seconds.
        """
        with self._idle:
            if not self._idle.wait_for(
                lambda: self._active == 0 and self._upstream_active == 0, timeout
            ):
                raise TimeoutError(
                    f"{self._active} client and {self._upstream_active} upstream connections "
                    f"still open after {timeout} s"
                )

    # -- upstream users ----------------------------------------------------------------------

    def ensure_user(self, name: str, *, keep: bool = False) -> bool:
        """Create the login user ``name`` on the upstream if missing (e.g. ``IAM:app``).

        PostgreSQL: ``CREATE ROLE "<name>" LOGIN`` plus USAGE and CREATE on schema ``public``.
        MySQL: ``CREATE USER '<name>'@'%'`` plus all privileges on the upstream DSN's database.
        The upstream DSN's password, if any, becomes the user's password.

        ``keep=True`` leaves a user created now in place at the end (:meth:`drop_created_users`
        does not count it as created): for a name every run on the server shares, such as
        Aurora DSQL's built-in ``admin``, which one run must not drop under another.

        Returns:
            ``True`` when the user was created now, ``False`` when it existed (see
            :attr:`created_users`).

        Raises:
            ValueError: a name the upstream cannot take safely.
            ConnectionError: the upstream refused the admin login or a statement failed.
            RuntimeError: the gateway is not running.
        """
        return self._running_portal().call(functools.partial(self._users.ensure, name, keep=keep))

    def set_password(self, user: str, password: str) -> None:
        """Password mode: make ``password`` the one that lets ``user`` in (``ALTER USER``), from
        the next login on; open connections are not touched. Creates the upstream user if
        missing (:meth:`ensure_user`).

        Raises:
            RuntimeError: not a password-mode gateway, or the gateway is not running.
        """
        if self._mode != "password":
            raise RuntimeError("set_password() needs a gateway in password mode")
        self.ensure_user(user)
        self._admission.passwords.set(user, password)

    def forget_password(self, user: str) -> None:
        """Password mode: no password lets ``user`` in any more."""
        self._admission.passwords.forget(user)

    def drop_user(self, name: str) -> None:
        """Drop user ``name`` from the upstream, with what it owns there; no error if absent.

        Raises:
            ConnectionError: the upstream refused the admin login or a statement failed.
            RuntimeError: the gateway is not running.
        """
        self._running_portal().call(self._users.drop, name)

    @property
    def created_users(self) -> tuple[str, ...]:
        """Users created on the upstream in this process (by :meth:`ensure_user` or by a
        Redshift login that creates its user) that this gateway relies on, by name."""
        return self._users.created

    def drop_created_users(self) -> None:
        """Stop relying on the upstream users this gateway used, and drop every user created in
        this process on its upstream that no running gateway relies on. Users that existed
        before (created by hand, or by another process) are left alone.

        Call it when done with the gateway, before ``stop()`` (the pytest fixtures do, at the
        end of the session). A stopped gateway no longer counts as relying on its users.

        Raises:
            ConnectionError: a user could not be dropped (the others still are).
            RuntimeError: the gateway is not running.
        """
        self._running_portal().call(self._users.release)

    def _running_portal(self) -> BlockingPortal:
        if self._portal is None:
            raise RuntimeError("the gateway is not running: call start() first")
        return self._portal

    # -- the front desk, as the protocol fronts see it ---------------------------------------

    @property
    def server_tls(self) -> ssl.SSLContext | None:
        """The server-side TLS context, or ``None`` when TLS is not offered."""
        return self._server_context if self._offer_tls else None

    async def admit(self, user: str, secret: str, database: str | None) -> RejectReason | None:
        """Verify a login's password and count the outcome (used by the protocol fronts)."""
        throttle = self._throttle
        if throttle is not None and not throttle.allows(secret):
            self._logins.refuse("throttled")
            return "throttled"
        host, port = self.signed_endpoint
        reason = await self._admission.judge(
            user, secret, database, host=host, port=port, now=self._clock()
        )
        return self._logins.decide(reason)

    def refuse(self, reason: RejectReason) -> None:
        """Count a connection refused before its password was checked."""
        self._logins.refuse(reason)

    def capture_plaintext(self, user: str, secret: str) -> None:
        """Record a password that arrived without TLS (hash and length only)."""
        self._logins.capture(user, secret)

    @asynccontextmanager
    async def connect_upstream(self) -> AsyncIterator[Peer]:
        """A counted TCP connection to the upstream server."""
        stream = await self._upstream.connect()
        with self._lock:
            self._upstream_active += 1
        peer = Peer(stream)
        try:
            yield peer
        finally:
            try:
                await peer.aclose()  # re-raises a cancellation (stop()) once it has closed
            finally:
                with self._lock:
                    self._upstream_active -= 1
                    self._idle.notify_all()
