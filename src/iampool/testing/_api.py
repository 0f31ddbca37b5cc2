"""The API front of ``FakeAws``: what happens to each AWS request before and after moto.

Every request is named (``_wire.py``), counted in ``calls``, recorded in ``requests``, delayed or
failed as ``faults`` say, judged where moto is lenient (AssumeRole, ``_sts.py``), answered by
moto or by the Redshift Serverless slice, and its answer observed: issued secrets are recorded
and cluster addresses rewritten. Runs on the HTTP server's request threads.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from ._faults import Fault, Faults
from ._issued import BASE_USER, DEFAULT_ACCOUNT_ID, IssuedKey, IssuedRedshiftPassword, IssuedSecrets
from ._moto import Moto
from ._serverless import TARGET_PREFIX, RedshiftServerless, ServerlessError
from ._sts import StsRules
from ._wire import (
    XML_NAMESPACES,
    Call,
    Response,
    error_response,
    json_response,
    parse_call,
    parse_time,
    read_body,
    replace_body,
    run_wsgi,
    with_form_param,
    xml_fields,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["ApiFront"]

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


class ApiFront:
    """The WSGI application in front of moto, and the state it keeps.

    Args:
        region: the region of requests that do not name one.
    """

    def __init__(self, region: str) -> None:
        self.region = region
        self.calls: Counter[str] = Counter()
        self.requests: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.faults = Faults()
        self.issued = IssuedSecrets()
        self.serverless = RedshiftServerless(DEFAULT_ACCOUNT_ID)
        self.moto: Moto | None = None  # set once started
        self._lock = threading.Condition()  # guards the state below and signals new calls
        self._credentials_lifetime: int | None = None
        self._cluster_addresses: dict[str, str] = {}  # moto's endpoint address -> ours

    def clear(self) -> None:
        """Forget calls, faults, secrets, workgroups and every setting."""
        self.faults.clear()
        with self._lock:
            self.calls.clear()
            self.requests.clear()
            self._credentials_lifetime = None
            self._cluster_addresses.clear()
        self.issued.clear()
        self.serverless.clear()

    def expire_credentials_early(self, seconds: int | None) -> None:
        """STS credentials issued from now on expire ``seconds`` after issue (None: as asked)."""
        with self._lock:
            self._credentials_lifetime = seconds

    def point_cluster_at(self, moto_address: str, address: str) -> None:
        """Write ``address`` wherever moto answers with a cluster's ``moto_address``."""
        with self._lock:
            self._cluster_addresses[moto_address] = address

    def wait_for_calls(self, api: str, count: int, timeout: float) -> None:
        """Block until ``calls[api]`` reaches ``count``; ``TimeoutError`` after ``timeout``."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.calls[api] >= count, timeout=timeout):
                raise TimeoutError(
                    f"FakeAws received {self.calls[api]} {api} calls in {timeout} s, not {count}"
                )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI entry point."""
        return self._front(environ, start_response)

    def _front(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        moto = self.moto
        if moto is None:  # a request racing stop()
            return Response(503, [], b"").send(start_response)
        if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
            return run_wsgi(moto.app, environ).send(start_response)
        body = read_body(environ)
        call = parse_call(environ, body)
        return self._answer(moto, call, environ, body).send(start_response)

    def _answer(self, moto: Moto, call: Call, environ: WSGIEnvironment, body: bytes) -> Response:
        if call.api is None:
            return run_wsgi(moto.app, environ)
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
        base_key_id = self.issued.base_key.access_key_id
        if call.api == "GetCallerIdentity" and call.access_key_id == base_key_id:
            return self._base_identity()  # moto would call the base key's owner "user/moto"
        if call.api == "AssumeRole":
            refusal = StsRules(moto, self.issued.caller_arn).judge_assume_role(call)
            if refusal is not None:
                return refusal
        if call.api in _DURATION_ACTIONS and not call.json_protocol:
            with self._lock:
                lifetime = self._credentials_lifetime
            if lifetime is not None:
                # moto computes Expiration from DurationSeconds and does not range-check it
                replace_body(environ, with_form_param(body, "DurationSeconds", str(lifetime)))
        response = run_wsgi(moto.app, environ)
        if 200 <= response.status < 300:
            response = self._observe(call, environ, response)
        return response

    def _fault(self, call: Call, fault: Fault) -> Response:
        if fault.kind == "throttle":
            code = "ThrottlingException" if call.json_protocol else "Throttling"
            return error_response(call, code, "Rate exceeded", 400)
        if fault.kind == "access_denied":
            message = StsRules.denied_message(call, self.issued.caller_arn(call.access_key_id))
            if call.json_protocol:
                return error_response(call, "AccessDeniedException", message, 400)
            return error_response(call, "AccessDenied", message, 403)
        if fault.status == 503:
            return error_response(call, "ServiceUnavailable", "Service Unavailable", 503)
        message = "The request processing has failed."
        return error_response(call, "InternalFailure", message, fault.status)

    def _base_identity(self) -> Response:
        request_id = str(uuid.uuid4())
        body = (
            f'<GetCallerIdentityResponse xmlns="{XML_NAMESPACES["sts"]}">'
            f"<GetCallerIdentityResult><Arn>{self.issued.caller_arn(None)}</Arn>"
            f"<UserId>{self.issued.base_user_id}</UserId><Account>{DEFAULT_ACCOUNT_ID}</Account>"
            f"</GetCallerIdentityResult><ResponseMetadata><RequestId>{request_id}</RequestId>"
            "</ResponseMetadata></GetCallerIdentityResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
        return Response(200, headers, body)

    def _observe(self, call: Call, environ: WSGIEnvironment, response: Response) -> Response:
        """Remember the secrets moto issued; give clusters the endpoint address asked for."""
        if call.api in _ISSUING_ACTIONS:
            account = str(environ.get("HTTP_X_MOTO_ACCOUNT_ID") or DEFAULT_ACCOUNT_ID)
            self._record_key(call, xml_fields(response.body), account)
        elif call.api == "GetClusterCredentials":
            self._record_cluster_password(call, xml_fields(response.body))
        elif call.api == "GetSecretValue":
            self._record_secret_value(response.body)
        with self._lock:
            addresses = dict(self._cluster_addresses)
        body = response.body
        for moto_address, address in addresses.items():
            body = body.replace(
                f"<Address>{moto_address}</Address>".encode(),
                f"<Address>{escape(address)}</Address>".encode(),
            )
        return Response(response.status, response.headers, body)

    def _record_key(self, call: Call, fields: Mapping[str, str], account: str) -> None:
        key_id, secret = fields.get("AccessKeyId"), fields.get("SecretAccessKey")
        if not key_id or not secret:
            return
        expiration = fields.get("Expiration")
        key = IssuedKey(
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=fields.get("SessionToken"),
            expires_at=parse_time(expiration) if expiration else None,
        )
        if call.api == "CreateAccessKey":
            identity = f"arn:aws:iam::{account}:user/{fields.get('UserName', BASE_USER)}"
        else:
            identity = fields.get("Arn") or self.issued.caller_arn(call.access_key_id)
        self.issued.add_key(key, identity)

    def _record_cluster_password(self, call: Call, fields: Mapping[str, str]) -> None:
        user, password, expiration = (
            fields.get("DbUser"),
            fields.get("DbPassword"),
            fields.get("Expiration"),
        )
        if not user or not password or not expiration:
            return
        self.issued.add_password(
            IssuedRedshiftPassword(
                user=user,
                password=password,
                expires_at=parse_time(expiration),
                database=call.params.get("DbName") or None,
                cluster_identifier=call.params.get("ClusterIdentifier"),
                workgroup_name=None,
                auto_create=str(call.params.get("AutoCreate", "")).lower() == "true",
            )
        )

    def _record_secret_value(self, body: bytes) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            return
        text = document.get("SecretString") if isinstance(document, dict) else None
        if isinstance(text, str):
            self.issued.add_secret_value(text)

    def _serverless_answer(self, call: Call) -> Response:
        try:
            document, login = self.serverless.dispatch(
                str(call.api),
                call.params,
                region=call.region or self.region,
                db_user=self._serverless_db_user(call.access_key_id),
            )
        except ServerlessError as exc:
            return error_response(call, exc.code, exc.message, exc.status)
        if login is not None:
            self.issued.add_password(
                IssuedRedshiftPassword(
                    user=login.user,
                    password=login.password,
                    expires_at=login.expires_at,
                    database=login.database,
                    cluster_identifier=None,
                    workgroup_name=login.workgroup_name,
                    auto_create=True,  # Serverless creates the IAM identity's user at login
                )
            )
        return json_response(document)

    def _serverless_db_user(self, access_key_id: str | None) -> str:
        """``IAMR:<role>`` for a role session, ``IAM:<user>`` for a user, as Redshift names them."""
        arn = self.issued.caller_arn(access_key_id)
        resource = arn.split(":", 5)[-1]  # assumed-role/<role>/<session> or user/<name>
        kind, _, rest = resource.partition("/")
        if kind == "assumed-role":
            return "IAMR:" + rest.split("/", 1)[0]
        return "IAM:" + rest.rsplit("/", 1)[-1]
