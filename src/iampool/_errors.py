"""The one exception tree of iampool.

::

    IamPoolError                      anything raised by iampool
     ├── ConfigError (ValueError)     the aws_iam block or the DSN is invalid; lists every problem
     ├── IamAuthDisabledError         IAM auth requested while AWS_DATABASE_IAM_AUTH is off
     ├── CredentialError              STS / Redshift API failed: denied, throttled, unreachable
     ├── AuthTokenRejected            the database refused fresh IAM credentials (after one retry)
     ├── ConnectThrottled             the database was still throttling logins when connect_timeout
     │                                ran out (the credentials were fine)
     ├── TlsNotOfferedError (ConnectionError)
     │                                the server did not offer TLS; no credential was sent
     ├── LoginTimeoutError (TimeoutError)
     │                                a login (TCP, TLS, authentication) outlasted connect_timeout
     └── PoolClosedError (RuntimeError)
                                      a connection was asked of an iampool pool that is closing

Messages name the role, cluster, workgroup, field or AWS error code involved, never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "AuthTokenRejected",
    "ConfigError",
    "ConfigProblem",
    "ConnectThrottled",
    "CredentialError",
    "IamAuthDisabledError",
    "IamPoolError",
    "LoginTimeoutError",
    "MissingExtraError",
    "PoolClosedError",
    "TlsNotOfferedError",
    "detached",
    "one_line",
    "shown",
]

E = TypeVar("E", bound=BaseException)


class IamPoolError(Exception):
    """Base class of every error iampool raises."""


# Messages stay short whatever the input: a field name, one problem and the whole ConfigError
# message are cut at these lengths (a 100 KB unknown key must not make a 100 KB log line).
MAX_FIELD = 80
MAX_PROBLEM = 400
_MAX_LISTED = 3500  # characters of problem lines in a ConfigError message; then "and N more"


def shown(value: object, limit: int = 60) -> str:
    """A value as an error message echoes it: its ``repr``, cut after ``limit`` characters
    with "…", so that no input makes a message long. Never call it on a secret."""
    if isinstance(value, str):
        cut = value if len(value) <= limit else f"{value[:limit]}…"
        text = repr(cut)
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        # repr() of a huge int is slow, and refused past 4300 digits (a ValueError)
        text = f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    else:
        import reprlib

        short = reprlib.Repr()
        short.maxstring = short.maxother = limit
        text = short.repr(value)
    return text if len(text) <= 4 * limit else f"{text[: 4 * limit]}…"


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (control characters escaped), cut after ``limit`` characters."""
    text = text if len(text) <= limit else f"{text[:limit]}…"
    if not text.isprintable():
        text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= 4 * limit else f"{text[: 4 * limit]}…"


@dataclass(frozen=True)
class ConfigProblem:
    """One invalid field: its name (dotted for nested values) and what is allowed instead.

    Both are kept short and on one line: a field name is cut after 80 characters, a message
    after 400.
    """

    field: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", one_line(str(self.field), MAX_FIELD))
        object.__setattr__(self, "message", one_line(str(self.message), MAX_PROBLEM))

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(IamPoolError, ValueError):
    """The ``aws_iam`` block, a DSN or an argument is invalid.

    ``errors`` holds every problem found, not just the first one, so a user fixes them all at
    once. The message lists them, up to about 3.5 KB, then says how many more there are: it
    stays under 4 KB whatever the input.
    """

    def __init__(
        self, errors: list[ConfigProblem] | ConfigProblem, *, context: str = "aws_iam"
    ) -> None:
        self.errors: list[ConfigProblem] = [errors] if isinstance(errors, ConfigProblem) else errors
        self.context = context
        lines: list[str] = []
        listed = 0
        for problem in self.errors:
            line = f"  - {problem}"
            if listed + len(line) > _MAX_LISTED:
                break
            lines.append(line)
            listed += len(line) + 1
        left = len(self.errors) - len(lines)
        if left:
            lines.append(f"  - and {left} more {'problem' if left == 1 else 'problems'}")
        noun = "problem" if len(self.errors) == 1 else "problems"
        text = "\n".join(lines)
        super().__init__(f"invalid {context} configuration ({len(self.errors)} {noun}):\n{text}")

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


class ConnectThrottled(IamPoolError):
    """The database kept refusing a login as throttled (RDS IAM authentication's "too many
    competing requests", Aurora DSQL's connection rate, SQLSTATE 53400) until
    ``connect_timeout`` ran out, though iampool tried again with growing, jittered pauses.

    The credentials were fine and stay cached. ``server_message`` is what the server said last,
    ``endpoint`` the address dialled, ``tries`` how many logins were refused.
    """

    def __init__(self, message: str, *, server_message: str, endpoint: str, tries: int) -> None:
        super().__init__(message)
        self.server_message = server_message
        self.endpoint = endpoint
        self.tries = tries


class TlsNotOfferedError(IamPoolError, ConnectionError):
    """The server did not offer TLS, so iampool refused to send it a credential."""


class LoginTimeoutError(IamPoolError, TimeoutError):
    """A login (TCP connect, TLS handshake and authentication) took longer than its
    ``connect_timeout``; the attempt was abandoned and its connection closed. Not retried.

    ``endpoint`` is the address dialled, ``timeout`` the bound in seconds.
    """

    def __init__(self, message: str, *, endpoint: str, timeout: float) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.timeout = timeout


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


_MAX_CHAIN = 64  # exceptions followed through __cause__ / __context__; the rest is cut off


def detached(error: E) -> E:
    """``error`` without traceback frames, and likewise every exception it chains.

    Where an error is made, frames hold secrets in their locals (a connect attempt's token in
    asyncpg's ``params`` or aiomysql's ``authresp``; an AWS call's base credentials, request
    parameters and the ExternalId), and error trackers that capture locals would ship them
    off; the type, message and attributes stay. A chain that loops back on itself is cut where
    it does, and an exception raised ``from None`` loses its ``__context__`` altogether (its
    raiser declared it irrelevant), so chain walkers end.
    """
    on_path: list[BaseException] = []
    done: set[int] = set()  # cause and context are often one exception: visit it once

    def walk(exc: BaseException) -> None:
        exc.__traceback__ = None
        if exc.__suppress_context__ and exc.__cause__ is None:
            exc.__context__ = None
        on_path.append(exc)
        for link in ("__cause__", "__context__"):
            chained = getattr(exc, link)
            if chained is None or id(chained) in done:
                continue
            if len(on_path) >= _MAX_CHAIN or any(chained is seen for seen in on_path):
                setattr(exc, link, None)  # a cycle, or a chain too long to be one error
            else:
                walk(chained)
        on_path.pop()
        done.add(id(exc))

    walk(error)
    return error
