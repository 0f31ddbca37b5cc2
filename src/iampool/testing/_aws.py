"""``FakeAws``: a local AWS for tests, built on moto's server.

A werkzeug threaded HTTP server on 127.0.0.1 runs a small WSGI *front* in front of moto's own
server application. The front

- names every request's API (``Action`` for query-protocol services such as STS and Redshift,
  ``X-Amz-Target`` for JSON ones), counts it in ``calls`` and records its parameters in
  ``requests`` (REST-protocol APIs such as S3 pass through uncounted);
- injects faults on demand (``faults``: throttling, 5xx, AccessDenied, latency; ``outage()``
  refuses connections);
- adds what moto lacks: ExternalId checks on AssumeRole, AssumeRole's DurationSeconds range,
  Redshift Serverless ``GetWorkgroup``/``GetCredentials`` (``_serverless.py``), cluster endpoints
  that point at a local address;
- remembers every secret it handed out (``signing_key``, ``redshift_password``), which is what
  an IAM gateway needs to check a login.

moto keeps its state (roles, clusters, assumed-role sessions) in process-wide backends: run one
``FakeAws`` per process at a time. Two running instances share moto's state, and ``reset()`` on
one clears it for both; a ``FakeAws`` that starts while no other runs starts from a clean moto.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import re
import secrets
import socket
import string
import threading
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, urlencode
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import anyio.to_thread
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.test import EnvironBuilder

from ._serverless import TARGET_PREFIX, RedshiftServerless, ServerlessError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "BASE_USER",
    "DEFAULT_ACCOUNT_ID",
    "FakeAws",
    "Faults",
    "IssuedKey",
    "IssuedRedshiftPassword",
]

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's default account
BASE_USER = "test"  # the IAM user the base credentials belong to
_log = logging.getLogger("iampool.testing.aws")

_POLL_INTERVAL = 0.05  # how quickly the serving thread notices stop() and outages
_DRAIN_TIMEOUT = 5.0  # how long stop() waits for open connections to finish
_STS_DURATION = (900, 43200)
_ISSUING_ACTIONS = frozenset(
    {
        "AssumeRole",
        "AssumeRoleWithSAML",
        "AssumeRoleWithWebIdentity",
        "CreateAccessKey",
        "GetFederationToken",
        "GetSessionToken",
    }
)
_DURATION_ACTIONS = frozenset(
    {"AssumeRole", "AssumeRoleWithWebIdentity", "GetFederationToken", "GetSessionToken"}
)
_XML_NAMESPACES = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "rds": "http://rds.amazonaws.com/doc/2014-10-31/",
    "redshift": "http://redshift.amazonaws.com/doc/2012-12-01/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}
_API_VERSIONS = {"iam": "2010-05-08", "redshift": "2012-12-01", "sts": "2011-06-15"}
_CREDENTIAL = re.compile(r"Credential=([^/\s,]+)/\d{8}/([^/\s,]+)/([^/\s,]+)/aws4_request")
_KEY_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


# -- what the fake issued ----------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    """An access key the fake AWS issued: its base test key or a key STS/IAM handed out."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(repr=False)
    expires_at: datetime | None  # aware UTC; None for long-term keys


@dataclass(frozen=True)
class IssuedRedshiftPassword:
    """A temporary Redshift password from ``GetClusterCredentials`` or ``GetCredentials``."""

    user: str  # exactly as returned in DbUser / dbUser, e.g. "IAM:app"
    password: str = field(repr=False)
    expires_at: datetime  # aware UTC
    database: str | None  # None: valid for any database (no DbName was asked for)
    cluster_identifier: str | None
    workgroup_name: str | None


# -- faults --------------------------------------------------------------------------------------

_FaultKind = Literal["throttle", "server_error", "access_denied"]


@dataclass
class _Fault:
    kind: _FaultKind
    remaining: int
    status: int


class Faults:
    """Failures the fake AWS injects, per API name (``"AssumeRole"``, ``"GetCredentials"``, ...).

    ``api="*"`` matches every API. Queued failures are served in the order they were added,
    those for the exact API first. Thread-safe.
    """

    ANY: ClassVar[str] = "*"

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queued: dict[str, deque[_Fault]] = {}
        self._latency: dict[str, float] = {}
        self._generation = 0

    def throttle(self, api: str, times: int = 1) -> None:
        """The next ``times`` calls of ``api`` fail with ``Throttling``.

        JSON-protocol APIs (Redshift Serverless) answer ``ThrottlingException``, as AWS does.
        """
        self._queue(api, _Fault("throttle", _positive(times), 400))

    def server_error(self, api: str, times: int = 1, status: int = 503) -> None:
        """The next ``times`` calls of ``api`` fail with HTTP ``status``: ``ServiceUnavailable``
        for 503, ``InternalFailure`` for any other 5xx."""
        if not 500 <= status <= 599:
            raise ValueError(f"status must be a 5xx code, not {status}")
        self._queue(api, _Fault("server_error", _positive(times), status))

    def access_denied(self, api: str, times: int = 1) -> None:
        """The next ``times`` calls of ``api`` fail with ``AccessDenied``.

        JSON-protocol APIs answer ``AccessDeniedException``.
        """
        self._queue(api, _Fault("access_denied", _positive(times), 403))

    def latency(self, api: str, seconds: float | None) -> None:
        """Every call of ``api`` waits ``seconds`` before it is answered; ``None`` removes it."""
        with self._changed:
            if not seconds:
                self._latency.pop(api, None)
            elif seconds < 0:
                raise ValueError(f"seconds must not be negative, not {seconds}")
            else:
                self._latency[api] = float(seconds)

    def pending(self, api: str) -> int:
        """How many injected failures are still queued for ``api`` (not counting ``"*"``)."""
        with self._changed:
            return sum(fault.remaining for fault in self._queued.get(api, ()))

    def clear(self) -> None:
        """Drop every queued failure and latency; calls waiting on latency are answered now."""
        with self._changed:
            self._queued.clear()
            self._latency.clear()
        self.wake()

    def wake(self) -> None:
        """Release every call waiting on latency (used on stop and outages)."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def delay(self, api: str) -> None:
        """Wait the latency set for ``api`` (or ``"*"``), unless woken first."""
        with self._changed:
            seconds = self._latency.get(api, self._latency.get(self.ANY))
            if seconds is None:
                return
            generation = self._generation
            self._changed.wait_for(lambda: self._generation != generation, timeout=seconds)

    def take(self, api: str) -> _Fault | None:
        """Consume one queued failure for ``api`` (or ``"*"``), if any."""
        with self._changed:
            for key in (api, self.ANY):
                queue = self._queued.get(key)
                if queue:
                    fault = queue[0]
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        queue.popleft()
                    return _Fault(fault.kind, 1, fault.status)
            return None

    def _queue(self, api: str, fault: _Fault) -> None:
        if not api:
            raise ValueError("api must name an AWS API, e.g. 'AssumeRole', or be '*'")
        with self._changed:
            self._queued.setdefault(api, deque()).append(fault)


def _positive(times: int) -> int:
    if times < 1:
        raise ValueError(f"times must be at least 1, not {times}")
    return times


# -- one request, one response -----------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """What the front needs to know about a request."""

    api: str | None
    service: str | None  # SigV4 signing name, e.g. "sts"
    region: str | None
    access_key_id: str | None
    target: str | None  # X-Amz-Target of JSON-protocol requests
    params: dict[str, Any]

    @property
    def json_protocol(self) -> bool:
        return self.target is not None


@dataclass(frozen=True)
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        headers = [
            (name, value)
            for name, value in self.headers
            if name.lower() not in {"content-length", "transfer-encoding"}
        ]
        headers.append(("Content-Length", str(len(self.body))))
        start_response(f"{self.status} {_phrase(self.status)}", headers)
        return [self.body]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _read_body(environ: WSGIEnvironment) -> bytes:
    """The request body, leaving a fresh stream in the environ for moto to read again."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit():
        body: bytes = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    _replace_body(environ, body)
    return body


def _replace_body(environ: WSGIEnvironment, body: bytes) -> None:
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def _parse_call(environ: WSGIEnvironment, body: bytes) -> _Call:
    headers_auth = environ.get("HTTP_AUTHORIZATION") or ""
    query = dict(parse_qsl(environ.get("QUERY_STRING") or "", keep_blank_values=True))
    match = _CREDENTIAL.search(headers_auth) or _CREDENTIAL.search(
        "Credential=" + query.get("X-Amz-Credential", "")
    )
    access_key_id, region, service = match.groups() if match else (None, None, None)
    target = environ.get("HTTP_X_AMZ_TARGET")
    content_type = environ.get("CONTENT_TYPE") or ""
    params: dict[str, Any]
    if target and content_type.startswith("application/x-amz-json"):
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            document = {}
        params = document if isinstance(document, dict) else {}
        api: str | None = target.rsplit(".", 1)[-1]
    else:
        target = None
        params = dict(query)
        if content_type.startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        api = params.get("Action")
    return _Call(api, service, region, access_key_id, target, params)


def _error(call: _Call, code: str, message: str, status: int) -> _Response:
    """An AWS error document in the request's protocol, as botocore expects to parse it."""
    request_id = str(uuid.uuid4())
    if call.json_protocol:
        body = json.dumps({"__type": code, "message": message}).encode()
        content_type = "application/x-amz-json-1.1"
    else:
        xmlns = _XML_NAMESPACES.get(call.service or "")
        opening = f'<ErrorResponse xmlns="{xmlns}">' if xmlns else "<ErrorResponse>"
        kind = "Receiver" if status >= 500 else "Sender"
        body = (
            f"{opening}<Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        content_type = "text/xml"
    return _Response(
        status, [("Content-Type", content_type), ("x-amzn-RequestId", request_id)], body
    )


def _json_response(document: Mapping[str, Any]) -> _Response:
    headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return _Response(200, headers, json.dumps(document).encode())


def _run_wsgi(app: Callable[..., Iterable[bytes]], environ: WSGIEnvironment) -> _Response:
    """Run a WSGI app to completion and buffer its response."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        started.append((status, list(headers)))
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started[-1]
    return _Response(int(status.split(" ", 1)[0]), headers, b"".join(chunks))


def _xml_fields(body: bytes) -> dict[str, str]:
    """The first text of every element of a query-protocol response, by local tag name."""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - moto's own response, not user input
    except ElementTree.ParseError:
        return {}
    fields: dict[str, str] = {}
    for element in root.iter():
        name = element.tag.rsplit("}", 1)[-1]
        if name not in fields and element.text and element.text.strip():
            fields[name] = element.text.strip()
    return fields


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


# -- the HTTP server -----------------------------------------------------------------------------


class _Server(ThreadedWSGIServer):
    """werkzeug's threaded server that can cut its open connections, like a host going away."""

    def __init__(self, sock: socket.socket, app: Any, handler: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_changed = threading.Condition()
        host, port = sock.getsockname()[:2]
        super().__init__(host, port, app, handler=handler, fd=sock.fileno())

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_changed:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._open_changed:
                self._open.discard(request)
                self._open_changed.notify_all()

    def cut_connections(self) -> None:
        """Shut every open connection down: clients see the connection drop, unanswered."""
        with self._open_changed:
            for connection in self._open:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def wait_closed(self, timeout: float) -> None:
        """Wait until the request threads are done with their connections."""
        with self._open_changed:
            self._open_changed.wait_for(lambda: not self._open, timeout=timeout)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # create_server sets SO_REUSEADDR, so an outage can end on the very same port
    return socket.create_server((host, port), family=family, backlog=128)


# -- FakeAws -------------------------------------------------------------------------------------


class FakeAws:
    """A local AWS (STS, IAM, RDS, Redshift via moto; Redshift Serverless) with fault injection.

    Use it as a context manager (``with`` or ``async with``) or call ``start()``/``stop()``.
    Point SDKs at it with ``export_env()`` or ``endpoint_url`` plus ``base_key``.
    """

    _running: ClassVar[int] = 0
    _running_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, region: str = "us-east-1", host: str = "127.0.0.1", port: int = 0) -> None:
        self.region = region
        self.host = host
        self._port = port
        #: API name -> number of requests received (faulted ones included)
        self.calls: Counter[str] = Counter()
        #: API name -> the parameters of every request, in order (query values as strings)
        self.requests: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        #: failures to inject
        self.faults = Faults()
        self._base_key = IssuedKey(
            access_key_id="AKIA" + _random(_KEY_ALPHABET, 16),
            secret_access_key=_random(_SECRET_ALPHABET, 40),
            session_token=None,
            expires_at=None,
        )
        self._base_user_id = "AIDA" + _random(_KEY_ALPHABET, 17)
        self._lock = threading.Condition()  # guards the state below and signals new calls
        self._keys: dict[str, IssuedKey] = {}
        self._identities: dict[str, str] = {}  # access key id -> ARN of its identity
        self._passwords: dict[str, IssuedRedshiftPassword] = {}
        self._external_ids: dict[str, str] = {}
        self._credentials_lifetime: int | None = None
        self._cluster_addresses: dict[str, str] = {}  # moto's endpoint address -> ours
        self._serverless = RedshiftServerless(DEFAULT_ACCOUNT_ID)
        self._lifecycle = threading.Lock()
        self._moto_app: Any = None
        self._moto_handler: Any = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._in_outage = False

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._started else "stopped"
        return f"<FakeAws {where} region={self.region}>"

    # -- lifecycle

    def start(self) -> None:
        """Listen on ``host:port`` (a free port when 0) and serve in a background thread."""
        with self._lifecycle:
            if self._started:
                raise RuntimeError("FakeAws is already started")
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )

            werkzeug_log = logging.getLogger("werkzeug")
            if werkzeug_log.level == logging.NOTSET:  # its request log would flood test output
                werkzeug_log.setLevel(logging.ERROR)
            self._moto_app = DomainDispatcherApplication(create_backend_app)
            self._moto_handler = MotoRequestHandler
            with FakeAws._running_lock:
                if FakeAws._running == 0:
                    self._reset_moto()
                FakeAws._running += 1
            try:
                self._serve()
            except BaseException:
                with FakeAws._running_lock:
                    FakeAws._running -= 1
                raise
            self._started = True

    def stop(self) -> None:
        """Stop serving, cut open connections and release the port. Idempotent."""
        with self._lifecycle:
            if not self._started:
                return
            self._started = False
            self._in_outage = False
            self._unserve()
            with FakeAws._running_lock:
                FakeAws._running -= 1

    def __enter__(self) -> FakeAws:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeAws:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def _serve(self) -> None:
        sock = _listen(self.host, self._port)
        try:
            server = _Server(sock, self._front, self._moto_handler)
        finally:
            sock.close()  # the server listens on its own duplicate of the descriptor
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"iampool-fake-aws-{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def _unserve(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()
        self.faults.wake()  # calls held by latency: they find their connection gone
        server.wait_closed(_DRAIN_TIMEOUT)
        thread.join()

    # -- where it is

    @property
    def port(self) -> int:
        """The port it listens on (stays the same across outages)."""
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://host:port``, for ``endpoint_url=`` or ``AWS_ENDPOINT_URL``."""
        if not self._started:
            raise RuntimeError("FakeAws is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def account_id(self) -> str:
        """The account of the base credentials (moto's default)."""
        return DEFAULT_ACCOUNT_ID

    @property
    def base_key(self) -> IssuedKey:
        """The long-term test key of IAM user ``test``, random per instance."""
        return self._base_key

    def env(self) -> dict[str, str]:
        """Environment variables that point every AWS SDK at this fake and away from real AWS.

        ``export_env()`` applies them and also removes every other ``AWS_*`` variable (a profile,
        session token or per-service endpoint would escape the fake); do the same when passing
        them to a subprocess.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self._base_key.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self._base_key.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    @contextmanager
    def export_env(self) -> Iterator[dict[str, str]]:
        """Replace every ``AWS_*`` variable of ``os.environ`` with ``env()``; restore on exit."""
        exported = self.env()
        saved = {name: value for name, value in os.environ.items() if name.startswith("AWS_")}
        for name in saved:
            del os.environ[name]
        os.environ.update(exported)
        try:
            yield exported
        finally:
            for name in [name for name in os.environ if name.startswith("AWS_")]:
                del os.environ[name]
            os.environ.update(saved)

    # -- outages

    def start_outage(self) -> None:
        """Stop listening and cut open connections: new connections are refused."""
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("FakeAws is not started")
            if self._in_outage:
                return
            self._in_outage = True
            self._unserve()

    def end_outage(self) -> None:
        """Listen again, on the same port."""
        with self._lifecycle:
            if not self._started or not self._in_outage:
                return
            self._serve()
            self._in_outage = False

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Connections are refused inside the block (``start_outage``/``end_outage``)."""
        self.start_outage()
        try:
            yield
        finally:
            self.end_outage()

    # -- state

    def reset(self) -> None:
        """Back to a just-started fake: moto state, counters, faults and issued secrets cleared.

        Also ends an outage; the endpoint and the base key stay the same. moto's state is
        process-wide, so this clears it for every ``FakeAws`` running in the process.
        """
        self.end_outage()
        self.faults.clear()
        with self._lock:
            self.calls.clear()
            self.requests.clear()
            self._keys.clear()
            self._identities.clear()
            self._passwords.clear()
            self._external_ids.clear()
            self._credentials_lifetime = None
            self._cluster_addresses.clear()
        self._serverless.clear()
        if self._moto_app is not None:
            self._reset_moto()

    def create_role(
        self, name: str, *, external_id: str | None = None, account: str = DEFAULT_ACCOUNT_ID
    ) -> str:
        """Create IAM role ``name`` (or reuse an existing one) and return its ARN.

        With ``external_id``, AssumeRole on it succeeds only with that ExternalId.
        """
        statement: dict[str, Any] = {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "sts:AssumeRole",
        }
        if external_id is not None:
            statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
        policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        status, fields = self._moto_query(
            "iam",
            "CreateRole",
            {"RoleName": name, "AssumeRolePolicyDocument": policy},
            account=account,
        )
        if status == 409 or fields.get("Code") == "EntityAlreadyExists":
            status, fields = self._moto_query("iam", "GetRole", {"RoleName": name}, account=account)
        if status != 200 or "Arn" not in fields:
            raise RuntimeError(f"FakeAws: could not create role {name!r}: {_describe(fields)}")
        arn = fields["Arn"]
        self.require_external_id(arn, external_id)
        return arn

    def require_external_id(self, role_arn: str, external_id: str | None) -> None:
        """AssumeRole on ``role_arn`` without exactly this ExternalId is denied, like a trust
        policy condition on ``sts:ExternalId``; ``None`` lifts the requirement."""
        with self._lock:
            if external_id is None:
                self._external_ids.pop(role_arn, None)
            else:
                self._external_ids[role_arn] = external_id

    def expire_credentials_early(self, seconds: int | None) -> None:
        """Credentials STS issues from now on expire ``seconds`` after issue (``None``: as asked).

        The response's ``Expiration`` and ``signing_key()`` agree.
        """
        with self._lock:
            self._credentials_lifetime = None if seconds is None else int(seconds)

    def create_redshift_cluster(
        self,
        identifier: str,
        *,
        db_name: str = "dev",
        master_username: str = "admin",
        port: int = 5439,
        address: str | None = None,
    ) -> tuple[str, int]:
        """Create a Redshift provisioned cluster in moto; return the endpoint it reports.

        ``address`` replaces moto's invented host name in every Redshift response (e.g. to point
        DescribeClusters at a local gateway).
        """
        status, fields = self._moto_query(
            "redshift",
            "CreateCluster",
            {
                "ClusterIdentifier": identifier,
                "NodeType": "ra3.xlplus",
                "ClusterType": "single-node",
                "MasterUsername": master_username,
                "MasterUserPassword": "Fake-aws-0-" + secrets.token_hex(8),
                "DBName": db_name,
                "Port": str(port),
            },
        )
        if status != 200 or "Address" not in fields:
            raise RuntimeError(
                f"FakeAws: could not create cluster {identifier!r}: {_describe(fields)}"
            )
        if address is None:
            return fields["Address"], port
        with self._lock:
            self._cluster_addresses[fields["Address"]] = address
        return address, port

    def create_workgroup(
        self,
        name: str,
        *,
        namespace: str = "default",
        db_name: str = "dev",
        address: str = "127.0.0.1",
        port: int = 5439,
        region: str | None = None,
    ) -> tuple[str, int]:
        """Create (or replace) a Redshift Serverless workgroup; return its endpoint.

        ``GetCredentials`` without ``dbName`` issues a password for ``db_name``.
        """
        workgroup = self._serverless.create_workgroup(
            name,
            region=region or self.region,
            namespace=namespace,
            db_name=db_name,
            address=address,
            port=port,
        )
        return workgroup.address, workgroup.port

    def wait_for_calls(self, api: str, count: int = 1, *, timeout: float = 5.0) -> None:
        """Block until ``calls[api]`` reaches ``count`` (calls held by latency count at once).

        Raises ``TimeoutError`` after ``timeout`` seconds. From async code, run it in a worker
        thread (``anyio.to_thread.run_sync``).
        """
        with self._lock:
            if not self._lock.wait_for(lambda: self.calls[api] >= count, timeout=timeout):
                raise TimeoutError(
                    f"FakeAws received {self.calls[api]} {api} calls in {timeout} s, not {count}"
                )

    # -- lookups (what an IAM gateway checks logins against)

    def signing_key(self, access_key_id: str) -> IssuedKey | None:
        """The key issued under ``access_key_id`` (base key, STS session or IAM user key)."""
        if access_key_id == self._base_key.access_key_id:
            return self._base_key
        with self._lock:
            return self._keys.get(access_key_id)

    def redshift_password(self, user: str, password: str) -> IssuedRedshiftPassword | None:
        """The temporary Redshift password equal to ``password``, if the fake issued it.

        Matched by password: the result may belong to another user than ``user``, so a caller
        can tell a wrong user (compare ``.user``) from a password that was never issued.
        """
        with self._lock:
            issued = self._passwords.get(password)
        if issued is None or not hmac.compare_digest(issued.password, password):
            return None
        return issued

    def issued_secrets(self) -> list[str]:
        """Every secret handed out so far: secret keys (the base key's too), session tokens and
        Redshift temporary passwords; for asserting that none of them leaks into logs or errors."""
        with self._lock:
            keys = [self._base_key, *self._keys.values()]
            passwords = list(self._passwords)
        issued = [key.secret_access_key for key in keys]
        issued += [key.session_token for key in keys if key.session_token]
        return issued + passwords

    # -- the front (runs on the server's request threads)

    def _front(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
            result: Iterable[bytes] = self._moto_app(environ, start_response)
            return result
        body = _read_body(environ)
        call = _parse_call(environ, body)
        return self._answer(call, environ, body).send(start_response)

    def _answer(self, call: _Call, environ: WSGIEnvironment, body: bytes) -> _Response:
        if call.api is None:
            return _run_wsgi(self._moto_app, environ)
        with self._lock:
            self.calls[call.api] += 1
            self.requests[call.api].append(dict(call.params))
            self._lock.notify_all()
        self.faults.delay(call.api)
        fault = self.faults.take(call.api)
        if fault is not None:
            return self._fault(call, fault)
        if call.target is not None and call.target.startswith(TARGET_PREFIX):
            return self._serverless_answer(call)
        if call.api == "GetCallerIdentity" and call.access_key_id == self._base_key.access_key_id:
            return self._base_identity(call)  # moto would call the base key's owner "user/moto"
        if call.api == "AssumeRole":
            refusal = self._check_assume_role(call)
            if refusal is not None:
                return refusal
        if call.api in _DURATION_ACTIONS and not call.json_protocol:
            with self._lock:
                lifetime = self._credentials_lifetime
            if lifetime is not None:
                # moto computes Expiration from DurationSeconds and does not range-check it
                _replace_body(environ, _with_form_param(body, "DurationSeconds", str(lifetime)))
        response = _run_wsgi(self._moto_app, environ)
        if 200 <= response.status < 300:
            response = self._observe(call, environ, response)
        return response

    def _fault(self, call: _Call, fault: _Fault) -> _Response:
        if fault.kind == "throttle":
            code = "ThrottlingException" if call.json_protocol else "Throttling"
            return _error(call, code, "Rate exceeded", 400)
        if fault.kind == "access_denied":
            if call.json_protocol:
                return _error(call, "AccessDeniedException", self._denied_message(call), 400)
            return _error(call, "AccessDenied", self._denied_message(call), 403)
        if fault.status == 503:
            return _error(call, "ServiceUnavailable", "Service Unavailable", 503)
        return _error(call, "InternalFailure", "The request processing has failed.", fault.status)

    def _base_identity(self, call: _Call) -> _Response:
        request_id = str(uuid.uuid4())
        body = (
            f'<GetCallerIdentityResponse xmlns="{_XML_NAMESPACES["sts"]}">'
            f"<GetCallerIdentityResult><Arn>{self._caller_arn(None)}</Arn>"
            f"<UserId>{self._base_user_id}</UserId><Account>{DEFAULT_ACCOUNT_ID}</Account>"
            f"</GetCallerIdentityResult><ResponseMetadata><RequestId>{request_id}</RequestId>"
            "</ResponseMetadata></GetCallerIdentityResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
        return _Response(200, headers, body)

    def _caller_arn(self, access_key_id: str | None) -> str:
        with self._lock:
            arn = self._identities.get(access_key_id or "")
        return arn or f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:user/{BASE_USER}"

    def _denied_message(self, call: _Call) -> str:
        service = call.service or "aws"
        message = (
            f"User: {self._caller_arn(call.access_key_id)} is not authorized to perform: "
            f"{service}:{call.api}"
        )
        resource = call.params.get("RoleArn") if call.api == "AssumeRole" else None
        return f"{message} on resource: {resource}" if resource else message

    def _check_assume_role(self, call: _Call) -> _Response | None:
        """What real STS checks and moto does not: DurationSeconds' range and the ExternalId."""
        duration = call.params.get("DurationSeconds")
        if duration is not None:
            low, high = _STS_DURATION
            value = int(duration) if str(duration).isdigit() else None
            if value is None or not low <= value <= high:
                bound = (
                    f"less than or equal to {high}"
                    if value is not None and value > high
                    else f"greater than or equal to {low}"
                )
                return _error(
                    call,
                    "ValidationError",
                    f"1 validation error detected: Value '{duration}' at 'durationSeconds' "
                    f"failed to satisfy constraint: Member must have value {bound}",
                    400,
                )
        role_arn = str(call.params.get("RoleArn") or "")
        with self._lock:
            required = self._external_ids.get(role_arn)
        if required is None:
            return None
        given = str(call.params.get("ExternalId") or "")
        if hmac.compare_digest(given.encode(), required.encode()):
            return None
        # real STS does not say why: a wrong ExternalId is a plain AccessDenied
        return _error(call, "AccessDenied", self._denied_message(call), 403)

    def _observe(self, call: _Call, environ: WSGIEnvironment, response: _Response) -> _Response:
        """Remember the secrets moto issued; give clusters the endpoint address asked for."""
        if call.api in _ISSUING_ACTIONS:
            account = str(environ.get("HTTP_X_MOTO_ACCOUNT_ID") or DEFAULT_ACCOUNT_ID)
            self._record_key(call, _xml_fields(response.body), account)
        elif call.api == "GetClusterCredentials":
            self._record_cluster_password(call, _xml_fields(response.body))
        with self._lock:
            addresses = dict(self._cluster_addresses)
        body = response.body
        for moto_address, address in addresses.items():
            body = body.replace(
                f"<Address>{moto_address}</Address>".encode(),
                f"<Address>{escape(address)}</Address>".encode(),
            )
        return _Response(response.status, response.headers, body)

    def _record_key(self, call: _Call, fields: Mapping[str, str], account: str) -> None:
        key_id, secret = fields.get("AccessKeyId"), fields.get("SecretAccessKey")
        if not key_id or not secret:
            return
        expiration = fields.get("Expiration")
        key = IssuedKey(
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=fields.get("SessionToken"),
            expires_at=_parse_time(expiration) if expiration else None,
        )
        if call.api == "CreateAccessKey":
            identity = f"arn:aws:iam::{account}:user/{fields.get('UserName', BASE_USER)}"
        else:
            identity = fields.get("Arn") or self._caller_arn(call.access_key_id)
        with self._lock:
            self._keys[key_id] = key
            self._identities[key_id] = identity

    def _record_cluster_password(self, call: _Call, fields: Mapping[str, str]) -> None:
        user, password, expiration = (
            fields.get("DbUser"),
            fields.get("DbPassword"),
            fields.get("Expiration"),
        )
        if not user or not password or not expiration:
            return
        issued = IssuedRedshiftPassword(
            user=user,
            password=password,
            expires_at=_parse_time(expiration),
            database=call.params.get("DbName") or None,
            cluster_identifier=call.params.get("ClusterIdentifier"),
            workgroup_name=None,
        )
        with self._lock:
            self._passwords[password] = issued

    def _serverless_answer(self, call: _Call) -> _Response:
        try:
            document, login = self._serverless.dispatch(
                str(call.api),
                call.params,
                region=call.region or self.region,
                db_user=self._serverless_db_user(call.access_key_id),
            )
        except ServerlessError as exc:
            return _error(call, exc.code, exc.message, exc.status)
        if login is not None:
            issued = IssuedRedshiftPassword(
                user=login.user,
                password=login.password,
                expires_at=login.expires_at,
                database=login.database,
                cluster_identifier=None,
                workgroup_name=login.workgroup_name,
            )
            with self._lock:
                self._passwords[login.password] = issued
        return _json_response(document)

    def _serverless_db_user(self, access_key_id: str | None) -> str:
        """``IAMR:<role>`` for a role session, ``IAM:<user>`` for a user, as Redshift names them."""
        arn = self._caller_arn(access_key_id)
        resource = arn.split(":", 5)[-1]  # assumed-role/<role>/<session> or user/<name>
        kind, _, rest = resource.partition("/")
        if kind == "assumed-role":
            return "IAMR:" + rest.split("/", 1)[0]
        return "IAM:" + rest.rsplit("/", 1)[-1]

    # -- talking to moto directly (set-up calls are not counted and never faulted)

    def _moto_query(
        self,
        service: str,
        action: str,
        params: Mapping[str, str],
        *,
        account: str = DEFAULT_ACCOUNT_ID,
    ) -> tuple[int, dict[str, str]]:
        """Call a query-protocol API on moto's app in-process; return status and fields."""
        if self._moto_app is None:
            raise RuntimeError("FakeAws is not started")
        form = {"Action": action, "Version": _API_VERSIONS[service], **params}
        region = "us-east-1" if service == "iam" else self.region
        scope = f"{self._base_key.access_key_id}/20000101/{region}/{service}/aws4_request"
        response = self._moto_request(
            "/",
            urlencode(form, quote_via=quote).encode(),
            {
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                # moto reads the service and region from the SigV4 scope, not the signature
                "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, "
                "SignedHeaders=host, Signature=0",
                "x-moto-account-id": account,
            },
        )
        return response.status, _xml_fields(response.body)

    def _reset_moto(self) -> None:
        response = self._moto_request("/moto-api/reset", b"", {})
        if response.status != 200:
            raise RuntimeError(f"FakeAws: moto's reset failed with HTTP {response.status}")

    def _moto_request(self, path: str, body: bytes, headers: Mapping[str, str]) -> _Response:
        builder = EnvironBuilder(path=path, method="POST", data=body, headers=list(headers.items()))
        try:
            return _run_wsgi(self._moto_app, builder.get_environ())
        finally:
            builder.close()


def _with_form_param(body: bytes, name: str, value: str) -> bytes:
    pairs = [
        (key, item)
        for key, item in parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        if key != name
    ]
    pairs.append((name, value))
    return urlencode(pairs, quote_via=quote).encode()


def _describe(fields: Mapping[str, str]) -> str:
    return f"{fields.get('Code', 'error')}: {fields.get('Message', 'no message')}"
