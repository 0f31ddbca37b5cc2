"""iampool.testing: test your app against local stand-ins for AWS IAM database authentication.

``IamGateway`` is a TLS front for a real PostgreSQL or MySQL server that checks logins the way
RDS (IAM tokens) or Redshift (temporary passwords) does. The pytest plugin
(``iampool.testing.plugin``) wires it to the AWS stand-in as ready fixtures; see docs/testing.md.
"""

from ._gateway import IamGateway, PlaintextSecret
from ._verify import (
    CredentialAuthority,
    RedshiftPassword,
    RejectReason,
    SigningKey,
    verify_rds_token,
    verify_redshift_password,
)

__all__ = [
    "CredentialAuthority",
    "IamGateway",
    "PlaintextSecret",
    "RedshiftPassword",
    "RejectReason",
    "SigningKey",
    "verify_rds_token",
    "verify_redshift_password",
]
