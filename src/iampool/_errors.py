"""The one exception tree of iampool.

::

    IamPoolError                      anything raised by iampool
     ├── ConfigError (ValueError)     the aws_iam block or the DSN is invalid; lists every problem
     ├── IamAuthDisabledError         IAM auth requested while AWS_DATABASE_IAM_AUTH is off
     ├── CredentialError              STS / Redshift API failed: denied, throttled, unreachable
     ├── AuthTokenRejected            the database refused fresh IAM credentials (after one retry)
     ├── TlsNotOfferedError (ConnectionError)
     │                                the server did not offer TLS; no credential was sent
     └── PoolClosedError (RuntimeError)
                                      a connection was asked of an iampool pool that is closing

Messages name the role, cluster, workgroup, field or AWS error code involved, never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthTokenRejected",
    "ConfigError",
    "ConfigProblem",
    "CredentialError",
    "IamAuthDisabledError",
    "IamPoolError",
    "MissingExtraError",
    "PoolClosedError",
    "TlsNotOfferedError",
]


class IamPoolError(Exception):
    """Base class of every error iampool raises."""


@dataclass(frozen=True)
class ConfigProblem:
    """One invalid field: its name (dotted for nested values) and what is allowed instead."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(IamPoolError, ValueError):
    """The ``aws_iam`` block, a DSN or an argument is invalid.

    ``errors`` holds every problem found, not just the first one, so a user fixes them all at once.
    """

    def __init__(
        self, errors: list[ConfigProblem] | ConfigProblem, *, context: str = "aws_iam"
    ) -> None:
        self.errors: list[ConfigProblem] = [errors] if isinstance(errors, ConfigProblem) else errors
        self.context = context
        lines = "\n".join(f"  - {problem}" for problem in self.errors)
        noun = "problem" if len(self.errors) == 1 else "problems"
        super().__init__(f"invalid {context} configuration ({len(self.errors)} {noun}):\n{lines}")

    @property
    def fields(self) -> list[str]:
        """Names of the offending fields, in the order they were checked."""
        return [problem.field for problem in self.errors]


class IamAuthDisabledError(IamPoolError):
    """An ``aws_iam`` block is enabled but the ``AWS_DATABASE_IAM_AUTH`` feature flag is off."""


class CredentialError(IamPoolError):
    """An AWS call that produces database credentials failed.

    ``code`` is the AWS error code (``AccessDenied``, ``Throttling``, ...) or a local one
    (``EndpointConnectionError``, ``Timeout``); ``target`` names the role, cluster or workgroup.
    """

    def __init__(self, message: str, *, code: str | None = None, target: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.target = target


class AuthTokenRejected(IamPoolError):
    """The database refused IAM credentials, also after one retry with freshly minted ones.

    ``server_message`` is what the server said (for example ``PAM authentication failed for
    user "app"``); the token itself is never included.
    """

    def __init__(self, message: str, *, server_message: str, user: str, endpoint: str) -> None:
        super().__init__(message)
        self.server_message = server_message
        self.user = user
        self.endpoint = endpoint


class TlsNotOfferedError(IamPoolError, ConnectionError):
    """The server did not offer TLS, so iampool refused to send it a credential."""


class PoolClosedError(IamPoolError, RuntimeError):
    """A connection was asked of one of iampool's own pools (``MySQLPool``, ``RedshiftPool``)
    after its ``close()`` began; also raised to callers that were waiting for a connection then.

    A ``RuntimeError`` too, as aiomysql and redshift-connector users expect from a closed pool.
    """


class MissingExtraError(IamPoolError, ModuleNotFoundError):
    """The driver a DSN asks for is not installed; the message names the extra to install
    (``pip install 'iampool[mysql]'``). Raised before any AWS call.

    A ``ModuleNotFoundError`` too (``name`` is the missing module), so ``except ImportError``
    keeps working.
    """
