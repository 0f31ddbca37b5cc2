"""``IamDatabase``: what the pytest fixtures hand a test — a gateway-fronted database, ready;
``SecretDatabase``: the same for a password kept in Secrets Manager, with its rotations."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._config import AwsIamConfig
from ._gateway import IamGateway

if TYPE_CHECKING:
    from ._aws import FakeAws

__all__ = ["IamDatabase", "SecretDatabase"]


@dataclass(frozen=True)
class IamDatabase:
    """A real database behind an :class:`IamGateway`, with the ``aws_iam`` block to reach it.

    Pass ``dsn`` and ``config`` to ``iampool.create_pool`` / ``iampool.connect``; the DSN
    carries no password and verifies the gateway's certificate (``sslmode=verify-full``).
    """

    dsn: str
    """The gateway DSN for the login user: no password, TLS options included."""
    config: AwsIamConfig
    """``AwsIamConfig.from_extra(...)``: enabled, region, db_username, a role in the fake AWS."""
    gateway: IamGateway
    """The gateway, for its counters and faults (``accepted``, ``rejected``, ``reject_next``)."""
    ca_path: Path
    """PEM of the CA that signed the gateway's certificate."""
    user: str
    """The user the database sees: ``app``, or ``IAM:app`` behind the Redshift gateway."""


@dataclass(frozen=True)
class SecretDatabase:
    """A real database behind a password-mode :class:`IamGateway`, its login kept in a secret
    of the fake AWS (RDS's JSON), with the ``aws_iam`` block (``secret_id``) to reach it.

    :meth:`rotate` and :meth:`rotate_users` run a rotation as Secrets Manager's rotation
    functions do, with a window between the database's change and the secret's: the window in
    which clients still read the old value.
    """

    dsn: str
    """The gateway DSN (no user: it comes from the secret), TLS options included."""
    config: AwsIamConfig
    """``{"enabled": true, "secret_id": <ARN>}``."""
    gateway: IamGateway
    """The password-mode gateway, for its counters (``accepted``, ``rejected``)."""
    fake_aws: FakeAws
    """The fake AWS that holds the secret."""
    ca_path: Path
    """PEM of the CA that signed the gateway's certificate."""
    secret_id: str
    """The secret's ARN."""
    users: tuple[str, str]
    """The two login users an alternating-users rotation switches between (the first is the
    secret's at the start)."""

    def current(self) -> dict[str, str]:
        """The secret's ``AWSCURRENT`` value (user and password: keep it out of logs)."""
        document: dict[str, str] = json.loads(self.fake_aws.secret_string(self.secret_id))
        return document

    def rotate(self, *, window: float) -> None:
        """A single-user rotation: a new password is staged (``AWSPENDING``), set on the
        database (the old one stops working there), and after ``window`` seconds the secret
        follows (``AWSCURRENT``). Blocks for the window: from async code, run it in a worker
        thread (``anyio.to_thread.run_sync``)."""
        user = self.current()["username"]
        self._rotate(user, window)

    def rotate_users(self, *, window: float) -> str:
        """An alternating-users rotation: the other user of :attr:`users` gets a new password
        (the current user's keeps working), and after ``window`` seconds the secret names it;
        returns that user. Blocks as :meth:`rotate` does."""
        current = self.current()["username"]
        other = self.users[1] if current == self.users[0] else self.users[0]
        self._rotate(other, window)
        return other

    def _rotate(self, user: str, window: float) -> None:
        pending = {**self.current(), "username": user, "password": new_password()}
        version = self.fake_aws.stage_secret(self.secret_id, pending)  # createSecret
        self.gateway.set_password(user, pending["password"])  # setSecret
        time.sleep(window)  # testSecret, and the time the rotation takes
        self.fake_aws.finish_rotation(self.secret_id, version)  # finishSecret


def new_password() -> str:
    """A random password of 32 URL-safe characters."""
    return secrets.token_urlsafe(24)
