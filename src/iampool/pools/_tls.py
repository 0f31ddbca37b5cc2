"""The TLS decision of a connect plan: made once, from the DSN and the driver's ``ssl=`` argument.

Every IAM connection is encrypted (RDS, DSQL and Redshift insist; a token must never travel in
clear). What varies is how much is verified, and how the driver is told:

- asyncpg, aiomysql and asyncmy take an ``ssl.SSLContext``: :func:`tls_context` builds it, once
  per plan; contexts that load a CA file are cached by the file's identity (path, inode, size,
  modification time), so a ``connect()`` per request does not reload a 145-certificate bundle,
  and an edited or replaced file is read again.
- psycopg (libpq) takes settings: :func:`libpq_tls` says the same thing in libpq's words.
- redshift-connector builds its own context from a mode (``verify-ca`` / ``verify-full``).

``sslmode=require`` (the default, as in Superset) encrypts without checking the server: the
dialer warns once per endpoint (:func:`warn_unverified`) that a token is sent that way.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from .._errors import ConfigError, ConfigProblem, shown
from ._dsn import Target

__all__ = [
    "ServerNamedContext",
    "Tls",
    "ca_file_problem",
    "check_ca_file",
    "check_tls_option",
    "decide_tls",
    "libpq_server_name",
    "libpq_tls",
    "tls_context",
    "warn_unverified",
]

log = logging.getLogger("iampool.tls")

TlsStyle = Literal["context", "libpq", "redshift"]

# redshift-connector knows verify-ca and verify-full only; an unknown mode would skip TLS
# verification entirely, so "require" becomes verify-ca (what Superset uses for Redshift).
REDSHIFT_SSLMODES = {"require": "verify-ca", "verify-ca": "verify-ca", "verify-full": "verify-full"}


@dataclass(frozen=True, slots=True)
class Tls:
    """How a plan's connections are protected.

    ``mode`` is what the client enforces (``require`` with a CA file becomes ``verify-full``);
    ``context`` is the ``SSLContext`` for drivers that take one, ``libpq`` the settings for
    psycopg; redshift-connector gets ``mode``.
    """

    mode: str
    store: str  # the CA file, or where trust comes from
    context: ssl.SSLContext | None = None
    libpq: dict[str, str] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        """Whether the server's certificate and host name are both checked."""
        return self.mode == "verify-full"

    def describe(self) -> str:
        """One line for ``iampool check`` and the unverified-TLS warning."""
        if self.mode == "require":
            return "sslmode=require: encrypted, server certificate not verified"
        if self.mode == "verify-ca":
            return f"sslmode=verify-ca: encrypted, certificate verified against {self.store}"
        return (
            f"sslmode=verify-full: encrypted, certificate and host name verified against "
            f"{self.store}"
        )


def decide_tls(target: Target, style: TlsStyle, ssl_option: Any = None) -> Tls:
    """The TLS of every connection of a plan, built once.

    Raises:
        ConfigError: an unusable CA file, an ``ssl=`` that turns TLS off, or a mode the driver
            cannot verify (``verify-ca`` without a CA file for libpq).
    """
    store = target.sslrootcert or "the system store"
    if style != "context":
        if target.sslrootcert is not None and target.sslrootcert != "system":
            check_ca_file(target.sslrootcert)  # libpq's "system" is its name for the system store
        if style == "redshift":
            return Tls(REDSHIFT_SSLMODES[target.sslmode], f"{store} and redshift-connector's CAs")
        settings = libpq_tls(target)
        return Tls(settings["sslmode"], store, None, settings)
    try:
        context = tls_context(target, ssl_option)  # loads the CA file, if any: once, cached
    except ConfigError:
        raise
    except (OSError, ssl.SSLError, ValueError) as exc:
        assert target.sslrootcert is not None  # nothing else is read
        problem = ConfigProblem("sslrootcert", _ca_problem(target.sslrootcert, exc))
        raise ConfigError(problem, context="DSN") from None
    if isinstance(ssl_option, ssl.SSLContext):
        return Tls(_mode_of(context), "the SSLContext given as ssl=", context)
    return Tls(_effective_mode(target, ssl_option), store, context)


def _mode_of(context: ssl.SSLContext) -> str:
    if context.verify_mode == ssl.CERT_NONE:
        return "require"
    return "verify-full" if context.check_hostname else "verify-ca"


def _effective_mode(target: Target, ssl_option: Any) -> str:
    mode = ssl_option if isinstance(ssl_option, str) else target.sslmode
    if target.sslrootcert is not None and mode == "require":
        return "verify-full"  # a CA was given: use it (libpq does the same)
    return str(mode)


def check_ca_file(path: str) -> None:
    """A DSN's ``sslrootcert`` must be a readable file of PEM certificates: found now, as a
    ``ConfigError``, rather than as an ``OSError`` once the AWS calls are made.

    Raises:
        ConfigError: the file is missing, unreadable, or holds no PEM certificate.
    """
    problem = ca_file_problem(path)
    if problem is not None:
        raise ConfigError(ConfigProblem("sslrootcert", problem), context="DSN")


def ca_file_problem(path: str) -> str | None:
    """Why ``path`` is not a readable file of PEM certificates, or ``None`` (it loads the file
    through the context cache)."""
    try:
        _cached("verify-ca", path, None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return _ca_problem(path, exc)
    return None


def _ca_problem(path: str, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no file {shown(path, 200)} (a CA bundle in PEM, e.g. the RDS global-bundle.pem)"
    if isinstance(exc, ssl.SSLError):
        return f"{shown(path, 200)} holds no PEM certificate"
    # a directory, no permission, a NUL in the path
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a file name"
    return f"cannot read {shown(path, 200)}: {reason}"


def check_tls_option(target: Target, ssl_option: Any) -> None:
    """Refuse a driver's ``ssl=`` argument that turns TLS off, or a context with ``iam_host``.

    Raises:
        ConfigError: ``ssl`` turns TLS off, or is an ``SSLContext`` with ``iam_host``.
    """
    if isinstance(ssl_option, ssl.SSLContext):
        if target.iam_host is not None:
            raise ConfigError(
                ConfigProblem("ssl", "an SSLContext cannot be combined with iam_host: the driver "
                                     "would verify the certificate against the address it dials; "
                                     "give the CA as sslrootcert in the DSN instead"),
                context="driver keyword",
            )  # fmt: skip
        return
    if ssl_option not in (None, True, "require", "verify-ca", "verify-full"):
        raise ConfigError(
            ConfigProblem("ssl", f"{shown(ssl_option)} is not allowed: IAM connections always use "
                                 "TLS; pass an ssl.SSLContext or leave it unset"),
            context="driver keyword",
        )  # fmt: skip


def tls_context(target: Target, ssl_option: Any = None) -> ssl.SSLContext:
    """The ``SSLContext`` for an IAM connection: always encrypted, verified when a CA is known.

    ``ssl_option`` is the driver's own ``ssl=`` argument: an ``SSLContext`` is used as is;
    ``False``/``"disable"`` are refused because IAM credentials must not travel in plain text.
    Contexts are shared: never change one that this function returned.
    """
    check_tls_option(target, ssl_option)
    if isinstance(ssl_option, ssl.SSLContext):
        return ssl_option
    mode = _effective_mode(target, ssl_option)
    cafile = target.sslrootcert if mode != "require" else None
    return _cached(mode, cafile, target.iam_host)


# Contexts by (mode, CA file identity, server name). Loading a CA bundle is the costly part of a
# context (the 145-certificate RDS bundle: ~10 ms); a context is immutable once built.
_MAX_CONTEXTS = 64
_contexts: OrderedDict[tuple[Any, ...], ssl.SSLContext] = OrderedDict()
_contexts_lock = threading.Lock()


def _identity(path: str | None) -> tuple[Any, ...] | None:
    if path is None:
        return None
    stat = os.stat(path)
    return (path, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _cached(mode: str, cafile: str | None, server_name: str | None) -> ssl.SSLContext:
    key = (mode, _identity(cafile), server_name)
    with _contexts_lock:
        context = _contexts.get(key)
        if context is not None:
            _contexts.move_to_end(key)
            return context
    context = _build(mode, cafile, server_name)  # outside the lock: it may read a file
    with _contexts_lock:
        _contexts[key] = context
        while len(_contexts) > _MAX_CONTEXTS:
            _contexts.popitem(last=False)
    return context


def _build(mode: str, cafile: str | None, server_name: str | None) -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT starts as create_default_context's (CERT_REQUIRED, check_hostname,
    # its secure options) without reading SSLKEYLOGFILE from the environment, which would write
    # the session keys (and so the token) to a file.
    context: ssl.SSLContext
    if server_name is not None:
        named = ServerNamedContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = server_name
        context = named
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if mode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
    else:
        context.load_default_certs()
    context.check_hostname = mode == "verify-full"
    return context


class ServerNamedContext(ssl.SSLContext):
    """An ``SSLContext`` that names one server whatever address is dialled: the endpoint behind
    a tunnel (``iam_host``).

    Drivers pass the host they dial as ``server_hostname`` (asyncio's ``start_tls`` and
    ``open_connection`` hand it to :meth:`wrap_bio`; blocking drivers to :meth:`wrap_socket`);
    this context replaces it, so SNI and the ``verify-full`` name check are for the endpoint.
    """

    server_name: str

    def wrap_socket(  # same parameters; server_hostname is replaced
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """``SSLContext.wrap_socket`` for :attr:`server_name`."""
        return super().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, self.server_name,
            session,
        )  # fmt: skip

    def wrap_bio(  # same parameters; server_hostname is replaced
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """``SSLContext.wrap_bio`` for :attr:`server_name`."""
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def libpq_tls(target: Target) -> dict[str, str]:
    """:func:`tls_context`'s decision as libpq settings (psycopg cannot take an ``SSLContext``).

    A CA file upgrades ``require`` to ``verify-full``, as in :func:`tls_context`; verification
    without one uses the system trust store (``sslrootcert=system``, libpq 16+), which libpq
    allows with ``verify-full`` only.

    Raises:
        ConfigError: ``verify-ca`` without ``sslrootcert``.
    """
    mode = target.sslmode
    if target.sslrootcert is not None:
        return {
            "sslmode": "verify-full" if mode == "require" else mode,
            "sslrootcert": target.sslrootcert,
        }
    if mode == "require":
        return {"sslmode": "require"}
    if mode == "verify-ca":
        raise ConfigError(
            ConfigProblem("sslmode", "verify-ca needs an sslrootcert with psycopg (libpq checks "
                                     "the system trust store with verify-full only)"),
            context="DSN",
        )  # fmt: skip
    return {"sslmode": "verify-full", "sslrootcert": "system"}


async def libpq_server_name(target: Target) -> dict[str, str]:
    """libpq's settings to dial ``target.host`` while verifying TLS for ``iam_host``: ``host``
    is the name libpq checks the certificate against (and sends as SNI), ``hostaddr`` the
    addresses it dials, which libpq takes numeric only: a name is resolved here, at each
    connect, every address tried in turn as libpq would. Empty without ``iam_host``.
    """
    if target.iam_host is None or target.host is None:
        return {}
    try:
        addresses = [str(ipaddress.ip_address(target.host))]
    except ValueError:
        found = await anyio.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))
    return {
        "host": ",".join([target.iam_host] * len(addresses)),
        "hostaddr": ",".join(addresses),
    }


# Endpoints already warned about (bounded: a process serving many tenants warns for each once
# until the set fills, then starts over).
_MAX_WARNED = 4096
_warned: set[tuple[str, str]] = set()


def warn_unverified(tls: Tls, endpoint: str) -> None:
    """Log once per endpoint that a credential is about to be sent over TLS that does not
    verify the server (``sslmode=require`` or ``verify-ca``). Silence it with
    ``logging.getLogger("iampool.tls").setLevel(logging.ERROR)``."""
    if tls.verified:
        return
    key = (endpoint, tls.mode)
    if key in _warned:
        return
    if len(_warned) >= _MAX_WARNED:
        _warned.clear()
    _warned.add(key)
    what = "the server's certificate" if tls.mode == "require" else "the server's host name"
    log.warning(
        "sending IAM credentials to %s over TLS that does not check %s (%s): anyone on the "
        "path could capture a token; add sslmode=verify-full&sslrootcert=<CA bundle> to the DSN "
        "(the RDS global bundle for RDS and Aurora)",
        endpoint,
        what,
        tls.mode,
    )
