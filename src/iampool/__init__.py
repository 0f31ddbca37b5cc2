"""iampool: AWS IAM database authentication for asyncpg, aiomysql and Redshift pools."""

from ._config import AwsIamConfig, Backend
from ._credentials import DbAuth, DbCredentials
from ._errors import (
    AuthTokenRejected,
    ConfigError,
    ConfigProblem,
    CredentialError,
    IamAuthDisabledError,
    IamPoolError,
    TlsNotOfferedError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthTokenRejected",
    "AwsIamConfig",
    "Backend",
    "ConfigError",
    "ConfigProblem",
    "CredentialError",
    "DbAuth",
    "DbCredentials",
    "IamAuthDisabledError",
    "IamPoolError",
    "TlsNotOfferedError",
    "__version__",
]
