"""iampool.testing: test your app against local stand-ins for AWS IAM database authentication.

``FakeAws`` is a local AWS (STS, IAM, RDS, Redshift, Redshift Serverless) with fault injection.
``IamGateway`` is a TLS front for a real PostgreSQL or MySQL server that checks logins the way
RDS (IAM tokens), Redshift (temporary passwords) or Aurora DSQL (DSQL tokens) does, or (password
mode) checks plain passwords itself, for logins kept in Secrets Manager. The pytest
plugin (``iampool.testing.plugin``) wires them together as ready fixtures; see docs/testing.md.
"""

from ._aws import FakeAws
from ._database import IamDatabase, SecretDatabase
from ._faults import Faults
from ._gateway import IamGateway
from ._issued import IssuedKey, IssuedRedshiftPassword
from ._logins import PlaintextSecret
from ._verify import (
    CredentialAuthority,
    RedshiftPassword,
    RejectReason,
    SigningKey,
    verify_dsql_token,
    verify_rds_token,
    verify_redshift_password,
)

__all__ = [
    "CredentialAuthority",
    "FakeAws",
    "Faults",
    "IamDatabase",
    "IamGateway",
    "IssuedKey",
    "IssuedRedshiftPassword",
    "PlaintextSecret",
    "RedshiftPassword",
    "RejectReason",
    "SecretDatabase",
    "SigningKey",
    "verify_dsql_token",
    "verify_rds_token",
    "verify_redshift_password",
]
