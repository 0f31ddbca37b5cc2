"""Superset glue: Superset's own IAM logins through iampool's cache, and the ``aws_iam`` block.

For Apache Superset itself (synchronous), :func:`install` swaps the AWS steps of
``superset/db_engine_specs/aws_iam.py`` (AssumeRole, the RDS token, the Redshift credentials)
for iampool's cache, leaving Superset's flag check, validation, SSL handling and messages as
they are. For async forks, :func:`iam_config` reads the block and enforces the flag.
:func:`do_connect` serves any synchronous SQLAlchemy engine.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._cache import CredentialCache, default_cache
from ._config import AwsIamConfig, ConfigLike, coerce_config
from ._credentials import DbAuth
from ._errors import ConfigError, ConfigProblem, CredentialError, IamAuthDisabledError, IamPoolError
from .auth import auth_for, prefetch
from .pools._dsn import parse_target
from .pools._tls import REDSHIFT_SSLMODES, libpq_tls, tls_context
from .pools.redshift_connector import vet as vet_redshift_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "FEATURE_FLAG",
    "TESTED_VERSIONS",
    "DoConnect",
    "do_connect",
    "iam_config",
    "install",
    "uninstall",
]

log = logging.getLogger("iampool")

FEATURE_FLAG = "AWS_DATABASE_IAM_AUTH"

_DISABLED_MESSAGE = (
    "AWS IAM database authentication is not enabled. "
    f'Set the {FEATURE_FLAG} feature flag to True (FEATURE_FLAGS = {{"{FEATURE_FLAG}": True}} '
    "in superset_config.py) to enable it."
)


def iam_config(
    encrypted_extra: str | bytes | Mapping[str, Any] | None,
    feature_flags: Mapping[str, Any],
) -> AwsIamConfig | None:
    """The database's IAM configuration, or ``None`` when it does not use IAM authentication.

    Returns ``None`` when there is no ``aws_iam`` block or it has ``"enabled": false``.

    Raises:
        IamAuthDisabledError: the block is enabled but ``AWS_DATABASE_IAM_AUTH`` is not true.
        ConfigError: the JSON or the block is invalid (every problem listed).
    """
    if encrypted_extra is None or encrypted_extra in ("", b""):
        return None
    if isinstance(encrypted_extra, (str, bytes, bytearray)):
        try:
            extra = json.loads(encrypted_extra)
        except (ValueError, RecursionError):
            # from_extra words the error (with line and column) without echoing the text.
            return AwsIamConfig.from_extra(encrypted_extra)
    else:
        extra = encrypted_extra
    if not isinstance(extra, Mapping):
        raise ConfigError(ConfigProblem("encrypted_extra", "must be a JSON object"))
    block = extra.get("aws_iam")
    if block is None:
        return None
    if isinstance(block, Mapping) and block.get("enabled") is False:
        return None
    config = AwsIamConfig.from_extra({"aws_iam": block})
    if not config.enabled:
        return None
    if feature_flags.get(FEATURE_FLAG) is not True:
        raise IamAuthDisabledError(_DISABLED_MESSAGE)
    return config


# --- Superset itself -------------------------------------------------------------------------

#: Superset releases (major.minor) :func:`install` was tested with.
TESTED_VERSIONS = ("6.1",)

_MIXIN = "superset.db_engine_specs.aws_iam"
# The seam: each classmethod of AWSIAMAuthMixin replaced or wrapped, its parameters (after
# cls), and what its body must still call for the replacement of those steps to take effect.
_SEAM: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "get_iam_credentials": (("role_arn", "region", "external_id", "session_duration"), ()),
    "generate_rds_auth_token": (("credentials", "hostname", "port", "username", "region"), ()),
    "generate_redshift_credentials": (("credentials", "workgroup_name", "db_name", "region"), ()),
    "generate_redshift_cluster_credentials": (
        ("credentials", "cluster_identifier", "db_user", "db_name", "region", "auto_create"),
        (),
    ),
    "_apply_iam_authentication": (
        ("database", "params", "iam_config", "ssl_args", "default_port"),
        ("get_iam_credentials", "generate_rds_auth_token"),
    ),
    "_apply_redshift_iam_authentication": (
        ("database", "params", "iam_config"),
        ("get_iam_credentials", "generate_redshift_credentials",
         "generate_redshift_cluster_credentials"),
    ),
}  # fmt: skip
# Superset's RoleSessionName: CloudTrail shows the same sessions as before install().
_SESSION_NAME = "superset-iam-session"
_REDSHIFT_PORT = 5439


@dataclasses.dataclass(frozen=True)
class _Installed:
    mixin: Any
    originals: dict[str, Any]  # name -> the classmethod object from the class's __dict__
    cache: CredentialCache
    per_connection: bool


_state: _Installed | None = None
_state_lock = threading.Lock()
# The Redshift endpoint of the login being applied: Superset's Redshift steps are not told it.
_redshift_endpoint: contextvars.ContextVar[tuple[str | None, int]] = contextvars.ContextVar(
    "iampool_redshift_endpoint", default=(None, _REDSHIFT_PORT)
)


def install(
    app: Any = None,
    *,
    strict: bool = False,
    per_connection: bool = False,
    cache: CredentialCache | None = None,
) -> bool:
    """Route Apache Superset's IAM logins (Aurora PostgreSQL/MySQL, Redshift provisioned and
    Serverless) through iampool's cache. Call it from ``superset_config.py``'s
    ``FLASK_APP_MUTATOR`` with the app.

    Only the AWS steps change (one shared AssumeRole per role, a cached token, cached Redshift
    credentials); Superset's feature flag, validation, SSL settings and messages stay its own,
    and an iampool error becomes Superset's ``SupersetSecurityException`` in its wording.

    Args:
        app: Superset's Flask app: the IAM databases it holds start minting now (in the
            background), so the first login does not pay for AWS clients and AssumeRole.
        strict: raise instead of returning False on a Superset this was not tested with.
        per_connection: read a current token at every DBAPI connect (SQLAlchemy's
            ``do_connect``), for engines that outlive a token (pooled engines).
        cache: the ``CredentialCache`` to use (default: :func:`iampool.default_cache`).

    Returns:
        True once installed (again: options updated); False when Superset is missing, or is a
        version or has a seam this was not tested with (logged as a warning).

    Raises:
        IamPoolError: ``strict`` and Superset's version or seam is not the tested one.
    """
    global _state
    problem = _seam_problem()
    if problem is not None:
        message = f"iampool.superset.install() left Superset's IAM logins as they are: {problem}"
        if strict:
            raise IamPoolError(message)
        log.warning("%s", message)
        return False
    mixin = importlib.import_module(_MIXIN).AWSIAMAuthMixin
    with _state_lock:
        originals = _state.originals if _state is not None else {n: vars(mixin)[n] for n in _SEAM}
        _state = _Installed(mixin, originals, cache or default_cache(), per_connection)
        _authenticator.cache_clear()
        for name, replacement in _REPLACEMENTS.items():
            setattr(mixin, name, classmethod(replacement))  # type: ignore[arg-type]
        _listen(per_connection)
    if app is not None:
        _prefetch(app)
    return True


def uninstall() -> None:
    """Give Superset its own IAM logins back (safe to call when not installed)."""
    global _state
    with _state_lock:
        if _state is None:
            return
        for name, original in _state.originals.items():
            setattr(_state.mixin, name, original)
        _listen(False)
        _state = None
        _authenticator.cache_clear()


def _seam_problem() -> str | None:
    """Why the installed Superset is not the one :func:`install` was tested with, if it is not."""
    try:
        version = importlib.metadata.version("apache-superset")
    except importlib.metadata.PackageNotFoundError:
        return "apache-superset is not installed"
    if ".".join(version.split(".")[:2]) not in TESTED_VERSIONS:
        tested = ", ".join(f"{tested}.*" for tested in TESTED_VERSIONS)
        return f"apache-superset {version} is not a tested version ({tested})"
    try:
        mixin = importlib.import_module(_MIXIN).AWSIAMAuthMixin
    except (ImportError, AttributeError) as exc:
        return f"{_MIXIN}.AWSIAMAuthMixin cannot be imported ({type(exc).__name__}: {exc})"
    for name, (parameters, calls) in _SEAM.items():
        original = (_state.originals if _state is not None else vars(mixin)).get(name)
        if not isinstance(original, classmethod):
            return f"AWSIAMAuthMixin.{name} is not a classmethod"
        found = tuple(inspect.signature(original.__func__).parameters)[1:]
        if found != parameters:
            return f"AWSIAMAuthMixin.{name}{found} is not {name}{parameters}"
        missing = sorted(set(calls) - set(original.__func__.__code__.co_names))
        if missing:
            return f"AWSIAMAuthMixin.{name} no longer calls {', '.join(missing)}"
    return None


@dataclasses.dataclass(frozen=True)
class _AssumedRole:
    """What ``get_iam_credentials`` hands the next step once installed: the role to assume,
    never credentials (those stay in iampool's cache)."""

    role_arn: str
    region: str
    external_id: str | None = dataclasses.field(repr=False)
    session_duration: int


class _IamPassword(str):
    """A token or Redshift password in ``connect_args`` that knows where the next one comes from
    (for ``per_connection``); it is a ``str`` to every driver."""

    __slots__ = ("auth",)
    auth: DbAuth


def _get_iam_credentials(
    cls: Any,
    role_arn: str,
    region: str,
    external_id: str | None = None,
    session_duration: int = 3600,
) -> Any:
    # AssumeRole happens in the step that uses the credentials, through the cache: a herd of
    # logins shares one call, and no secret passes through Superset's frames.
    return _AssumedRole(role_arn, region, external_id or None, session_duration)


def _generate_rds_auth_token(
    cls: Any, credentials: Any, hostname: str, port: int, username: str, region: str
) -> str:
    if not isinstance(credentials, _AssumedRole):  # someone else's credentials: Superset's path
        return _original("generate_rds_auth_token")(  # type: ignore[no-any-return]
            cls, credentials, hostname, port, username, region
        )
    return _login(cls, credentials, region, _rds_fields(username), hostname, port, "").password


def _generate_redshift_credentials(
    cls: Any, credentials: Any, workgroup_name: str, db_name: str, region: str
) -> tuple[str, str]:
    if not isinstance(credentials, _AssumedRole):
        return _original("generate_redshift_credentials")(  # type: ignore[no-any-return]
            cls, credentials, workgroup_name, db_name, region
        )
    fields = _serverless_fields(workgroup_name, db_name)
    login = _login(cls, credentials, region, fields, *_redshift_endpoint.get(), "serverless")
    return login.user, login.password


def _generate_redshift_cluster_credentials(
    cls: Any,
    credentials: Any,
    cluster_identifier: str,
    db_user: str,
    db_name: str,
    region: str,
    auto_create: bool = False,
) -> tuple[str, str]:
    if not isinstance(credentials, _AssumedRole):
        return _original("generate_redshift_cluster_credentials")(  # type: ignore[no-any-return]
            cls, credentials, cluster_identifier, db_user, db_name, region, auto_create
        )
    fields = _cluster_fields(cluster_identifier, db_user, db_name, auto_create)
    login = _login(cls, credentials, region, fields, *_redshift_endpoint.get(), "cluster")
    return login.user, login.password


def _apply_redshift_iam_authentication(
    cls: Any, database: Any, params: dict[str, Any], iam_config: Any
) -> None:
    # Superset's Redshift steps are not told the endpoint; the URI's host saves iampool a
    # DescribeClusters / GetWorkgroup call (and the permission for it).
    from sqlalchemy.engine.url import make_url

    try:
        url = make_url(database.sqlalchemy_uri_decrypted)
        endpoint = (url.host or None, url.port or _REDSHIFT_PORT)
    except Exception:  # Superset's own code reports a bad URI
        endpoint = (None, _REDSHIFT_PORT)
    token = _redshift_endpoint.set(endpoint)
    try:
        _original("_apply_redshift_iam_authentication")(cls, database, params, iam_config)
    finally:
        _redshift_endpoint.reset(token)


_REPLACEMENTS = {
    "get_iam_credentials": _get_iam_credentials,
    "generate_rds_auth_token": _generate_rds_auth_token,
    "generate_redshift_credentials": _generate_redshift_credentials,
    "generate_redshift_cluster_credentials": _generate_redshift_cluster_credentials,
    "_apply_redshift_iam_authentication": _apply_redshift_iam_authentication,
}


def _rds_fields(username: str) -> dict[str, Any]:
    return {"db_username": username}


def _serverless_fields(workgroup_name: str, db_name: str) -> dict[str, Any]:
    return {"workgroup_name": workgroup_name, "db_name": db_name}


def _cluster_fields(
    cluster_identifier: str, db_user: str, db_name: str, auto_create: bool
) -> dict[str, Any]:
    return {
        "cluster_identifier": cluster_identifier,
        "db_username": db_user,
        "db_name": db_name,
        "auto_create": auto_create,
    }


def _original(name: str) -> Any:
    state = _state
    assert state is not None  # only reached through an installed replacement
    return state.originals[name].__func__


def _login(
    cls: Any,
    role: _AssumedRole,
    region: str,
    fields: dict[str, Any],
    host: str | None,
    port: int,
    redshift: str,
) -> _Login:
    """The cached login for one step, or Superset's exception in Superset's words."""
    try:
        auth = _authenticator(role, region, tuple(fields.items()), host, port)
        login = auth.credentials_sync()
    except IamPoolError as error:
        raise _superset_error(cls, error, role, redshift) from None
    password = login.password
    state = _state
    if state is not None and state.per_connection:
        password = _IamPassword(password)
        password.auth = auth
    return _Login(login.user, password)


@dataclasses.dataclass(frozen=True)
class _Login:
    user: str
    password: str = dataclasses.field(repr=False)


@functools.lru_cache(maxsize=1024)
def _authenticator(
    role: _AssumedRole,
    region: str,
    fields: tuple[tuple[str, Any], ...],
    host: str | None,
    port: int,
) -> DbAuth:
    """One authenticator per login (role, the step's fields, endpoint), kept: building one
    (validating its block) costs more than a login."""
    state = _state
    assert state is not None
    block = {
        "enabled": True,
        "role_arn": role.role_arn,
        "region": region,
        "session_duration": role.session_duration,
        "role_session_name": _SESSION_NAME,
        **({"external_id": role.external_id} if role.external_id else {}),
        **dict(fields),
    }
    return auth_for(AwsIamConfig.from_extra(block), host=host, port=port, cache=state.cache)


def _superset_error(cls: Any, error: IamPoolError, role: _AssumedRole, redshift: str) -> Exception:
    """``error`` as Superset's step would have raised it (its wording, its error types)."""
    errors = importlib.import_module("superset.errors")
    exceptions = importlib.import_module("superset.exceptions")
    kinds = errors.SupersetErrorType
    text = str(error)
    if isinstance(error, ConfigError):
        kind, message = kinds.CONNECTION_MISSING_PARAMETERS_ERROR, text
    elif not redshift or (isinstance(error, CredentialError) and _from_sts(error, role)):
        custom = cls.aws_iam_custom_errors.get(getattr(error, "code", None))
        if "external id mismatch" in text.lower():
            kind = kinds.CONNECTION_ACCESS_DENIED_ERROR
            message = (
                "External ID mismatch. Verify the external_id configuration matches the trust "
                "policy."
            )
        elif custom is not None:
            kind, message = custom
        else:
            kind, message = (
                kinds.CONNECTION_ACCESS_DENIED_ERROR,
                _prefixed("Failed to assume IAM role", text),
            )
    else:
        step = "Serverless" if redshift == "serverless" else "cluster"
        kind = kinds.CONNECTION_ACCESS_DENIED_ERROR
        message = _prefixed(f"Failed to get Redshift {step} credentials", text)
    error_object = errors.SupersetError(
        message=message, error_type=kind, level=errors.ErrorLevel.ERROR
    )
    exception: Exception = exceptions.SupersetSecurityException(error_object)
    return exception


def _from_sts(error: CredentialError, role: _AssumedRole) -> bool:
    """Whether the AssumeRole step failed (rather than a Redshift call)."""
    return error.target is None or error.target.startswith(f"{role.role_arn} ")


def _prefixed(prefix: str, text: str) -> str:
    return text if text.startswith(prefix) else f"{prefix}: {text}"


def _listen(per_connection: bool) -> None:
    """Add or remove the ``do_connect`` listener that reads a current token per connection."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    listening = event.contains(Engine, "do_connect", _fresh_login)
    if per_connection and not listening:
        event.listen(Engine, "do_connect", _fresh_login)
    elif not per_connection and listening:
        event.remove(Engine, "do_connect", _fresh_login)


def _fresh_login(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
    password = cparams.get("password")
    if isinstance(password, _IamPassword):
        login = password.auth.credentials_sync()
        fresh = _IamPassword(login.password)
        fresh.auth = password.auth
        cparams["user"], cparams["password"] = login.user, fresh


def _prefetch(app: Any) -> None:
    """Start minting for every IAM database Superset holds (in the background)."""
    try:
        with app.app_context():
            superset = importlib.import_module("superset")
            if not superset.is_feature_enabled(FEATURE_FLAG):
                return
            database_model = importlib.import_module("superset.models.core").Database
            for database in superset.db.session.query(database_model).all():
                _prefetch_database(database)
    except Exception as exc:  # a metadata database not set up yet: logins mint on demand
        log.warning("iampool.superset: no prefetch (%s)", type(exc).__name__)


def _prefetch_database(database: Any) -> None:
    """Start minting the login Superset's next connection to ``database`` will ask for."""
    from sqlalchemy.engine.url import make_url

    try:
        extra = json.loads(database.encrypted_extra or "{}")
        block = extra.get("aws_iam") if isinstance(extra, dict) else None
        if not isinstance(block, dict) or block.get("enabled") is not True:
            return
        url = make_url(database.sqlalchemy_uri_decrypted)
        region = block["region"]
        role = _AssumedRole(
            block["role_arn"], region, block.get("external_id") or None,
            block.get("session_duration", 3600),
        )  # fmt: skip
        if url.get_backend_name() != "redshift":
            port = url.port or (3306 if url.get_backend_name() == "mysql" else 5432)
            fields, host = _rds_fields(block["db_username"]), url.host
        else:
            port, host = url.port or _REDSHIFT_PORT, url.host or None
            if block.get("workgroup_name"):
                fields = _serverless_fields(block["workgroup_name"], block["db_name"])
            else:
                fields = _cluster_fields(
                    block["cluster_identifier"], block["db_username"], block["db_name"], False
                )
        prefetch(_authenticator(role, region, tuple(fields.items()), host, port))
    except Exception as exc:  # its first login reports what is wrong, in Superset's words
        log.debug("iampool.superset: no prefetch for a database (%s)", type(exc).__name__)


# --- Synchronous SQLAlchemy engines ----------------------------------------------------------
# SQLAlchemy calls a ``do_connect`` listener before each new DBAPI connection with the keyword
# arguments it is about to pass the driver; the listener puts a current login (a cached token
# or Redshift password, ``DbAuth.credentials_sync``) and the TLS settings the URL asked for into
# them. Everything is checked when the listener is made, before any AWS call.

DoConnect = Callable[[Any, Any, list[Any], dict[str, Any]], None]

# SQLAlchemy's synchronous drivers served, per engine (the URL's "<engine>+<driver>").
_DRIVERS = {
    "postgresql": ("psycopg2",),
    "mysql": ("pymysql",),
    "redshift": ("redshift_connector",),
}
# Other spellings of what the listener sets (per driver and SQLAlchemy version), and the URL's
# TLS options a driver does not take (the listener gives it its own form of them): dropped.
_ALIASES = {
    "psycopg2": ("database",),
    "pymysql": ("db", "passwd", "sslmode", "sslrootcert"),
    "redshift_connector": (),
}


def do_connect(
    url: str | URL, *, aws_iam: ConfigLike, cache: CredentialCache | None = None
) -> DoConnect:
    """A ``do_connect`` listener that logs a synchronous engine in with IAM credentials::

        engine = create_engine(url)
        event.listen(engine, "do_connect", iampool.superset.do_connect(url, aws_iam=cfg))

    ``url`` is the engine's URL (``postgresql+psycopg2://``, ``mysql+pymysql://`` or
    ``redshift+redshift_connector://``), without a password; its user must be ``db_username``
    (Redshift: none, or ``db_username``). Each new connection gets a current login from the
    cache and TLS as the URL asks: ``sslmode=require`` (the default), ``verify-ca`` or
    ``verify-full``, with ``sslrootcert``.

    Raises:
        ConfigError: invalid configuration or URL (another driver, a password, another user, a
            TLS mode that could fall back to plain text, ...), before any AWS call.
    """
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    scheme, separator, rest = text.partition("://")
    engine, _, driver = scheme.lower().partition("+")
    if not separator or driver not in _DRIVERS.get(engine, ()):
        served = ", ".join(f"{name}+{drivers[0]}://" for name, drivers in _DRIVERS.items())
        raise ConfigError(ConfigProblem("url", f"do_connect serves {served}"), context="DSN")
    config = coerce_config(aws_iam)
    target = parse_target(f"{engine}://{rest}", config)
    if driver == "redshift_connector":
        vet_redshift_settings(target, {}, pool=False)  # no CA file: the driver cannot take one
    if target.iam_host is not None:
        raise ConfigError(
            ConfigProblem("iam_host", "is not supported by do_connect: connect to the endpoint's "
                                      "name (a tunnel's local port can resolve to it instead)"),
            context="DSN",
        )  # fmt: skip
    auth = auth_for(
        config, host=target.host, port=target.port, cache=cache or default_cache()
    )  # fmt: skip
    settings: dict[str, Any] = {"host": target.host, "port": target.port}
    if driver == "psycopg2":
        # An encrypted GSSAPI session would stand in for TLS; RDS speaks TLS only.
        # hostaddr explicitly empty: libpq would otherwise dial PGHOSTADDR from the environment.
        settings.update(
            libpq_tls(target), gssencmode="disable", dbname=target.database, hostaddr=""
        )
    elif driver == "pymysql":
        settings.update(ssl=tls_context(target), database=target.database)
    else:
        settings.update(
            database=target.database, ssl=True, sslmode=REDSHIFT_SSLMODES[target.sslmode],
            iam=False,
        )  # fmt: skip
    settings = {name: value for name, value in settings.items() if value is not None}
    aliases = _ALIASES[driver]
    prefetch(auth)

    def listener(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        login = auth.credentials_sync()
        for alias in aliases:
            cparams.pop(alias, None)
        cparams.update(settings)
        cparams["user"] = login.user
        cparams["password"] = login.password
        if login.host is not None and target.host is None:  # Redshift: discovered
            cparams["host"], cparams["port"] = login.host, login.port

    return listener
