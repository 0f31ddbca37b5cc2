"""The record of every secret ``FakeAws`` handed out, which is what an IAM gateway checks logins
against: access keys (with the identity each belongs to) and Redshift temporary passwords; and
the Secrets Manager values it stored or served, for the checks that no secret leaks."""

from __future__ import annotations

import hmac
import json
import secrets
import string
import threading
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "BASE_USER",
    "DEFAULT_ACCOUNT_ID",
    "IssuedKey",
    "IssuedRedshiftPassword",
    "IssuedSecrets",
]

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's default account
BASE_USER = "test"  # the IAM user the base credentials belong to
_KEY_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


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
    auto_create: bool = False
    """Whether the first login creates the database user: ``GetClusterCredentials`` with
    ``AutoCreate``, and every Redshift Serverless ``GetCredentials``."""


class IssuedSecrets:
    """Keys and passwords issued so far, looked up by access key id or by password.

    Thread-safe: the fake's request threads record, the gateway's loop thread looks up.
    """

    def __init__(self) -> None:
        self.base_key = IssuedKey(
            access_key_id="AKIA" + _random(_KEY_ALPHABET, 16),
            secret_access_key=_random(_SECRET_ALPHABET, 40),
            session_token=None,
            expires_at=None,
        )
        self.base_user_id = "AIDA" + _random(_KEY_ALPHABET, 17)
        self._lock = threading.Lock()
        self._keys: dict[str, IssuedKey] = {}
        self._identities: dict[str, str] = {}  # access key id -> ARN of its identity
        self._passwords: dict[str, IssuedRedshiftPassword] = {}
        self._secret_values: dict[str, None] = {}  # Secrets Manager texts and their passwords

    def add_key(self, key: IssuedKey, identity: str) -> None:
        """Remember ``key``, issued to the IAM identity whose ARN is ``identity``."""
        with self._lock:
            self._keys[key.access_key_id] = key
            self._identities[key.access_key_id] = identity

    def add_password(self, issued: IssuedRedshiftPassword) -> None:
        """Remember a temporary Redshift password."""
        with self._lock:
            self._passwords[issued.password] = issued

    def add_secret_value(self, text: str) -> None:
        """Remember a Secrets Manager secret's text and, in RDS's JSON, its password."""
        found = [text]
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict) and isinstance(document.get("password"), str):
            found.append(document["password"])
        with self._lock:
            self._secret_values.update(dict.fromkeys(found))

    def clear(self) -> None:
        """Forget everything issued (the base key stays)."""
        with self._lock:
            self._secret_values.clear()
            self._keys.clear()
            self._identities.clear()
            self._passwords.clear()

    def signing_key(self, access_key_id: str) -> IssuedKey | None:
        """The key issued under ``access_key_id`` (base key, STS session or IAM user key)."""
        if access_key_id == self.base_key.access_key_id:
            return self.base_key
        with self._lock:
            return self._keys.get(access_key_id)

    def caller_arn(self, access_key_id: str | None) -> str:
        """The ARN of the identity that signs with ``access_key_id`` (the base user by default):
        ``arn:aws:sts::<account>:assumed-role/<role>/<session>`` for an STS role session."""
        with self._lock:
            arn = self._identities.get(access_key_id or "")
        return arn or f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:user/{BASE_USER}"

    def redshift_password(self, password: str) -> IssuedRedshiftPassword | None:
        """The temporary Redshift password equal to ``password``, if it was issued."""
        with self._lock:
            issued = self._passwords.get(password)
        if issued is None or not hmac.compare_digest(issued.password, password):
            return None
        return issued

    def all_secrets(self) -> list[str]:
        """Secret keys (the base key's too), session tokens, Redshift passwords, and Secrets
        Manager texts with their passwords."""
        with self._lock:
            keys = [self.base_key, *self._keys.values()]
            passwords = list(self._passwords)
            values = list(self._secret_values)
        issued = [key.secret_access_key for key in keys]
        issued += [key.session_token for key in keys if key.session_token]
        return issued + passwords + values


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))
