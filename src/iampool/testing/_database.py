"""``IamDatabase``: what the pytest fixtures hand a test — a gateway-fronted database, ready."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._config import AwsIamConfig
from ._gateway import IamGateway

__all__ = ["IamDatabase"]


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
