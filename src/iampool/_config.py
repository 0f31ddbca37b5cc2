"""``AwsIamConfig``: the Superset-compatible ``aws_iam`` block, parsed and validated in one pass."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ._errors import ConfigError, ConfigProblem, shown

__all__ = ["DISABLED", "AwsIamConfig", "Backend", "disabled_first"]

Backend = Literal["rds", "redshift", "redshift-serverless", "dsql", "secrets-manager"]

DEFAULT_SESSION_DURATION = 3600
DEFAULT_PASSWORD_DURATION = 900
DEFAULT_TOKEN_DURATION = 900  # Aurora DSQL tokens: botocore's default ExpiresIn
MAX_TOKEN_DURATION = 604800  # a SigV4 presigned URL lives at most 7 days
# Secrets Manager: how long a fetched secret is reused (refreshed ahead in the background), and
# how long a login refused for its password keeps trying while a rotation completes.
DEFAULT_SECRET_TTL = 900
MAX_SECRET_TTL = 86400
DEFAULT_ROTATION_WINDOW = 60
MAX_ROTATION_WINDOW = 900

# Superset's own words for the two Redshift selector mistakes, so that its users meet the
# message they know (superset/db_engine_specs/aws_iam.py).
SUPERSET_BOTH_REDSHIFT_SELECTORS = (
    "AWS IAM configuration cannot have both workgroup_name (Serverless) and cluster_identifier "
    "(provisioned). Please specify only one."
)
SUPERSET_NO_REDSHIFT_SELECTOR = (
    "AWS IAM configuration must include either workgroup_name (for Redshift Serverless) or "
    "cluster_identifier (for provisioned Redshift clusters)."
)

# What a block with "enabled": false is told wherever IAM auth is asked of it.
DISABLED = ConfigProblem(
    "enabled",
    'is false: this aws_iam block does not ask for IAM auth (set "enabled": true to use it)',
)

# AWS means ASCII by \w and \d: without re.ASCII, Python would accept e.g. Arabic-Indic digits in
# an account id or accented letters in an ExternalId, which STS then rejects.
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}", re.ASCII)
_ROLE_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}", re.ASCII
)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
_ROLE_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_CLUSTER_IDENTIFIER = re.compile(r"[a-zA-Z](?:[a-zA-Z0-9]|-(?!-)){0,62}(?<!-)")
_WORKGROUP_NAME = re.compile(r"[a-z0-9-]{3,64}")
_REDSHIFT_USER = re.compile(r"[A-Za-z][^:/]{0,63}")
_DB_GROUP = re.compile(r"[A-Za-z_][\w$]{0,126}", re.ASCII)
# A secret's name (1 to 512 of ASCII letters, digits and /_+=.@-) or its ARN, whose region is
# then where the secret is read.
_SECRET_NAME = re.compile(r"[\w/+=.@-]{1,512}", re.ASCII)
_SECRET_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:secretsmanager:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2}):\d{12}:"
    r"secret:[\w/+=.@-]{1,512}",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class AwsIamConfig:
    """The ``aws_iam`` block of a Superset database's ``encrypted_extra``, validated.

    Build it with :meth:`from_extra`; the constructor does not validate. Instances are frozen and
    hashable, so they can key caches and be shared between pools.
    """

    enabled: bool
    region: str
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    session_duration: int = DEFAULT_SESSION_DURATION
    db_username: str | None = None
    cluster_identifier: str | None = None
    workgroup_name: str | None = None
    db_name: str | None = None
    db_groups: tuple[str, ...] = ()
    auto_create: bool = False
    role_session_name: str | None = None
    port: int | None = None
    password_duration: int = DEFAULT_PASSWORD_DURATION
    dsql: bool = False
    token_duration: int = DEFAULT_TOKEN_DURATION
    secret_id: str | None = None
    secret_ttl: int = DEFAULT_SECRET_TTL
    rotation_window: int = DEFAULT_ROTATION_WINDOW

    @property
    def backend(self) -> Backend:
        """Which AWS API mints the database password: ``secrets-manager`` when the block names
        a ``secret_id``, ``dsql`` when it says so, else derived from the selectors present.

        Any block may leave ``region`` empty (``""``): it then comes from the endpoint's host
        name (``<name>.<id>.<region>.rds.amazonaws.com``, ``<id>.dsql.<region>.on.aws``, ...)
        when credentials are made for an endpoint; see ``iampool._endpoints``.
        """
        if self.secret_id is not None:
            return "secrets-manager"
        if self.dsql:
            return "dsql"
        if self.workgroup_name is not None:
            return "redshift-serverless"
        if self.cluster_identifier is not None:
            return "redshift"
        return "rds"

    @classmethod
    def from_extra(cls, extra: str | bytes | Mapping[str, Any]) -> AwsIamConfig:
        """Parse ``encrypted_extra`` JSON, a mapping holding an ``aws_iam`` block, or the block.

        Raises:
            ConfigError: listing every problem found (``err.errors``), never echoing secrets.
        """
        if isinstance(extra, (str, bytes, bytearray)):
            try:
                extra = json.loads(extra)
            except (ValueError, RecursionError) as exc:
                raise ConfigError(_json_problem(exc)) from None
        if isinstance(extra, Mapping) and "aws_iam" in extra:
            extra = extra["aws_iam"]
        if not isinstance(extra, Mapping):
            kind = _json_type(extra)
            raise ConfigError(ConfigProblem("aws_iam", f"must be a JSON object, got {kind}"))
        return _parse_block(extra)

    def to_dict(self) -> dict[str, Any]:
        """The block as JSON-ready data: ``enabled``, ``region`` (unless empty) and every
        non-default field."""
        defaults = AwsIamConfig(enabled=self.enabled, region=self.region)
        data = {
            name: value
            for name, value in asdict(self).items()
            # An empty region means "from the endpoint's host": left out, as it was written.
            if name == "enabled" or (name == "region" and value) or value != getattr(defaults, name)
        }
        if self.db_groups:
            data["db_groups"] = list(self.db_groups)
        return data


def disabled_first(error: ConfigError, extra: object) -> ConfigError:
    """``error``, led by ``enabled: is false`` when ``extra`` says ``"enabled": false``.

    For a caller that needs IAM auth (a pool, the CLI): the switch is what to fix first, not a
    field that a disabled block may well leave out (``db_username: is required``).
    """
    if isinstance(extra, (str, bytes, bytearray)):
        try:
            extra = json.loads(extra)
        except (ValueError, RecursionError):
            return error
    if isinstance(extra, Mapping) and isinstance(extra.get("aws_iam"), Mapping):
        extra = extra["aws_iam"]
    if not isinstance(extra, Mapping) or extra.get("enabled") is not False:
        return error
    return ConfigError([DISABLED, *error.errors], context=error.context)


def _json_problem(exc: ValueError | RecursionError) -> ConfigProblem:
    """Say where and why a document is not JSON, never quoting it (it may hold secrets)."""
    if isinstance(exc, json.JSONDecodeError):
        reason = f" at line {exc.lineno} column {exc.colno}: {exc.msg}"
    elif isinstance(exc, UnicodeDecodeError):
        reason = ": the bytes are not UTF-8, UTF-16 or UTF-32 text"
    elif isinstance(exc, RecursionError):
        reason = ": arrays or objects are nested too deeply"
    else:
        # json.loads raises a bare ValueError for integers longer than Python's digit limit.
        reason = ": a number has too many digits"
    return ConfigProblem("encrypted_extra", f"invalid JSON{reason}")


def _json_type(value: object) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


class _Checker:
    """Collects every problem of one block instead of stopping at the first."""

    def __init__(self, block: Mapping[str, Any]) -> None:
        self.block = block
        self.problems: list[ConfigProblem] = []

    def fail(self, name: str, message: str) -> None:
        self.problems.append(ConfigProblem(name, message))

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
        show_value: bool = True,
    ) -> str | None:
        value = self.block.get(name)
        if value is None:
            if required:
                self.fail(name, f"is required{f' ({rule})' if rule else ''}")
            return None
        if not isinstance(value, str):
            self.fail(name, f"must be a string, got {_json_type(value)}")
            return None
        if not value or (pattern is not None and not pattern.fullmatch(value)):
            got = f" (got {shown(value)})" if show_value else ""
            self.fail(name, f"must be {rule or 'a non-empty string'}{got}")
            return None
        return value

    def integer(self, name: str, *, default: int, low: int, high: int, rule: str) -> int:
        value = self.block.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"must be an integer {rule}, got {_json_type(value)}")
            return default
        if not low <= value <= high:
            self.fail(name, f"must be an integer {rule}, got {shown(value)}")
            return default
        return value

    def boolean(self, name: str, *, required: bool = False, default: bool = False) -> bool:
        value = self.block.get(name, None)
        if value is None:
            if required:
                self.fail(name, "is required (true or false)")
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be a JSON boolean (true or false), got {_json_type(value)}")
            return default
        return value

    def string_list(self, name: str, *, pattern: re.Pattern[str], rule: str) -> tuple[str, ...]:
        value = self.block.get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(name, f"must be an array of strings ({rule})")
            return ()
        bad = [item for item in value if not pattern.fullmatch(item)]
        if bad:
            listed = ", ".join(shown(item, 40) for item in bad[:_LISTED])
            more = f" and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
            self.fail(name, f"every entry must be {rule} (invalid: {listed}{more})")
            return ()
        return tuple(value)


_FIELDS = frozenset(AwsIamConfig.__dataclass_fields__)
_LISTED = 5  # invalid entries of a list quoted in its problem; the rest are counted
_LISTED_HINTS = 20  # unknown keys given a "did you mean"


def _parse_block(block: Mapping[str, Any]) -> AwsIamConfig:
    check = _Checker(block)
    unknown = sorted(str(key) for key in block if key not in _FIELDS)
    for index, key in enumerate(unknown):
        # A message lists about a dozen problems: suggesting names for more is wasted time.
        hint = _closest(key) if index < _LISTED_HINTS else None
        check.fail(
            key,
            f"unknown field{f'; did you mean {hint!r}?' if hint else ''} "
            f"(allowed: {', '.join(sorted(_FIELDS))})",
        )

    enabled = check.boolean("enabled", required=True)
    dsql = check.boolean("dsql")
    region: str | None
    if block.get("region") in (None, ""):
        # From the endpoint's host when credentials are made for it (iampool._endpoints); as
        # in Superset, an empty region is a missing one.
        region = ""
    else:
        region = check.string(
            "region", pattern=_REGION, rule="an AWS region name such as 'us-east-1'"
        )
    role_arn = check.string(
        "role_arn",
        pattern=_ROLE_ARN,
        rule="an IAM role ARN: arn:<partition>:iam::<12-digit account>:role/<name>",
    )
    external_id = check.string(
        "external_id",
        pattern=_EXTERNAL_ID,
        show_value=False,
        rule="2 to 1224 characters of letters, digits and +=,.@:/-",
    )
    session_duration = check.integer(
        "session_duration",
        default=DEFAULT_SESSION_DURATION,
        low=900,
        high=43200,
        rule="of seconds from 900 to 43200",
    )
    workgroup_name = check.string(
        "workgroup_name",
        pattern=_WORKGROUP_NAME,
        rule="3 to 64 lowercase letters, digits or hyphens",
    )
    cluster_identifier = check.string(
        "cluster_identifier",
        pattern=_CLUSTER_IDENTIFIER,
        rule="1 to 63 letters, digits or single hyphens, starting with a letter",
    )
    if dsql:
        for selector in ("cluster_identifier", "workgroup_name"):
            if block.get(selector) is not None:
                check.fail(
                    selector,
                    "cannot be combined with dsql: an Aurora DSQL cluster is named by the "
                    "DSN's host",
                )
    secret = block.get("secret_id") is not None
    if secret:
        for name, why in _NOT_WITH_SECRET.items():
            if block.get(name) not in (None, False):
                check.fail(name, f"cannot be combined with secret_id: {why}")
    if block.get("workgroup_name") is not None and block.get("cluster_identifier") is not None:
        check.fail("cluster_identifier", SUPERSET_BOTH_REDSHIFT_SELECTORS)
    provisioned = (
        block.get("cluster_identifier") is not None and block.get("workgroup_name") is None
    )
    if provisioned:
        db_username = check.string(
            "db_username",
            required=True,
            pattern=_REDSHIFT_USER,
            rule="a Redshift user: 1 to 64 characters, starting with a letter, no ':' or '/'",
        )
        if db_username is not None and db_username.upper() == "PUBLIC":
            check.fail("db_username", "must not be PUBLIC (a reserved Redshift name)")
    else:
        db_username = check.string(
            "db_username",
            required=block.get("workgroup_name") is None and not secret,
            rule="the database user granted rds_iam / IAM login",
        )
    db_name = check.string(
        "db_name",
        # Decided by the keys present, not their validity, so an invalid selector still reports
        # a missing db_name in the same error.
        required=not secret
        and any(block.get(name) is not None for name in ("workgroup_name", "cluster_identifier")),
        rule="the Redshift database name",
    )
    db_groups = check.string_list("db_groups", pattern=_DB_GROUP, rule="Redshift group names")
    auto_create = check.boolean("auto_create")
    role_session_name = check.string(
        "role_session_name",
        pattern=_ROLE_SESSION_NAME,
        rule="2 to 64 characters of letters, digits and +=,.@-",
    )
    port = check.integer("port", default=0, low=1, high=65535, rule="from 1 to 65535")
    password_duration = check.integer(
        "password_duration",
        default=DEFAULT_PASSWORD_DURATION,
        low=900,
        high=3600,
        rule="of seconds from 900 to 3600",
    )
    token_duration = check.integer(
        "token_duration",
        default=DEFAULT_TOKEN_DURATION,
        low=60,
        high=MAX_TOKEN_DURATION,
        rule=f"of seconds from 60 to {MAX_TOKEN_DURATION}",
    )
    if block.get("token_duration") is not None and not dsql:
        check.fail(
            "token_duration",
            'applies to Aurora DSQL tokens only ("dsql": true); RDS tokens always live 900 s',
        )
    secret_id, region = _secret(check, region)
    secret_ttl = check.integer(
        "secret_ttl",
        default=DEFAULT_SECRET_TTL,
        low=1,
        high=MAX_SECRET_TTL,
        rule=f"of seconds from 1 to {MAX_SECRET_TTL}",
    )
    rotation_window = check.integer(
        "rotation_window",
        default=DEFAULT_ROTATION_WINDOW,
        low=0,
        high=MAX_ROTATION_WINDOW,
        rule=f"of seconds from 0 to {MAX_ROTATION_WINDOW}",
    )
    if not secret:
        for name in ("secret_ttl", "rotation_window"):
            if block.get(name) is not None:
                check.fail(name, "applies to a password from Secrets Manager only (secret_id)")
    if check.problems:
        raise ConfigError(check.problems)
    assert region is not None  # an invalid region is a problem recorded above
    return AwsIamConfig(
        enabled=enabled,
        region=region,
        role_arn=role_arn,
        external_id=external_id,
        session_duration=session_duration,
        db_username=db_username,
        cluster_identifier=cluster_identifier,
        workgroup_name=workgroup_name,
        db_name=db_name,
        db_groups=db_groups,
        auto_create=auto_create,
        role_session_name=role_session_name,
        port=port or None,
        password_duration=password_duration,
        dsql=dsql,
        token_duration=token_duration,
        secret_id=secret_id,
        secret_ttl=secret_ttl,
        rotation_window=rotation_window,
    )


# What a block naming secret_id must not also say: the secret gives the login.
_NOT_WITH_SECRET = {
    "db_username": "the user name comes from the secret's 'username'",
    "cluster_identifier": "a Redshift password from a secret needs only a redshift:// DSN",
    "workgroup_name": "a Redshift password from a secret needs only a redshift:// DSN",
    "db_groups": "database groups are for Redshift temporary credentials",
    "auto_create": "auto_create is for Redshift temporary credentials",
    "dsql": "Aurora DSQL logs in with IAM tokens only",
    "password_duration": "it is the lifetime of Redshift temporary credentials",
}


def _secret(check: _Checker, region: str | None) -> tuple[str | None, str | None]:
    """``secret_id`` (a name or an ARN) and the region: the block's, else the ARN's; the two
    must agree."""
    value = check.block.get("secret_id")
    if value is None:
        return None, region
    if not isinstance(value, str):
        check.fail("secret_id", f"must be a string, got {_json_type(value)}")
        return None, region
    arn = _SECRET_ARN.fullmatch(value)
    if arn is None:
        if value.startswith("arn:"):
            check.fail(
                "secret_id",
                "must be a secret's ARN (arn:<partition>:secretsmanager:<region>:<12-digit "
                f"account>:secret:<name>) or its name (got {shown(value)})",
            )
            return None, region
        if not _SECRET_NAME.fullmatch(value):
            check.fail(
                "secret_id",
                "must be a secret's name (1 to 512 letters, digits and /_+=.@-) or its ARN "
                f"(got {shown(value)})",
            )
            return None, region
        return value, region
    named = arn["region"]
    if region and named != region:
        check.fail(
            "region",
            f"is {region!r} but secret_id's ARN is in {named!r}; fix one of them, or leave "
            "region out to take the ARN's",
        )
        return None, region
    return value, region or named


def _closest(name: str) -> str | None:
    import difflib

    if len(name) > 64:  # no field is that long: nothing to suggest, and no time to spend
        return None

    matches = difflib.get_close_matches(name, sorted(_FIELDS), n=1, cutoff=0.7)
    return matches[0] if matches else None


ConfigLike = AwsIamConfig | str | bytes | Mapping[str, Any]


def coerce_config(value: ConfigLike) -> AwsIamConfig:
    """Accept a config, a mapping or JSON wherever the public API takes ``aws_iam=``."""
    return value if isinstance(value, AwsIamConfig) else AwsIamConfig.from_extra(value)
