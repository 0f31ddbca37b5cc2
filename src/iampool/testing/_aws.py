"""``FakeAws``: a local AWS for tests, built on moto's server.

A werkzeug threaded HTTP server on 127.0.0.1 (``_server.py``) runs a small WSGI front
(``_api.py``) in front of moto's own server application (``_moto.py``). The front

- names every request's API (``_wire.py``), counts it in ``calls`` and records its parameters in
  ``requests`` (REST-protocol APIs such as S3 pass through uncounted);
- injects faults on demand (``faults``, ``_faults.py``; ``outage()`` refuses connections);
- judges what moto lets through: AssumeRole on a role that does not exist or whose trust policy
  (``_trust.py``) does not allow the caller is AccessDenied; DurationSeconds is range-checked
  against STS's limits and the role's maximum session duration;
- adds what moto lacks: Redshift Serverless ``GetWorkgroup``/``GetCredentials``
  (``_serverless.py``), cluster endpoints that point at a local address;
- serves Secrets Manager through moto (``GetSecretValue`` counted like every API), with the
  steps of a rotation as set-up calls: ``create_secret``, ``stage_secret`` (``createSecret``:
  an ``AWSPENDING`` version), ``finish_rotation`` (``finishSecret``: ``AWSCURRENT`` moves,
  ``AWSPREVIOUS`` follows);
- remembers every secret it handed out (``_issued.py``: ``signing_key``,
  ``redshift_password``), which is what an IAM gateway needs to check a login.

moto keeps its state in process-wide backends: two running instances share it. ``reset()`` on
one wipes it and then recreates the roles and clusters the others created with ``create_role``
and ``create_redshift_cluster``; a ``FakeAws`` that starts while no other runs starts from a
clean moto.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import anyio.to_thread

from ._api import ApiFront
from ._faults import Faults
from ._issued import (
    BASE_USER,
    DEFAULT_ACCOUNT_ID,
    IssuedKey,
    IssuedRedshiftPassword,
)
from ._moto import Moto, policy_json
from ._server import BackgroundServer
from ._trust import check_supported, default_trust_policy, parse_policy, with_external_id

__all__ = [
    "BASE_USER",
    "DEFAULT_ACCOUNT_ID",
    "FakeAws",
    "Faults",
    "IssuedKey",
    "IssuedRedshiftPassword",
]


class FakeAws:
    """A local AWS (STS, IAM, RDS, Redshift via moto; Redshift Serverless) with fault injection.

    Use it as a context manager (``with`` or ``async with``) or call ``start()``/``stop()``.
    Point SDKs at it with ``export_env()`` or ``endpoint_url`` plus ``base_key``. Roles must be
    created (``create_role``) before they can be assumed, as in AWS.
    """

    def __init__(self, region: str = "us-east-1", host: str = "127.0.0.1", port: int = 0) -> None:
        self.region = region
        self.host = host
        self._port = port
        self._api = ApiFront(region)
        #: API name -> number of requests received (faulted ones included)
        self.calls = self._api.calls
        #: API name -> the parameters of every request, in order (query values as strings)
        self.requests = self._api.requests
        #: failures to inject
        self.faults: Faults = self._api.faults
        self._issued = self._api.issued
        self._lifecycle = threading.Lock()
        self._moto: Moto | None = None
        self._server: BackgroundServer | None = None
        self._in_outage = False

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._server is not None else "stopped"
        return f"<FakeAws {where} region={self.region}>"

    # -- lifecycle

    def start(self) -> None:
        """Listen on ``host:port`` (a free port when 0) and serve in a background thread."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("FakeAws is already started")
            werkzeug_log = logging.getLogger("werkzeug")
            if werkzeug_log.level == logging.NOTSET:  # its request log would flood test output
                werkzeug_log.setLevel(logging.ERROR)
            moto = self._moto or Moto(self.region, self._issued.base_key.access_key_id)
            self._moto = self._api.moto = moto
            server = BackgroundServer(
                self._api, moto.handler, host=self.host, port=self._port, on_cut=self.faults.wake
            )
            moto.attach()
            try:
                server.listen()
            except BaseException:
                moto.detach()
                raise
            self._port = server.port
            self._server = server

    def stop(self) -> None:
        """Stop serving, cut open connections and release the port. Idempotent."""
        with self._lifecycle:
            server, self._server = self._server, None
            if server is None:
                return
            self._in_outage = False
            server.close()
            if self._moto is not None:
                self._moto.detach()

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

    # -- where it is

    @property
    def port(self) -> int:
        """The port it listens on (stays the same across outages)."""
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://host:port``, for ``endpoint_url=`` or ``AWS_ENDPOINT_URL``."""
        if self._server is None:
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
        return self._issued.base_key

    def env(self) -> dict[str, str]:
        """Environment variables that point every AWS SDK at this fake and away from real AWS.

        ``export_env()`` applies them and also removes every other ``AWS_*`` variable (a profile,
        session token or per-service endpoint would escape the fake); do the same when passing
        them to a subprocess.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.base_key.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.base_key.secret_access_key,
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
            if self._server is None:
                raise RuntimeError("FakeAws is not started")
            if not self._in_outage:
                self._in_outage = True
                self._server.close()

    def end_outage(self) -> None:
        """Listen again, on the same port."""
        with self._lifecycle:
            if self._server is not None and self._in_outage:
                self._server.listen()
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
        process-wide: the roles and clusters other running ``FakeAws`` instances created with
        ``create_role`` / ``create_redshift_cluster`` are created again.
        """
        self.end_outage()
        self._api.clear()
        if self._moto is not None:
            self._moto.reset()

    def create_role(
        self,
        name: str,
        *,
        external_id: str | None = None,
        trust_policy: Mapping[str, Any] | str | None = None,
        max_session_duration: int = 3600,
        account: str = DEFAULT_ACCOUNT_ID,
    ) -> str:
        """Create IAM role ``name`` (or update an existing one) and return its ARN.

        Only roles that exist can be assumed, as in AWS. The trust policy decides who may:
        by default every identity of the role's account and of the base credentials' account.

        Args:
            external_id: AssumeRole succeeds only with exactly this ExternalId (a
                ``StringEquals`` condition on ``sts:ExternalId`` in the trust policy).
            trust_policy: the role's trust policy document (dict or JSON text), e.g. naming
                the one principal allowed; see ``iampool.testing._trust`` for what is judged.
            max_session_duration: the longest ``DurationSeconds`` AssumeRole accepts
                (3600 to 43200, as IAM allows).

        Raises:
            ValueError: a trust policy the fake cannot judge, or a bad session duration.
        """
        if not 3600 <= max_session_duration <= 43200:
            raise ValueError(
                f"max_session_duration must be 3600..43200 seconds, not {max_session_duration}"
            )
        policy = (
            parse_policy(trust_policy)
            if trust_policy is not None
            else default_trust_policy([account, DEFAULT_ACCOUNT_ID])
        )
        if external_id is not None:
            policy = with_external_id(policy, external_id)
        check_supported(policy)
        return self._started_moto().create_role(
            name, policy_json(policy), max_session_duration, account
        )

    def require_external_id(self, role_arn: str, external_id: str | None) -> None:
        """Change role ``role_arn``'s trust policy: AssumeRole without exactly this ExternalId
        is denied; ``None`` lifts the requirement.

        Raises:
            LookupError: the role does not exist.
        """
        moto = self._started_moto()
        role = moto.find_role(role_arn)
        if role is None:
            raise LookupError(f"FakeAws: there is no role {role_arn}; create_role() it first")
        policy = with_external_id(parse_policy(role.trust_policy), external_id)
        account = role_arn.split(":")[4]
        name = role_arn.rsplit("/", 1)[-1]
        moto.create_role(name, policy_json(policy), role.max_session_duration, account)

    def expire_credentials_early(self, seconds: int | None) -> None:
        """Credentials STS issues from now on expire ``seconds`` after issue (``None``: as asked).

        The response's ``Expiration`` and ``signing_key()`` agree.
        """
        self._api.expire_credentials_early(None if seconds is None else int(seconds))

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
        fields = self._started_moto().create_cluster(
            {
                "ClusterIdentifier": identifier,
                "NodeType": "ra3.xlplus",
                "ClusterType": "single-node",
                "MasterUsername": master_username,
                "DBName": db_name,
                "Port": str(port),
            }
        )
        if address is None:
            return fields["Address"], port
        self._api.point_cluster_at(fields["Address"], address)
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
        workgroup = self._api.serverless.create_workgroup(
            name,
            region=region or self.region,
            namespace=namespace,
            db_name=db_name,
            address=address,
            port=port,
        )
        return workgroup.address, workgroup.port

    # -- Secrets Manager

    def create_secret(self, name: str, value: Mapping[str, Any] | str) -> str:
        """Create secret ``name`` holding ``value`` (a mapping is stored as JSON, e.g. RDS's
        ``{"username": ..., "password": ...}``) as its ``AWSCURRENT`` version; its ARN.

        Not replayed after another instance's ``reset()`` (roles and clusters are).

        Raises:
            RuntimeError: moto refused (e.g. the secret exists).
        """
        text = value if isinstance(value, str) else json.dumps(dict(value))
        self._issued.add_secret_value(text)
        document = self._secrets_call("CreateSecret", {"Name": name, "SecretString": text})
        return str(document["ARN"])

    def stage_secret(self, secret_id: str, value: Mapping[str, Any] | str) -> str:
        """Rotation step ``createSecret``: a new version labelled ``AWSPENDING``; its id.
        ``GetSecretValue`` still answers the ``AWSCURRENT`` one until :meth:`finish_rotation`."""
        text = value if isinstance(value, str) else json.dumps(dict(value))
        self._issued.add_secret_value(text)
        version_id = str(uuid.uuid4())
        self._secrets_call(
            "PutSecretValue",
            {
                "SecretId": secret_id,
                "SecretString": text,
                "VersionStages": ["AWSPENDING"],
                "ClientRequestToken": version_id,
            },
        )
        return version_id

    def finish_rotation(self, secret_id: str, version_id: str) -> None:
        """Rotation step ``finishSecret``: ``AWSCURRENT`` moves to ``version_id`` (and
        ``AWSPREVIOUS`` to the version it left), ``AWSPENDING`` is removed."""
        stages = self.secret_stages(secret_id)
        current = next((v for v, labels in stages.items() if "AWSCURRENT" in labels), None)
        self._secrets_call(
            "UpdateSecretVersionStage",
            {
                "SecretId": secret_id,
                "VersionStage": "AWSCURRENT",
                "MoveToVersionId": version_id,
                **({"RemoveFromVersionId": current} if current else {}),
            },
        )
        self._secrets_call(
            "UpdateSecretVersionStage",
            {
                "SecretId": secret_id,
                "VersionStage": "AWSPENDING",
                "RemoveFromVersionId": version_id,
            },
        )

    def secret_string(self, secret_id: str, stage: str = "AWSCURRENT") -> str:
        """The text of secret ``secret_id``'s version labelled ``stage`` (a set-up call: not
        counted in ``calls``)."""
        document = self._secrets_call(
            "GetSecretValue", {"SecretId": secret_id, "VersionStage": stage}
        )
        return str(document["SecretString"])

    def secret_stages(self, secret_id: str) -> dict[str, list[str]]:
        """Version id -> staging labels of secret ``secret_id``."""
        document = self._secrets_call("DescribeSecret", {"SecretId": secret_id})
        stages = document.get("VersionIdsToStages") or {}
        return {str(version): list(labels) for version, labels in stages.items()}

    def _secrets_call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        status, document = self._started_moto().secrets(action, params)
        if status != 200:
            code = document.get("__type", "error")
            raise RuntimeError(f"FakeAws: Secrets Manager {action} failed: {code}")
        return document

    def wait_for_calls(self, api: str, count: int = 1, *, timeout: float = 5.0) -> None:
        """Block until ``calls[api]`` reaches ``count`` (calls held by latency count at once).

        Raises ``TimeoutError`` after ``timeout`` seconds. From async code, run it in a worker
        thread (``anyio.to_thread.run_sync``).
        """
        self._api.wait_for_calls(api, count, timeout)

    def _started_moto(self) -> Moto:
        if self._moto is None or self._server is None:
            raise RuntimeError("FakeAws is not started")
        return self._moto

    # -- lookups (what an IAM gateway checks logins against)

    def signing_key(self, access_key_id: str) -> IssuedKey | None:
        """The key issued under ``access_key_id`` (base key, STS session or IAM user key)."""
        return self._issued.signing_key(access_key_id)

    def redshift_password(self, user: str, password: str) -> IssuedRedshiftPassword | None:
        """The temporary Redshift password equal to ``password``, if the fake issued it.

        Matched by password: the result may belong to another user than ``user``, so a caller
        can tell a wrong user (compare ``.user``) from a password that was never issued.
        """
        return self._issued.redshift_password(password)

    def issued_secrets(self) -> list[str]:
        """Every secret handed out so far: secret keys (the base key's too), session tokens,
        Redshift temporary passwords and Secrets Manager values (and their passwords); for
        asserting that none of them leaks into logs or errors."""
        return self._issued.all_secrets()
