"""iampool: AWS IAM database authentication for asyncpg, aiomysql and Redshift pools."""

from ._cache import CacheStats, CredentialCache, default_cache
from ._config import AwsIamConfig, Backend
from ._credentials import DbAuth, DbCredentials
from ._errors import (
    AuthTokenRejected,
    ConfigError,
    ConfigProblem,
    ConnectThrottled,
    CredentialError,
    IamAuthDisabledError,
    IamPoolError,
    LoginTimeoutError,
    MissingExtraError,
    PoolClosedError,
    TlsNotOfferedError,
)
from ._telemetry import configure_telemetry
from .auth import auth_for
from .pools import PendingPool, connect, create_pool
from .pools.aiomysql import MySQLPool
from .pools.redshift_connector import RedshiftConnection, RedshiftPool

__version__ = "0.1.0"

__all__ = [
    "AuthTokenRejected",
    "AwsIamConfig",
    "Backend",
    "CacheStats",
    "ConfigError",
    "ConfigProblem",
    "ConnectThrottled",
    "CredentialCache",
    "CredentialError",
    "DbAuth",
    "DbCredentials",
    "IamAuthDisabledError",
    "IamPoolError",
    "LoginTimeoutError",
    "MissingExtraError",
    "MySQLPool",
    "PendingPool",
    "PoolClosedError",
    "RedshiftConnection",
    "RedshiftPool",
    "TlsNotOfferedError",
    "__version__",
    "auth_for",
    "configure_telemetry",
    "connect",
    "create_pool",
    "default_cache",
]
