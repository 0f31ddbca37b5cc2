"""The only module that talks to AWS: STS, the RDS token signer, the Redshift APIs and Secrets
Manager.

:class:`AwsSource` is everything the backends need from AWS, as one typed protocol;
:class:`AioAwsSource` implements it with aiobotocore, and unit tests inject a fake. A source runs
on a cache's service loop (see ``_service``), which builds one per process. Foreign errors become
``CredentialError`` at one boundary, :func:`aws_errors`, whose messages name the role, cluster or
workgroup and the AWS error code, never a secret. What the SDK logs about these calls loses its
secrets on the way (``_redact``: a filter on the SDK's loggers, and the secrets each call sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore import xform_name
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from . import _telemetry
from ._errors import ConfigError, ConfigProblem, CredentialError, shown
from ._redact import in_flight, install
from ._telemetry import AwsOutcome

__all__ = [
    "ALLOW_HTTP_ENDPOINTS",
    "AioAwsSource",
    "AwsCredentials",
    "AwsSource",
    "RedshiftLogin",
    "RetryMode",
    "SecretValue",
    "aws_errors",
    "aws_outcome",
    "check_endpoint",
    "default_session_name",
]

log = logging.getLogger("iampool")

RetryMode = Literal["standard", "adaptive", "legacy"]

# Set to 1 to let AWS calls go over plain http:// to a host that is not this machine.
ALLOW_HTTP_ENDPOINTS = "IAMPOOL_ALLOW_HTTP_AWS_ENDPOINTS"


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """An immutable snapshot: key, secret and token always belong together."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(repr=False)
    expires_at: float | None  # epoch seconds; None when the source does not say
    source: str  # "assume-role <arn>" or "default chain"
    # The last moment iampool signs with them (expiry minus the safety margin); set by the cache.
    valid_until: float | None = None


@dataclass(frozen=True, slots=True)
class RedshiftLogin:
    """A Redshift temporary login as the API returned it."""

    user: str
    password: str = field(repr=False)
    expires_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class SecretValue:
    """One version of a Secrets Manager secret as GetSecretValue returned it (the text; a
    binary secret decoded as UTF-8, ``None`` when it is not text)."""

    arn: str
    version_id: str
    text: str | None = field(repr=False)


def default_session_name() -> str:
    """``iampool-<host>-<pid>``, cut to STS's 64 characters of ``[\\w+=,.@-]``."""
    host = re.sub(r"[^\w+=,.@-]", "-", socket.gethostname()) or "host"
    suffix = f"-{os.getpid()}"
    return f"iampool-{host}"[: 64 - len(suffix)] + suffix


@contextlib.contextmanager
def aws_errors(
    action: str, target: str, *, hint: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Translate botocore errors raised inside the block into ``CredentialError``.

    ``action`` starts the message (``Unable to assume IAM role``), ``target`` names what was
    asked for (role ARN and region, cluster, workgroup); ``hint`` adds advice per error code.
    """
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or "")[:300]
        text = f"{action} {target}: {code}"
        if message:
            text += f": {message.rstrip('.')}"
        advice = _advice(code, message, hint or {})
        if advice:
            text += f". {advice}"
        raise CredentialError(f"{text}.", code=code, target=target) from None
    except NoCredentialsError:
        raise CredentialError(
            f"{action} {target}: no base AWS credentials were found (environment, shared "
            "config/profile, web identity, container or instance metadata).",
            code="NoCredentials",
            target=target,
        ) from None
    except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as exc:
        raise CredentialError(
            f"{action} {target}: timed out talking to AWS ({type(exc).__name__}).",
            code="Timeout",
            target=target,
        ) from None
    except EndpointConnectionError as exc:
        raise CredentialError(
            f"{action} {target}: cannot reach the AWS endpoint ({exc}).",
            code="EndpointConnectionError",
            target=target,
        ) from None
    except BotoCoreError as exc:
        raise CredentialError(
            f"{action} {target}: {type(exc).__name__}: {_botocore_text(exc)}",
            code=type(exc).__name__,
            target=target,
        ) from None


# AWS error codes that say "slow down" (botocore's retry handler knows these too) and "not
# allowed" (the caller's identity, its signature or its permissions).
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequests", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown",
    "RequestThrottled", "PriorRequestNotComplete", "LimitExceededException",
})  # fmt: skip
DENIED_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature", "ExpiredToken",
    "ExpiredTokenException", "MissingAuthenticationToken", "UnrecognizedClientException",
    "InvalidIdentityToken", "IDPRejectedClaim",
})  # fmt: skip


def aws_outcome(code: str | None) -> AwsOutcome:
    """An AWS call's outcome for telemetry: ``ok`` (no error code), ``throttled``, ``denied``
    or ``error`` (anything else: not found, unavailable, timed out, unreachable)."""
    if code is None:
        return "ok"
    if code in THROTTLING_CODES:
        return "throttled"
    if code in DENIED_CODES:
        return "denied"
    return "error"


@contextlib.contextmanager
def _called(api: str, service: str, region: str) -> Iterator[None]:
    """Record the AWS call made inside the block (telemetry: a count, a duration, a span);
    its errors go on as they are, for :func:`aws_errors` to translate."""
    telemetry = _telemetry.current()
    if telemetry is None:
        yield
        return
    call = telemetry.aws_call(api, service, region)
    code: str | None = None
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code") or "Unknown")
        raise
    except BaseException as exc:
        code = type(exc).__name__  # a timeout, an unreachable endpoint, a cancellation
        raise
    finally:
        call.end(aws_outcome(code), code)


def check_endpoint(url: str, service_id: str) -> None:
    """Refuse a plain ``http://`` AWS endpoint on another machine, unless the user opted in.

    Over plain HTTP, every call's secrets (the signed request, an external id, the credentials
    and passwords AWS returns) cross the network in clear. Loopback (a local stand-in such as
    ``iampool.testing.FakeAws``) is allowed.

    Raises:
        ConfigError: naming the setting the endpoint came from and the two ways out.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or _loopback(parts.hostname or ""):
        return
    if os.environ.get(ALLOW_HTTP_ENDPOINTS) == "1":
        return
    where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # never a user:password@
    raise ConfigError(
        ConfigProblem(
            _endpoint_setting(service_id),
            f"sends {service_id} calls to {shown(where)} over plain HTTP, which carries their "
            "secrets in clear: use an https:// endpoint, or set "
            f"{ALLOW_HTTP_ENDPOINTS}=1 to allow plain HTTP to hosts other than this machine",
        ),
        context="AWS endpoint",
    )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: not resolved here (that would be a call of its own)
        return False


def _endpoint_setting(service_id: str) -> str:
    """The setting an endpoint came from, as botocore looks for it: the service's variable,
    the global one, else the shared config file's profile."""
    for name in (f"AWS_ENDPOINT_URL_{service_id.upper().replace(' ', '_')}", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return name
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    return f"endpoint_url (AWS config file, profile {profile})"


def _botocore_text(exc: BotoCoreError) -> str:
    """A botocore error's text for a message, without the parameter values botocore echoes
    (a ``ParamValidationError`` quotes the invalid value: an ExternalId, a password)."""
    if isinstance(exc, ParamValidationError):
        report = str(exc.kwargs.get("report", ""))
        # Each line names the parameter and the problem before ", value: <the value>, ...".
        lines = [line.split(", value:", 1)[0].strip() for line in report.splitlines()]
        text = "Parameter validation failed: " + "; ".join(line for line in lines if line)
    else:
        text = str(exc)
    return text if len(text) <= 300 else f"{text[:300]}…"


def _advice(code: str, message: str, hint: Mapping[str, str]) -> str:
    lowered = message.lower()
    if "external id" in lowered or "externalid" in lowered:
        return (
            "External ID mismatch: the role's trust policy must allow sts:AssumeRole for this "
            "identity with a condition sts:ExternalId equal to the configured external_id"
        )
    if "role chaining" in lowered:
        return (
            "The base credentials are themselves a role session and STS caps chained sessions "
            "at one hour: set session_duration to 3600 or less"
        )
    if code in THROTTLING_CODES:
        return "AWS throttled the call after the configured retries; try again shortly"
    return hint.get(code, "")


_ASSUME_ROLE_HINTS = {
    "AccessDenied": (
        "Check the role ARN and that its trust policy allows sts:AssumeRole from the calling "
        "identity (with sts:ExternalId when external_id is set)"
    ),
    "ExpiredToken": "The base AWS credentials have expired; refresh them",
    "ExpiredTokenException": "The base AWS credentials have expired; refresh them",
    "RegionDisabledException": "Activate STS in this region (IAM account settings) or use another",
    "InvalidClientTokenId": "The base AWS credentials are not valid",
}


class AwsSource(Protocol):
    """Everything the backends ask of AWS; one instance per process, used on one event loop.

    :class:`AioAwsSource` in production; unit tests inject a fake through
    ``CredentialCache(source=...)``. Methods raise ``CredentialError`` for AWS failures.
    """

    async def assume_role(
        self,
        *,
        role_arn: str,
        region: str,
        session_name: str,
        duration: int,
        external_id: str | None,
    ) -> AwsCredentials:
        """STS AssumeRole."""
        ...

    async def default_credentials(self, region: str) -> AwsCredentials:
        """A snapshot of the default credential chain (``expires_at`` None when unknown)."""
        ...

    async def prepare(self, region: str) -> None:
        """Build what the first credentials call for ``region`` needs (clients), ahead of it."""
        ...

    async def cluster_credentials(
        self,
        credentials: AwsCredentials,
        *,
        region: str,
        cluster_identifier: str,
        db_user: str,
        db_name: str | None,
        duration: int,
        auto_create: bool,
        db_groups: tuple[str, ...],
    ) -> RedshiftLogin:
        """Redshift provisioned GetClusterCredentials."""
        ...

    async def cluster_endpoint(
        self, credentials: AwsCredentials, *, region: str, cluster_identifier: str
    ) -> tuple[str, int]:
        """A provisioned cluster's endpoint (DescribeClusters)."""
        ...

    async def serverless_credentials(
        self,
        credentials: AwsCredentials,
        *,
        region: str,
        workgroup_name: str,
        db_name: str | None,
        duration: int,
    ) -> RedshiftLogin:
        """Redshift Serverless GetCredentials."""
        ...

    async def workgroup_endpoint(
        self, credentials: AwsCredentials, *, region: str, workgroup_name: str
    ) -> tuple[str, int]:
        """A Serverless workgroup's endpoint (GetWorkgroup)."""
        ...

    async def secret_value(
        self, credentials: AwsCredentials, *, region: str, secret_id: str
    ) -> SecretValue:
        """Secrets Manager GetSecretValue of the ``AWSCURRENT`` version."""
        ...

    async def aclose(self) -> None:
        """Close what the source opened (HTTP sessions)."""
        ...


class AioAwsSource:
    """:class:`AwsSource` on aiobotocore: clients built once and reused.

    One session per instance; STS clients per region; clients that act with assumed
    credentials per (service, region, access key), kept in a small LRU and closed on eviction.
    Must be used from a single event loop (the service loop of one process).
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        retry_mode: RetryMode = "standard",
        max_clients: int = 32,
    ) -> None:
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # botocore's "max_attempts" counts retries only; ours counts the first call too.
            retries={"total_max_attempts": max_attempts, "mode": retry_mode},
        )
        install()  # the SDK's DEBUG log loses the secrets these calls carry (see _redact)
        self._session = AioSession()
        self._clients: OrderedDict[
            tuple[str, str, str | None], asyncio.Future[tuple[Any, AsyncExitStack]]
        ] = OrderedDict()
        self._max_clients = max_clients

    async def _client(
        self, service: str, region: str, credentials: AwsCredentials | None = None
    ) -> Any:
        """A cached client for ``service`` in ``region``, acting as ``credentials`` when given.

        Built once, by a task of its own: callers that arrive meanwhile (``prepare`` and the
        first fetch) share it, and one whose deadline passes leaves it to finish for the next.
        """
        install()  # onto SDK loggers created since
        key = (service, region, credentials.access_key_id if credentials else None)
        building = self._clients.get(key)
        if building is None:
            kwargs: dict[str, Any] = {"region_name": region, "config": self._config}
            if credentials is not None:
                kwargs.update(
                    aws_access_key_id=credentials.access_key_id,
                    aws_secret_access_key=credentials.secret_access_key,
                    aws_session_token=credentials.session_token,
                )
            building = self._clients[key] = asyncio.ensure_future(self._build(service, kwargs))
            while len(self._clients) > self._max_clients:
                _, old = self._clients.popitem(last=False)
                await _close_client(old)
        else:
            self._clients.move_to_end(key)
        try:
            client, _ = await asyncio.shield(building)
        except Exception:
            if self._clients.get(key) is building:  # a failed build is not kept
                del self._clients[key]
            raise
        return client

    async def _forget(self, key: tuple[str, str, str | None]) -> None:
        """Close and drop a cached client, so that the next call builds it anew."""
        building = self._clients.pop(key, None)
        if building is not None:
            await _close_client(building)

    async def _build(self, service: str, kwargs: dict[str, Any]) -> tuple[Any, AsyncExitStack]:
        stack = AsyncExitStack()
        create: Any = self._session.create_client  # typed per service literal; ours is a str
        client = await stack.enter_async_context(create(service, **kwargs))
        try:  # the endpoint botocore resolved, from whichever setting: before any call on it
            check_endpoint(client.meta.endpoint_url, client.meta.service_model.service_id)
        except ConfigError:
            await stack.aclose()
            raise
        return client, stack

    async def assume_role(
        self,
        *,
        role_arn: str,
        region: str,
        session_name: str,
        duration: int,
        external_id: str | None,
    ) -> AwsCredentials:
        """Call STS AssumeRole; the credentials come back as one immutable snapshot."""
        params: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": session_name,
            "DurationSeconds": duration,
        }
        if external_id is not None:
            params["ExternalId"] = external_id
        with (
            aws_errors(
                "Unable to assume IAM role", f"{role_arn} in {region}", hint=_ASSUME_ROLE_HINTS
            ),
            in_flight(external_id),
        ):
            sts = await self._client("sts", region)
            try:
                with _called("AssumeRole", "STS", region):
                    response = await sts.assume_role(**params)
            except NoCredentialsError:
                # The client read the default chain when it was built, and found nothing (the
                # process started before its credentials were there): read it again next time.
                await self._forget(("sts", region, None))
                raise
        creds = response["Credentials"]
        expiration: datetime = creds["Expiration"]
        return AwsCredentials(
            access_key_id=creds["AccessKeyId"],
            secret_access_key=creds["SecretAccessKey"],
            session_token=creds["SessionToken"],
            expires_at=expiration.timestamp(),
            source=f"assume-role {role_arn}",
        )

    async def default_credentials(self, region: str) -> AwsCredentials:
        """A snapshot of the default credential chain (env, profile, web identity, IMDS, ...).

        botocore refreshes a refreshable chain itself and hands out a snapshot with at least its
        mandatory window (10 minutes) left, so the cache may keep one for a few minutes.
        """
        with aws_errors("Unable to load AWS credentials", f"from the default chain for {region}"):
            # The chain may call STS itself (web identity, SSO): its endpoint is checked first.
            await self._client("sts", region)
            credentials = await self._session.get_credentials()
            if credentials is None:
                raise NoCredentialsError()
            frozen = await credentials.get_frozen_credentials()
            if not frozen.access_key or not frozen.secret_key:
                raise NoCredentialsError()
        return AwsCredentials(
            access_key_id=frozen.access_key,
            secret_access_key=frozen.secret_key,
            session_token=frozen.token,
            expires_at=None,
            source="default chain",
        )

    async def prepare(self, region: str) -> None:
        """Build the STS client for ``region`` (loading botocore's data) ahead of the first call."""
        await self._client("sts", region)

    async def cluster_credentials(
        self,
        credentials: AwsCredentials,
        *,
        region: str,
        cluster_identifier: str,
        db_user: str,
        db_name: str | None,
        duration: int,
        auto_create: bool,
        db_groups: tuple[str, ...],
    ) -> RedshiftLogin:
        """Redshift provisioned ``GetClusterCredentials`` (DurationSeconds always sent)."""
        params: dict[str, Any] = {
            "ClusterIdentifier": cluster_identifier,
            "DbUser": db_user,
            "DurationSeconds": duration,
            "AutoCreate": auto_create,
        }
        if db_name is not None:
            params["DbName"] = db_name
        if db_groups:
            params["DbGroups"] = list(db_groups)
        response = await self._signed(
            credentials,
            "redshift",
            region,
            "GetClusterCredentials",
            params,
            "Failed to get Redshift cluster credentials",
            f"for cluster {cluster_identifier} in {region}",
        )
        expiration: datetime = response["Expiration"]
        return RedshiftLogin(response["DbUser"], response["DbPassword"], expiration.timestamp())

    async def cluster_endpoint(
        self, credentials: AwsCredentials, *, region: str, cluster_identifier: str
    ) -> tuple[str, int]:
        """The cluster's endpoint from ``DescribeClusters`` (never guessed from a host name)."""
        target = f"{cluster_identifier} in {region}"
        response = await self._signed(
            credentials,
            "redshift",
            region,
            "DescribeClusters",
            {"ClusterIdentifier": cluster_identifier},
            "Failed to describe Redshift cluster",
            target,
        )
        clusters = response.get("Clusters") or []
        endpoint = clusters[0].get("Endpoint") if clusters else None
        if not endpoint or not endpoint.get("Address"):
            raise CredentialError(
                f"Failed to describe Redshift cluster {target}: it has no endpoint yet (is it "
                "available?).",
                code="NoEndpoint",
                target=target,
            )
        return str(endpoint["Address"]), int(endpoint.get("Port") or 5439)

    async def serverless_credentials(
        self,
        credentials: AwsCredentials,
        *,
        region: str,
        workgroup_name: str,
        db_name: str | None,
        duration: int,
    ) -> RedshiftLogin:
        """Redshift Serverless ``GetCredentials`` for a workgroup."""
        params: dict[str, Any] = {"workgroupName": workgroup_name, "durationSeconds": duration}
        if db_name is not None:
            params["dbName"] = db_name
        response = await self._signed(
            credentials,
            "redshift-serverless",
            region,
            "GetCredentials",
            params,
            "Failed to get Redshift Serverless credentials",
            f"for workgroup {workgroup_name} in {region}",
        )
        expiration: datetime = response["expiration"]
        return RedshiftLogin(response["dbUser"], response["dbPassword"], expiration.timestamp())

    async def workgroup_endpoint(
        self, credentials: AwsCredentials, *, region: str, workgroup_name: str
    ) -> tuple[str, int]:
        """The workgroup's endpoint from ``GetWorkgroup``."""
        target = f"{workgroup_name} in {region}"
        response = await self._signed(
            credentials,
            "redshift-serverless",
            region,
            "GetWorkgroup",
            {"workgroupName": workgroup_name},
            "Failed to get Redshift Serverless workgroup",
            target,
        )
        endpoint = response.get("workgroup", {}).get("endpoint") or {}
        if not endpoint.get("address"):
            raise CredentialError(
                f"Failed to get Redshift Serverless workgroup {target}: it has no endpoint yet.",
                code="NoEndpoint",
                target=target,
            )
        return str(endpoint["address"]), int(endpoint.get("port") or 5439)

    async def secret_value(
        self, credentials: AwsCredentials, *, region: str, secret_id: str
    ) -> SecretValue:
        """Secrets Manager ``GetSecretValue`` (``AWSCURRENT``), signed with ``credentials``.

        The response's ``SecretString`` / ``SecretBinary`` leave the SDK's DEBUG log redacted
        (``_redact`` knows both fields).
        """
        response = await self._signed(
            credentials,
            "secretsmanager",
            region,
            "GetSecretValue",
            {"SecretId": secret_id, "VersionStage": "AWSCURRENT"},
            "Failed to get secret",
            f"{secret_id} in {region}",
        )
        text = response.get("SecretString")
        if text is None:
            binary = response.get("SecretBinary")
            try:
                text = bytes(binary).decode() if binary is not None else None
            except UnicodeDecodeError:
                text = None
        return SecretValue(
            arn=str(response.get("ARN") or secret_id),
            version_id=str(response.get("VersionId") or ""),
            text=text,
        )

    async def _signed(
        self,
        credentials: AwsCredentials,
        service: str,
        region: str,
        api: str,
        params: Mapping[str, Any],
        action: str,
        target: str,
    ) -> Any:
        """``api`` (``GetClusterCredentials``) of ``service``, signed with ``credentials``:
        their secrets in flight (out of the SDK's log), the call recorded (telemetry), its
        errors a ``CredentialError`` that says ``action`` (what failed) and ``target`` (for
        what), with the service's advice."""
        name, hint = _SIGNED[service]
        with aws_errors(action, target, hint=hint), _sending(credentials):
            client = await self._client(service, region, credentials)
            with _called(api, name, region):
                return await getattr(client, xform_name(api))(**params)

    async def aclose(self) -> None:
        """Close every client."""
        while self._clients:
            _, building = self._clients.popitem()
            await _close_client(building)


def _sending(credentials: AwsCredentials) -> contextlib.AbstractContextManager[None]:
    """A call signed with ``credentials``: their secret key and session token are in flight."""
    return in_flight(credentials.secret_access_key, credentials.session_token)


async def _close_client(building: asyncio.Future[tuple[Any, AsyncExitStack]]) -> None:
    if not building.done():
        building.cancel()
        await asyncio.gather(building, return_exceptions=True)
    elif not building.cancelled() and building.exception() is None:
        _, stack = building.result()
        await stack.aclose()


_SECRETS_HINTS = {
    "AccessDeniedException": "Check that the IAM policy allows secretsmanager:GetSecretValue on "
    "this secret (and kms:Decrypt on its key when it is encrypted with a customer managed key)",
    "ResourceNotFoundException": "Check secret_id and region (a secret in another account is "
    "named by its full ARN)",
    "DecryptionFailure": "Secrets Manager could not decrypt the secret: allow kms:Decrypt on "
    "the secret's KMS key for this identity",
}

_REDSHIFT_HINTS = {
    "AccessDenied": "Check that the IAM policy allows redshift:GetClusterCredentials (or "
    "redshift-serverless:GetCredentials) on this cluster/workgroup, database and user",
    "AccessDeniedException": "Check that the IAM policy allows redshift-serverless:GetCredentials "
    "on this workgroup",
    "ClusterNotFound": "Check cluster_identifier and region",
    "ClusterNotFoundFault": "Check cluster_identifier and region",
    "ResourceNotFoundException": "Check workgroup_name and region",
}

# The services called with a database's credentials: the name telemetry gives each, and the
# advice its errors get.
_SIGNED: dict[str, tuple[str, Mapping[str, str]]] = {
    "redshift": ("Redshift", _REDSHIFT_HINTS),
    "redshift-serverless": ("Redshift Serverless", _REDSHIFT_HINTS),
    "secretsmanager": ("Secrets Manager", _SECRETS_HINTS),
}
