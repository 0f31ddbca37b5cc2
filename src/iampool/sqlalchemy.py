"""SQLAlchemy 2 glue: an ``async_creator`` that opens each DBAPI connection with IAM credentials.

::

    engine = create_async_engine(
        "postgresql+asyncpg://",
        async_creator=iampool.sqlalchemy.async_creator(dsn, aws_iam=cfg),
    )

SQLAlchemy keeps its own pool; every new connection it opens awaits fresh (cached) credentials.
Works with the ``postgresql+asyncpg``, ``postgresql+psycopg``, ``mysql+aiomysql`` and
``mysql+asyncmy`` dialects: give iampool a DSN (a string or SQLAlchemy ``URL``) with the same
driver as the engine's URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._cache import CredentialCache
from ._config import ConfigLike
from ._errors import ConfigError, ConfigProblem
from .pools import resolve
from .pools._dsn import SCHEMES

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["async_creator"]


def async_creator(
    dsn: str | URL,
    *,
    aws_iam: ConfigLike,
    cache: CredentialCache | None = None,
    connect_rate: float | None = None,
    **driver_kwargs: Any,
) -> Callable[[], Awaitable[Any]]:
    """A zero-argument coroutine function returning a new DBAPI connection of the DSN's driver
    (asyncpg, psycopg, aiomysql or asyncmy).

    ``dsn`` is a string or a SQLAlchemy ``URL`` (the engine's own URL will do when it names the
    host and database). The DSN, the configuration, ``connect_rate``, ``connect_timeout`` and
    the driver keywords are validated now, so mistakes surface at engine creation, before any
    AWS call; the TLS context is built once, here, for every connection the engine opens.

    Raises:
        ConfigError: invalid configuration, DSN or driver keyword, or a ``redshift://`` DSN
            (SQLAlchemy's Redshift dialects are synchronous; use ``iampool.create_pool``).
        MissingExtraError: the DSN's driver is not installed.
    """
    text = _dsn_text(dsn)
    scheme = text.partition("://")[0].lower()
    if scheme in SCHEMES and SCHEMES[scheme][0] == "redshift":
        supported = "postgresql:// and mysql:// DSNs (+asyncpg, +psycopg, +aiomysql, +asyncmy)"
        raise ConfigError(
            ConfigProblem("dsn", f"async_creator supports {supported}"), context="DSN"
        )
    plan = resolve(text, aws_iam, cache, driver_kwargs=driver_kwargs, connect_rate=connect_rate)

    async def creator() -> Any:
        return await plan.driver.connect(plan)

    return creator


def _dsn_text(dsn: str | URL) -> str:
    """A DSN string; a ``URL`` rendered with its password, if any, so that it is refused."""
    if isinstance(dsn, str):
        return dsn
    render = getattr(dsn, "render_as_string", None)
    if render is None:
        raise ConfigError(
            ConfigProblem("dsn", f"must be a string or a sqlalchemy URL, not {type(dsn).__name__}"),
            context="DSN",
        )
    text: str = render(hide_password=False)
    return text
