"""The connect plan: every input checked once, before any network call, into one immutable value.

:func:`resolve` reads the DSN, the ``aws_iam`` block, the driver's keyword arguments, pool
sizes, ``connect_rate`` and ``connect_timeout``; the driver adapter (:class:`DriverModule`) vets
its settings; the TLS decision is made and its ``SSLContext`` built; then, and only then, the
authenticator is built and its credentials start minting. What comes out, a :class:`Plan`, is
all a driver adapter needs: nothing downstream parses or checks again.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .._cache import CredentialCache, default_cache
from .._config import (
    DISABLED,
    SUPERSET_NO_REDSHIFT_SELECTOR,
    AwsIamConfig,
    ConfigLike,
    coerce_config,
    disabled_first,
)
from .._credentials import DbAuth
from .._errors import ConfigError, ConfigProblem, MissingExtraError, shown
from .._telemetry import LoginLabels
from ..auth import build_auth, prefetch
from ._dialer import RDS_ADVICE, REDSHIFT_ADVICE, ROTATION_ADVICE, Dialer, connect_rate_for
from ._dsn import SCHEMES, Driver, Target, dsn_endpoint, parse_target
from ._slots import check_sizes
from ._tls import Tls, TlsStyle, decide_tls

__all__ = [
    "DEFAULT_LOGIN_TIMEOUT",
    "DEFAULT_SIZES",
    "DSQL_CONNECT_RATE",
    "DSQL_MAX_LIFETIME",
    "EXTRAS",
    "DriverModule",
    "Plan",
    "Vetted",
    "driver_module",
    "refuse_owned",
    "refuse_unvetted",
    "require_driver",
    "resolve",
]

PoolT = TypeVar("PoolT", covariant=True)
ConnectionT = TypeVar("ConnectionT", covariant=True)

# Each driver's own pool defaults (min, max): asyncpg 10/10, psycopg_pool 4/4, aiomysql and
# asyncmy 1/10; RedshiftPool follows aiomysql.
DEFAULT_SIZES: dict[Driver, tuple[int, int]] = {
    "asyncpg": (10, 10),
    "psycopg": (4, 4),
    "aiomysql": (1, 10),
    "asyncmy": (1, 10),
    "redshift_connector": (1, 10),
}

# Seconds one login (TCP, TLS, authentication) may take, for every driver: never unbounded.
DEFAULT_LOGIN_TIMEOUT = 30.0

# Aurora DSQL's limits: 100 new connections per second per cluster (not adjustable), the
# default connect_rate of a DSQL plan; a session ends at one hour and a transaction at five
# minutes, so a pooled connection is not handed out past 50 minutes of age.
DSQL_CONNECT_RATE = 100.0
DSQL_MAX_LIFETIME = 3000.0
_MAX_LOGIN_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class Vetted:
    """A driver adapter's verdict on the caller's keywords: what each connection gets, and
    (for a pool) what the driver's pool gets."""

    connection: dict[str, Any]
    pool: dict[str, Any] = dataclasses.field(default_factory=dict)


class DriverModule(Protocol[PoolT, ConnectionT]):
    """A driver adapter: how to make one login attempt, recognise the server's refusals and
    plug the dialer into the driver's pool. One module per driver, in ``pools/``."""

    TLS_STYLE: TlsStyle  # how the driver takes the TLS decision
    REFUSED: Mapping[str, str]  # settings refused, with the reason (whether the driver has them)

    def vet(self, target: Target, driver_kwargs: Mapping[str, Any], *, pool: bool) -> Vetted:
        """The driver's settings from the DSN's options and the keywords; ``ConfigError`` for
        whatever would move the connection elsewhere, weaken it, or is iampool's to set."""
        ...

    def classify(self, exc: BaseException) -> Any:
        """The server's refusal in a driver error (a :class:`~._dialer.Refusal`), or None."""
        ...

    async def connect(self, plan: Plan) -> ConnectionT:
        """One connection, logged in through ``plan.dialer``."""
        ...

    async def create_pool(self, plan: Plan) -> PoolT:
        """The driver's pool whose every new connection logs in through ``plan.dialer``."""
        ...

    async def close_pool(self, pool: Any) -> None:
        """Close a pool this module made, waiting for its connections (bounded)."""
        ...


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """Everything a connection or pool needs, validated: where (``target``), as whom
    (``auth``), with which driver settings, over which TLS, how fast and how long.

    Built by :func:`resolve`; immutable; safe to share between connections and tasks.
    """

    target: Target
    auth: DbAuth
    driver: DriverModule[Any, Any]
    settings: Vetted
    tls: Tls
    login_timeout: float
    dialer: Dialer
    min_size: int
    max_size: int
    max_lifetime: float | None = None  # seconds a pooled connection is handed out; None: ever

    @property
    def config(self) -> AwsIamConfig:
        """The ``aws_iam`` configuration the plan authenticates with."""
        return self.auth.config


def refuse_owned(driver_kwargs: Mapping[str, Any], owned: tuple[str, ...]) -> None:
    """Driver keyword arguments that iampool sets itself (host, user, password, ...) are errors:
    an override would connect elsewhere than the token was signed for, or drop IAM.

    Raises:
        ConfigError: naming each such keyword.
    """
    clashes = sorted(set(owned) & set(driver_kwargs))
    if clashes:
        raise ConfigError(
            [ConfigProblem(name, "is set by iampool from the DSN and aws_iam") for name in clashes],
            context="driver keyword",
        )


def refuse_unvetted(
    driver_kwargs: Mapping[str, Any], vetted: frozenset[str], label: str, context: str
) -> None:
    """A setting the installed driver takes but iampool has not judged (a newer driver's) is
    refused until it is: it might move the connection or weaken it.

    Raises:
        ConfigError: naming each such setting.
    """
    unvetted = [name for name in driver_kwargs if name not in vetted]
    if unvetted:
        raise ConfigError(
            [
                ConfigProblem(name, f"is a setting of {label} that iampool has not vetted for "
                                    "IAM connections; open an issue if you need it")
                for name in unvetted
            ],
            context=context,
        )  # fmt: skip


def driver_module(driver: str) -> DriverModule[Any, Any]:
    """The adapter module for a driver, imported on first use.

    Raises:
        ConfigError: a driver iampool has no adapter for.
    """
    name = _MODULES.get(driver)
    if name is None:
        known = ", ".join(sorted(_MODULES))
        raise ConfigError(
            ConfigProblem("driver", f"{shown(driver)} is not one iampool supports ({known})"),
            context="DSN",
        )
    module: DriverModule[Any, Any] = importlib.import_module(f"{__package__}.{name}")
    return module


_MODULES: dict[str, str] = {
    "asyncpg": "asyncpg",
    "psycopg": "psycopg",
    "aiomysql": "aiomysql",
    "asyncmy": "asyncmy",
    "redshift_connector": "redshift_connector",
}


# OpenTelemetry's db.system.name for each engine (Aurora DSQL speaks PostgreSQL's protocol).
_DB_SYSTEMS: dict[str, str] = {
    "postgresql": "postgresql",
    "mysql": "mysql",
    "redshift": "aws.redshift",
}


def resolve(
    dsn: str,
    aws_iam: ConfigLike,
    cache: CredentialCache | None,
    *,
    driver: Driver | None = None,
    driver_kwargs: Mapping[str, Any] | None = None,
    pool: bool = False,
    min_size: int | None = None,
    max_size: int | None = None,
    connect_rate: Any = None,
) -> Plan:
    """Check everything about a connection or pool and build its :class:`Plan`.

    ``driver``: the driver a typed entry point serves; a DSN naming another one is refused.
    ``driver_kwargs``: the caller's keyword arguments for the driver (a pool's when ``pool``).
    Nothing touches the network before every check passed; then the credentials start minting
    (the connections are on their way).

    Raises:
        ConfigError: invalid configuration, DSN, driver keyword, pool size, ``connect_rate`` or
            ``connect_timeout``, or a DSN for another driver.
        MissingExtraError: the DSN's driver is not installed.
    """
    kwargs = dict(driver_kwargs or {})
    if kwargs:
        _refuse_driver_spellings(dsn, kwargs, pool=pool)
    config = _config(dsn, aws_iam)
    target = parse_target(dsn, config)
    _check_backend(target, config, driver)
    module = driver_module(target.driver)
    require_driver(target.driver, dsn)
    login_timeout, target = _login_timeout(target, kwargs)
    problems = _rate_problems(connect_rate)
    sizes = (0, 0)  # a connection's plan has no pool
    if pool:
        default_min, default_max = DEFAULT_SIZES[target.driver]
        sizes = (
            default_min if min_size is None else min_size,
            default_max if max_size is None else max_size,
        )
        check_sizes(*sizes)
    if problems:
        raise ConfigError(problems, context="argument")
    # A typo ("did you mean ...?"), but a refused setting is refused with its reason.
    _refuse_unknown_keywords(target.driver, kwargs.keys() - module.REFUSED.keys(), pool=pool)
    vetted = module.vet(target, kwargs, pool=pool)
    tls = decide_tls(target, module.TLS_STYLE, kwargs.get("ssl"))
    auth = build_auth(  # parse_target checked the host and port already
        config,
        host=target.signed_host,  # the endpoint's name when the DSN's host is a tunnel
        port=target.signed_port,
        cache=cache if cache is not None else default_cache(),
        engine=target.engine,
    )
    prefetch(auth)  # a pool or a connection is on its way: its credentials can start now
    redshift = target.engine == "redshift"
    dsql = config.backend == "dsql"
    secret = config.backend == "secrets-manager"
    dialer = Dialer(
        auth=auth,
        classify=module.classify,
        timeout=login_timeout,
        rate=connect_rate_for(
            target.endpoint,
            DSQL_CONNECT_RATE if connect_rate is None and dsql else connect_rate,
        ),
        tls=tls,
        endpoint=target.endpoint,
        user=(
            f"from secret {config.secret_id}"
            if secret
            else (config.db_username or config.workgroup_name or "")
            if redshift
            else target.user or ""
        ),
        advice=ROTATION_ADVICE if secret else REDSHIFT_ADVICE if redshift else RDS_ADVICE,
        counts_logins=getattr(module, "COUNTS_LOGINS", False),
        labels=LoginLabels.of(
            system=_DB_SYSTEMS[target.engine],
            driver=target.driver,
            host=target.host,
            port=target.port,
            endpoint=target.endpoint,
            database=target.database or "",
        ),
    )
    return Plan(
        target=target,
        auth=auth,
        driver=module,
        settings=vetted,
        tls=tls,
        login_timeout=login_timeout,
        dialer=dialer,
        min_size=sizes[0],
        max_size=sizes[1],
        max_lifetime=DSQL_MAX_LIFETIME if dsql else None,
    )


def _config(dsn: str, aws_iam: ConfigLike) -> AwsIamConfig:
    try:
        config = coerce_config(aws_iam)
    except ConfigError as exc:
        first = disabled_first(exc, aws_iam)
        if first is not exc:
            raise first from None
        if not _is_redshift(dsn) or _has_redshift_selector(aws_iam):
            raise
        # Without a selector the block reads as an RDS one, which asks for db_username; for a
        # redshift:// DSN the missing piece is the selector, as Superset says.
        others = [
            problem
            for problem in exc.errors
            if not (problem.field == "db_username" and problem.message.startswith("is required"))
        ]
        raise ConfigError([_NO_SELECTOR, *others]) from None
    if not config.enabled:
        raise ConfigError(DISABLED)
    return config


def _check_backend(target: Target, config: AwsIamConfig, driver: Driver | None) -> None:
    if driver is not None and target.driver != driver:
        schemes = ", ".join(f"{name}://" for name, (_, known) in SCHEMES.items() if known == driver)
        message = (
            f"is a {target.driver} DSN, but this entry point serves {driver} ({schemes}); "
            f"use iampool.create_pool or the {target.driver} entry point"
        )
        raise ConfigError(ConfigProblem("dsn", message), context="DSN")
    if target.engine == "redshift" and config.backend == "rds":
        raise ConfigError(_NO_SELECTOR)
    if config.backend == "dsql" and target.engine != "postgresql":
        raise ConfigError(
            ConfigProblem("dsn", "aws_iam describes Aurora DSQL, which speaks PostgreSQL: use a "
                                 "postgresql:// or postgresql+psycopg:// DSN"),
            context="DSN",
        )  # fmt: skip
    if target.engine != "redshift" and config.backend not in ("rds", "dsql", "secrets-manager"):
        raise ConfigError(
            ConfigProblem("dsn", f"aws_iam describes {config.backend}; use a redshift:// DSN"),
            context="DSN",
        )


def _login_timeout(target: Target, kwargs: dict[str, Any]) -> tuple[float, Target]:
    """The bound of one login, from ``connect_timeout=`` (every driver), the DSN's
    ``?connect_timeout=`` or asyncpg's ``timeout=``; taken out of both, since the dialer
    enforces it and each adapter hands it to its driver in the driver's terms.

    Raises:
        ConfigError: not a number of seconds above 0 and at most an hour.
    """
    problems: list[ConfigProblem] = []
    found: float | None = None
    sources: list[tuple[str, Any]] = []
    if "connect_timeout" in kwargs:
        sources.append(("connect_timeout", kwargs.pop("connect_timeout")))
    if target.driver == "asyncpg" and "timeout" in kwargs:
        sources.append(("timeout", kwargs.pop("timeout")))
    if "connect_timeout" in target.options:
        options = dict(target.options)
        sources.append(("connect_timeout", options.pop("connect_timeout")))
        target = dataclasses.replace(target, options=options)
    for field, value in sources:
        seconds = _seconds(value)
        if seconds is None:
            shown_value = shown(value) if not isinstance(value, str) or value.isascii() else ""
            problems.append(
                ConfigProblem(field, f"must be a number of seconds above 0 and at most "
                                     f"{_MAX_LOGIN_TIMEOUT:g} (it bounds one whole login), "
                                     f"got {shown_value or 'a non-number'}")
            )  # fmt: skip
        elif found is None:
            found = seconds
    if problems:
        raise ConfigError(problems, context="argument")
    return (DEFAULT_LOGIN_TIMEOUT if found is None else found), target


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        whole, _, fraction = text.partition(".")
        digits = whole + fraction
        if not (0 < len(text) <= 12 and digits.isascii() and digits.isdigit()):
            return None
        value = float(text)
    if not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and 0 < seconds <= _MAX_LOGIN_TIMEOUT else None


def _rate_problems(rate: Any) -> list[ConfigProblem]:
    if rate is None:
        return []
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or rate <= 0
    ):
        return [
            ConfigProblem("connect_rate", "must be a positive number of new connections per "
                                          f"second (RDS advises under 200), got {shown(rate)}")
        ]  # fmt: skip
    return []


# Each driver's pip extra, what to call it, and the modules it brings. They are imported before
# any AWS call, so a missing one names the install line instead of failing at the first connect.
EXTRAS: dict[Driver, tuple[str, str, tuple[str, ...]]] = {
    "asyncpg": ("postgres", "asyncpg", ("asyncpg",)),
    "psycopg": ("psycopg", "psycopg 3 and psycopg-pool", ("psycopg", "psycopg_pool")),
    "aiomysql": ("mysql", "aiomysql", ("pymysql", "aiomysql")),
    "asyncmy": ("asyncmy", "asyncmy", ("asyncmy",)),
    "redshift_connector": ("redshift", "redshift-connector", ("redshift_connector",)),
}


def require_driver(driver: Driver, dsn: str = "") -> None:
    """Import a driver's modules, or say which extra installs them.

    Raises:
        MissingExtraError: a module of the driver (or one it needs) is not installed.
    """
    extra, label, modules = EXTRAS[driver]
    for name in modules:
        if sys.modules.get(name) is not None:
            continue  # imported already (import_module costs ~100 us even then)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            scheme = dsn.partition("://")[0] if "://" in dsn else driver
            raise MissingExtraError(
                f"{scheme}:// DSNs need {label}, which is not installed (No module named "
                f"{exc.name!r}): pip install 'iampool[{extra}]' (from a checkout: "
                f"pip install '.[{extra}]')",
                name=exc.name,
            ) from exc


# Other drivers' spellings of what iampool takes otherwise, refused before any AWS call with
# iampool's spelling. Pool sizes: one spelling for every driver. Endpoint, user and database:
# they come from the DSN (which the token is signed for) and the aws_iam block, never from a
# second source that could disagree with them.
_SIZE_SPELLINGS = {"minsize": "min_size", "maxsize": "max_size"}
_DSN_PARTS = ("host", "port", "user", "database", "db", "dbname")


def _refuse_driver_spellings(dsn: str, driver_kwargs: Mapping[str, Any], *, pool: bool) -> None:
    scheme = dsn.partition("://")[0] if "://" in dsn else "postgresql"
    engine, driver = SCHEMES.get(scheme.lower(), ("postgresql", "asyncpg"))
    problems: list[ConfigProblem] = []
    for name, spelling in _SIZE_SPELLINGS.items():
        if name in driver_kwargs:
            message = (
                f"is aiomysql's spelling: pass {spelling}="
                if pool
                else f"is a pool setting (create_pool's {spelling}=); connect opens one connection"
            )
            problems.append(ConfigProblem(name, message))
    problems.extend(_login_problems(scheme, engine, dsn, driver_kwargs))
    connection_kwargs = driver_kwargs.get("kwargs")
    if pool and driver == "psycopg" and isinstance(connection_kwargs, Mapping):
        # psycopg_pool's kwargs= are libpq settings of every connection: the same rules.
        problems.extend(
            ConfigProblem(f"kwargs.{problem.field}", problem.message)
            for problem in _login_problems(scheme, engine, dsn, connection_kwargs)
        )
    if problems:
        raise ConfigError(problems, context="driver keyword")


def _login_problems(
    scheme: str, engine: str, dsn: str, driver_kwargs: Mapping[str, Any]
) -> list[ConfigProblem]:
    """Keywords for the endpoint, the login or the database, which the DSN and aws_iam say."""
    problems: list[ConfigProblem] = []
    given = [name for name in _DSN_PARTS if name in driver_kwargs]
    if given:
        example = _dsn_example(scheme, engine, dsn, driver_kwargs)
        problems.extend(
            ConfigProblem(name, _dsn_part_message(name, engine, example)) for name in given
        )
    if "password" in driver_kwargs:
        problems.append(ConfigProblem("password", "is not used: IAM authentication supplies it"))
    for name in ("dsn", "conninfo"):
        if name in driver_kwargs:
            problems.append(ConfigProblem(name, "is the first argument, the DSN"))
    return problems


def _dsn_example(scheme: str, engine: str, dsn: str, driver_kwargs: Mapping[str, Any]) -> str:
    """The DSN that says what the keywords tried to: theirs, and the DSN's own host and port
    when they pass the host rules. Nothing else of the DSN is known to be safe to repeat (its
    query may hold ``sslpassword`` or a client secret, its authority a password that a ``/``,
    ``?`` or ``#`` cut short)."""
    database = next(
        (driver_kwargs[name] for name in ("database", "db", "dbname") if name in driver_kwargs),
        "DATABASE",
    )
    own_host, own_port = dsn_endpoint(dsn)
    host = str(driver_kwargs.get("host", own_host or "HOST"))
    host = f"[{host}]" if ":" in host else host  # IPv6
    port = driver_kwargs.get("port", own_port)
    user = driver_kwargs.get("user")
    login = f"{user}@" if user and engine != "redshift" else ""
    query = "?..." if "?" in dsn else ""
    return f"{scheme}://{login}{host}{'' if port is None else f':{port}'}/{database}{query}"


def _dsn_part_message(name: str, engine: str, example: str) -> str:
    if engine == "redshift":
        if name == "user":
            return "is not used: the login user comes from the Redshift API (aws_iam)"
        if name in ("database", "db", "dbname"):
            return "is not used: the database is aws_iam.db_name (the DSN's path may repeat it)"
        return f"goes in the DSN, or leave the host out to look the endpoint up: {example}"
    if name in ("host", "port"):
        return f"goes in the DSN, the endpoint the IAM token is signed for: {example}"
    if name == "user":
        return f"is aws_iam.db_username; the DSN may repeat it: {example}"
    return f"goes in the DSN as its path: {example}"


def _refuse_unknown_keywords(driver: Driver, names: Iterable[str], *, pool: bool) -> None:
    accepted = _accepted_keywords(driver, pool=pool)
    if accepted is None:
        return
    unknown = sorted(name for name in names if name not in accepted)
    if unknown:
        label = EXTRAS[driver][1]
        raise ConfigError(
            [ConfigProblem(name, _unknown_message(name, label, accepted)) for name in unknown],
            context="driver keyword",
        )


def _unknown_message(name: str, label: str, accepted: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(accepted), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"is not a keyword {label} takes{hint}"


@functools.cache
def _accepted_keywords(driver: Driver, *, pool: bool) -> frozenset[str] | None:
    """Every keyword the driver's connect (and pool) takes, read from the installed driver's
    signatures, plus iampool's ``connect_timeout``; None when they take any (psycopg's
    connections: libpq settings)."""
    sources: list[Any]
    names: set[str] = {"connect_timeout"}
    if driver == "asyncpg":
        import asyncpg

        sources = [asyncpg.connect, *([asyncpg.create_pool] if pool else [])]
    elif driver == "aiomysql":
        from aiomysql.connection import Connection

        sources = [Connection.__init__]
        names.update(("pool_recycle", "echo") if pool else ())
    elif driver == "asyncmy":
        import asyncmy

        sources = [asyncmy.connect, *([asyncmy.Pool] if pool else [])]
    elif driver == "psycopg":
        if not pool:
            return None
        from psycopg_pool import AsyncConnectionPool

        sources = [AsyncConnectionPool.__init__]
    else:
        import redshift_connector

        sources = [redshift_connector.connect]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for source in sources:
        try:
            parameters = inspect.signature(source).parameters.values()
        except (TypeError, ValueError):  # no signature to read: let the driver judge
            return None
        names.update(parameter.name for parameter in parameters if parameter.kind in named)
    names.discard("self")
    return frozenset(names)


_NO_SELECTOR = ConfigProblem("aws_iam", SUPERSET_NO_REDSHIFT_SELECTOR)


def _is_redshift(dsn: str) -> bool:
    scheme, separator, _ = dsn.partition("://")
    known = SCHEMES.get(scheme.lower()) if separator else None
    return known is not None and known[0] == "redshift"


def _has_redshift_selector(aws_iam: ConfigLike) -> bool:
    """Whether the raw block names a cluster or a workgroup (it may be invalid otherwise)."""
    block: Any = aws_iam
    if isinstance(block, (str, bytes, bytearray)):
        try:
            block = json.loads(block)
        except (ValueError, RecursionError):
            return True  # not JSON: nothing to say about selectors, report the JSON error
    if isinstance(block, Mapping) and "aws_iam" in block:  # as AwsIamConfig.from_extra reads it
        block = block["aws_iam"]
    if not isinstance(block, Mapping):
        return True
    return block.get("workgroup_name") is not None or block.get("cluster_identifier") is not None
