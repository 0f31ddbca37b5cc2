"""The slice of Redshift Serverless that IAM authentication uses, which moto does not have.

``GetWorkgroup`` and ``GetCredentials`` answer with the shapes of botocore's
``redshift-serverless`` 2021-04-21 model (JSON 1.1 protocol). This module only builds answers;
``FakeAws`` (``_aws.py``) puts them on the wire and records what was issued.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "TARGET_PREFIX",
    "RedshiftServerless",
    "ServerlessError",
    "ServerlessLogin",
    "Workgroup",
]

TARGET_PREFIX = "RedshiftServerless."  # X-Amz-Target of every Redshift Serverless operation
_MIN_DURATION = 900
_MAX_DURATION = 3600
_DEFAULT_DURATION = 900


class ServerlessError(Exception):
    """An error Redshift Serverless answers with (``__type`` code, message, HTTP status)."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Workgroup:
    """A Redshift Serverless workgroup of the fake: its identity and endpoint."""

    name: str
    region: str
    namespace: str
    db_name: str
    address: str
    port: int
    workgroup_id: str
    arn: str
    created_at: datetime


@dataclass(frozen=True)
class ServerlessLogin:
    """What one ``GetCredentials`` call issued."""

    user: str
    password: str = field(repr=False)
    expires_at: datetime
    database: str
    workgroup_name: str


class RedshiftServerless:
    """Workgroups by (region, name) and the two operations IAM authentication calls."""

    def __init__(self, account_id: str) -> None:
        self._account_id = account_id
        self._lock = threading.Lock()
        self._workgroups: dict[tuple[str, str], Workgroup] = {}

    def create_workgroup(
        self, name: str, *, region: str, namespace: str, db_name: str, address: str, port: int
    ) -> Workgroup:
        """Add (or replace) a workgroup that is ``AVAILABLE`` at ``address:port``."""
        workgroup_id = str(uuid.uuid4())
        workgroup = Workgroup(
            name=name,
            region=region,
            namespace=namespace,
            db_name=db_name,
            address=address,
            port=port,
            workgroup_id=workgroup_id,
            arn=f"arn:aws:redshift-serverless:{region}:{self._account_id}:workgroup/{workgroup_id}",
            created_at=datetime.now(timezone.utc),
        )
        with self._lock:
            self._workgroups[(region, name)] = workgroup
        return workgroup

    def clear(self) -> None:
        """Forget every workgroup."""
        with self._lock:
            self._workgroups.clear()

    def dispatch(
        self, operation: str, params: Mapping[str, Any], *, region: str, db_user: str
    ) -> tuple[dict[str, Any], ServerlessLogin | None]:
        """Answer ``operation`` (``GetWorkgroup`` or ``GetCredentials``) for the caller.

        Returns the JSON-ready response document and, for
        ``GetCredentials``, the login it issued. Raises ``ServerlessError``.
        """
        if operation == "GetWorkgroup":
            return self._get_workgroup(params, region), None
        if operation == "GetCredentials":
            return self._get_credentials(params, region, db_user)
        raise ServerlessError(
            "UnknownOperationException", f"The fake has no operation {operation}."
        )

    def _find(self, params: Mapping[str, Any], region: str) -> Workgroup:
        name = params.get("workgroupName")
        if not isinstance(name, str) or not name:
            raise ServerlessError("ValidationException", "workgroupName must be provided.")
        with self._lock:
            workgroup = self._workgroups.get((region, name))
        if workgroup is None:
            raise ServerlessError("ResourceNotFoundException", f"Workgroup {name} does not exist.")
        return workgroup

    def _get_workgroup(self, params: Mapping[str, Any], region: str) -> dict[str, Any]:
        workgroup = self._find(params, region)
        return {
            "workgroup": {
                "workgroupName": workgroup.name,
                "workgroupArn": workgroup.arn,
                "workgroupId": workgroup.workgroup_id,
                "namespaceName": workgroup.namespace,
                "status": "AVAILABLE",
                "baseCapacity": 128,
                "maxCapacity": 512,
                "port": workgroup.port,
                "endpoint": {
                    "address": workgroup.address,
                    "port": workgroup.port,
                    "vpcEndpoints": [],
                },
                "publiclyAccessible": False,
                "enhancedVpcRouting": False,
                "configParameters": [{"parameterKey": "require_ssl", "parameterValue": "true"}],
                "securityGroupIds": [],
                "subnetIds": [],
                # creationDate is modelled as an ISO 8601 string, other timestamps as epoch seconds
                "creationDate": _iso8601(workgroup.created_at),
                "workgroupVersion": "1.0",
            }
        }

    def _get_credentials(
        self, params: Mapping[str, Any], region: str, db_user: str
    ) -> tuple[dict[str, Any], ServerlessLogin]:
        duration = params.get("durationSeconds", _DEFAULT_DURATION)
        if (
            not isinstance(duration, int)
            or isinstance(duration, bool)
            or not _MIN_DURATION <= duration <= _MAX_DURATION
        ):
            raise ServerlessError(
                "ValidationException",
                f"durationSeconds must be between {_MIN_DURATION} and {_MAX_DURATION} seconds.",
            )
        workgroup = self._find(params, region)
        database = params.get("dbName") or workgroup.db_name
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=duration)
        login = ServerlessLogin(
            user=db_user,
            password=secrets.token_urlsafe(48),
            expires_at=expires_at,
            database=str(database),
            workgroup_name=workgroup.name,
        )
        response = {
            "dbUser": login.user,
            "dbPassword": login.password,
            "expiration": expires_at.timestamp(),
            "nextRefreshTime": expires_at.timestamp(),
        }
        return response, login


def _iso8601(moment: datetime) -> str:
    """``2024-05-01T12:00:00.123Z``, as AWS writes ISO 8601 timestamps."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
