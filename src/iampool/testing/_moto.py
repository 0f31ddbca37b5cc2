"""moto's server application, driven in-process for set-up calls that are never counted or faulted.

moto keeps its state (roles, clusters, assumed-role sessions) in process-wide backends shared by
every ``FakeAws`` of the process. ``reset()`` wipes that state and then creates again what the
*other* running instances set up through ``create_role`` / ``create_redshift_cluster``, so a test
that resets its own ``FakeAws`` leaves a session-wide one working.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlencode

from werkzeug.test import EnvironBuilder

from ._issued import DEFAULT_ACCOUNT_ID
from ._wire import Response, run_wsgi, xml_fields

__all__ = ["Moto", "Role"]

_API_VERSIONS = {"iam": "2010-05-08", "redshift": "2012-12-01", "sts": "2011-06-15"}
_ROLE_ARN_PREFIX = "arn:aws:iam::"


@dataclass(frozen=True)
class Role:
    """An IAM role as STS needs to know it."""

    arn: str
    trust_policy: str  # the JSON document
    max_session_duration: int


@dataclass(frozen=True)
class _SetUp:
    service: str
    action: str
    params: tuple[tuple[str, str], ...]
    account: str


class Moto:
    """One ``FakeAws``'s handle on moto's (process-wide) server application."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _running: ClassVar[list[Moto]] = []

    def __init__(self, region: str, signing_key_id: str) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        self.app: Any = DomainDispatcherApplication(create_backend_app)
        self.handler: Any = MotoRequestHandler
        self._region = region
        self._signing_key_id = signing_key_id
        # what this instance set up, by (account, kind, name), to replay after a foreign reset
        self._set_ups: dict[tuple[str, str, str], _SetUp] = {}

    def attach(self) -> None:
        """Count this instance running; the first one in the process starts from a clean moto."""
        with Moto._lock:
            if not Moto._running:
                self._reset_all()
            Moto._running.append(self)

    def detach(self) -> None:
        """Stop counting this instance (its set-ups are no longer replayed)."""
        with Moto._lock:
            if self in Moto._running:
                Moto._running.remove(self)

    def reset(self) -> None:
        """Wipe moto's state; recreate what the other running instances set up."""
        with Moto._lock:
            self._set_ups.clear()
            self._reset_all()
            for other in Moto._running:
                if other is not self:
                    other._replay()

    # -- set-up

    def create_role(self, name: str, trust_policy: str, max_session: int, account: str) -> str:
        """Create IAM role ``name`` or replace its trust policy and session limit; its ARN."""
        params = {
            "RoleName": name,
            "AssumeRolePolicyDocument": trust_policy,
            "MaxSessionDuration": str(max_session),
        }
        status, fields = self._query("iam", "CreateRole", params, account=account)
        if fields.get("Code") == "EntityAlreadyExists":
            status, fields = self._update_role(name, trust_policy, max_session, account)
        if status != 200 or "Arn" not in fields:
            raise RuntimeError(f"FakeAws: could not create role {name!r}: {_describe(fields)}")
        self._remember("iam", "CreateRole", params, account, kind="role", name=name)
        return fields["Arn"]

    def find_role(self, arn: str) -> Role | None:
        """The role ``arn`` names exactly (account, path and name), or ``None``."""
        account, _, resource = arn.removeprefix(_ROLE_ARN_PREFIX).partition(":role/")
        if not arn.startswith(_ROLE_ARN_PREFIX) or not resource or "/" in account:
            return None
        name = resource.rsplit("/", 1)[-1]
        status, fields = self._query("iam", "GetRole", {"RoleName": name}, account=account)
        if status != 200 or fields.get("Arn") != arn:
            return None
        return Role(
            arn=arn,
            trust_policy=unquote(fields.get("AssumeRolePolicyDocument", "")),
            max_session_duration=int(fields.get("MaxSessionDuration") or 3600),
        )

    def create_cluster(self, params: Mapping[str, str]) -> dict[str, str]:
        """``CreateCluster``; the response's fields (``Address`` among them on success).

        Raises:
            RuntimeError: moto refused (the message carries its error code).
        """
        identifier = params["ClusterIdentifier"]
        request = {**params, "MasterUserPassword": "Fake-aws-0-" + secrets.token_hex(8)}
        status, fields = self._query("redshift", "CreateCluster", request)
        if status != 200 or "Address" not in fields:
            raise RuntimeError(
                f"FakeAws: could not create cluster {identifier!r}: {_describe(fields)}"
            )
        kind, account = "cluster", DEFAULT_ACCOUNT_ID
        self._remember("redshift", "CreateCluster", request, account, kind=kind, name=identifier)
        return fields

    def secrets(self, action: str, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Call Secrets Manager's ``action`` on moto in-process (a set-up call, never counted);
        status and the JSON answer."""
        scope = f"{self._signing_key_id}/20000101/{self._region}/secretsmanager/aws4_request"
        response = self._request(
            "/",
            json.dumps(dict(params)).encode(),
            {
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": f"secretsmanager.{action}",
                "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, "
                "SignedHeaders=host, Signature=0",
            },
        )
        try:
            document = json.loads(response.body or b"{}")
        except ValueError:
            document = {}
        return response.status, document if isinstance(document, dict) else {}

    # -- internals

    def _update_role(
        self, name: str, trust_policy: str, max_session: int, account: str
    ) -> tuple[int, dict[str, str]]:
        update = {"RoleName": name, "PolicyDocument": trust_policy}
        status, fields = self._query("iam", "UpdateAssumeRolePolicy", update, account=account)
        if status == 200:
            limits = {"RoleName": name, "MaxSessionDuration": str(max_session)}
            status, fields = self._query("iam", "UpdateRole", limits, account=account)
        if status == 200:
            status, fields = self._query("iam", "GetRole", {"RoleName": name}, account=account)
        return status, fields

    def _remember(
        self,
        service: str,
        action: str,
        params: Mapping[str, str],
        account: str,
        *,
        kind: str,
        name: str,
    ) -> None:
        with Moto._lock:
            self._set_ups[(account, kind, name)] = _SetUp(
                service, action, tuple(params.items()), account
            )

    def _replay(self) -> None:
        for set_up in self._set_ups.values():
            self._query(set_up.service, set_up.action, dict(set_up.params), account=set_up.account)

    def _reset_all(self) -> None:
        response = self._request("/moto-api/reset", b"", {})
        if response.status != 200:
            raise RuntimeError(f"FakeAws: moto's reset failed with HTTP {response.status}")

    def _query(
        self,
        service: str,
        action: str,
        params: Mapping[str, str],
        *,
        account: str = DEFAULT_ACCOUNT_ID,
    ) -> tuple[int, dict[str, str]]:
        """Call a query-protocol API on moto's app in-process; return status and fields."""
        form = {"Action": action, "Version": _API_VERSIONS[service], **params}
        region = "us-east-1" if service == "iam" else self._region
        scope = f"{self._signing_key_id}/20000101/{region}/{service}/aws4_request"
        response = self._request(
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
        return response.status, xml_fields(response.body)

    def _request(self, path: str, body: bytes, headers: Mapping[str, str]) -> Response:
        builder = EnvironBuilder(path=path, method="POST", data=body, headers=list(headers.items()))
        try:
            return run_wsgi(self.app, builder.get_environ())
        finally:
            builder.close()


def _describe(fields: Mapping[str, str]) -> str:
    return f"{fields.get('Code', 'error')}: {fields.get('Message', 'no message')}"


def policy_json(policy: Mapping[str, Any]) -> str:
    """The compact JSON text IAM stores for a policy document."""
    return json.dumps(policy, separators=(",", ":"))
