"""The HTTP side of ``FakeAws``: naming a request's API, and writing answers botocore parses.

AWS speaks two protocols here. Query-protocol services (STS, IAM, RDS, Redshift) take a form
with ``Action=...`` and answer XML; JSON-protocol services (Redshift Serverless) name the
operation in ``X-Amz-Target`` and answer JSON. Everything in this module is a pure function of
the WSGI environ or of bytes, except ``run_wsgi``, which runs an application to completion.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode
from xml.etree import ElementTree
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "XML_NAMESPACES",
    "Call",
    "Response",
    "error_response",
    "json_response",
    "parse_call",
    "parse_time",
    "read_body",
    "replace_body",
    "run_wsgi",
    "with_form_param",
    "xml_fields",
]

XML_NAMESPACES = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "rds": "http://rds.amazonaws.com/doc/2014-10-31/",
    "redshift": "http://redshift.amazonaws.com/doc/2012-12-01/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}
_CREDENTIAL = re.compile(r"Credential=([^/\s,]+)/\d{8}/([^/\s,]+)/([^/\s,]+)/aws4_request")
# The HTTP server writes these itself. A second Server header (moto sends "amazon.com", werkzeug
# its own name) makes aiohttp's strict parser, on in ``python -X dev``, refuse the response.
_SERVER_HEADERS = frozenset({"content-length", "transfer-encoding", "server", "date"})
# Headers a response may carry once (aiohttp's SINGLETON_HEADERS): the first one wins.
_SINGLE_HEADERS = frozenset(
    {"content-location", "content-range", "content-type", "etag", "max-forwards"}
)


@dataclass(frozen=True)
class Call:
    """What the front needs to know about a request."""

    api: str | None
    service: str | None  # SigV4 signing name, e.g. "sts"
    region: str | None
    access_key_id: str | None
    target: str | None  # X-Amz-Target of JSON-protocol requests
    params: dict[str, Any]

    @property
    def json_protocol(self) -> bool:
        """Whether the request (and so its answer) uses the JSON protocol."""
        return self.target is not None


@dataclass(frozen=True)
class Response:
    """A buffered HTTP response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        """Hand the response to the WSGI server, each header once and with its real length."""
        headers: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name, value in self.headers:
            key = name.lower()
            if key in _SERVER_HEADERS or (key in _SINGLE_HEADERS and key in seen):
                continue
            seen.add(key)
            headers.append((name, value))
        headers.append(("Content-Length", str(len(self.body))))
        start_response(f"{self.status} {_phrase(self.status)}", headers)
        return [self.body]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def read_body(environ: WSGIEnvironment) -> bytes:
    """The request body, leaving a fresh stream in the environ for moto to read again."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit():
        body: bytes = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    replace_body(environ, body)
    return body


def replace_body(environ: WSGIEnvironment, body: bytes) -> None:
    """Make ``body`` the request body the next application reads."""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def parse_call(environ: WSGIEnvironment, body: bytes) -> Call:
    """Name the request's API and collect its parameters (``api`` is None for REST APIs)."""
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
    return Call(api, service, region, access_key_id, target, params)


def error_response(call: Call, code: str, message: str, status: int) -> Response:
    """An AWS error document in the request's protocol, as botocore expects to parse it."""
    request_id = str(uuid.uuid4())
    if call.json_protocol:
        body = json.dumps({"__type": code, "message": message}).encode()
        content_type = "application/x-amz-json-1.1"
    else:
        xmlns = XML_NAMESPACES.get(call.service or "")
        opening = f'<ErrorResponse xmlns="{xmlns}">' if xmlns else "<ErrorResponse>"
        kind = "Receiver" if status >= 500 else "Sender"
        body = (
            f"{opening}<Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        content_type = "text/xml"
    return Response(
        status, [("Content-Type", content_type), ("x-amzn-RequestId", request_id)], body
    )


def json_response(document: Mapping[str, Any]) -> Response:
    """A JSON-protocol success answer."""
    headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return Response(200, headers, json.dumps(document).encode())


def run_wsgi(app: Callable[..., Iterable[bytes]], environ: WSGIEnvironment) -> Response:
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
    return Response(int(status.split(" ", 1)[0]), headers, b"".join(chunks))


def xml_fields(body: bytes) -> dict[str, str]:
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


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp from a response, as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def with_form_param(body: bytes, name: str, value: str) -> bytes:
    """A form body with parameter ``name`` set to ``value`` (replacing any it had)."""
    pairs = [
        (key, item)
        for key, item in parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        if key != name
    ]
    pairs.append((name, value))
    return urlencode(pairs, quote_via=quote).encode()
