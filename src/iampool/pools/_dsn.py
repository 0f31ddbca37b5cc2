"""DSN parsing: one place decides engine, driver, user, endpoint, database and TLS mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote

from .._config import AwsIamConfig
from .._endpoints import dsn_port, host_problem
from .._errors import ConfigError, ConfigProblem

__all__ = ["DEFAULT_PORTS", "SCHEMES", "Driver", "Engine", "Target", "dsn_endpoint", "parse_target"]

Engine = Literal["postgresql", "mysql", "redshift"]
Driver = Literal["asyncpg", "psycopg", "aiomysql", "asyncmy", "redshift_connector"]

# SQLAlchemy's spellings: "<engine>+<driver>"; a bare engine means its first driver here.
SCHEMES: dict[str, tuple[Engine, Driver]] = {
    "postgresql": ("postgresql", "asyncpg"),
    "postgres": ("postgresql", "asyncpg"),
    "postgresql+asyncpg": ("postgresql", "asyncpg"),
    "postgresql+psycopg": ("postgresql", "psycopg"),
    "postgresql+psycopg_async": ("postgresql", "psycopg"),
    "mysql": ("mysql", "aiomysql"),
    "mysql+aiomysql": ("mysql", "aiomysql"),
    "mysql+asyncmy": ("mysql", "asyncmy"),
    "redshift": ("redshift", "redshift_connector"),
    "redshift+redshift_connector": ("redshift", "redshift_connector"),
}
DEFAULT_PORTS: dict[Engine, int] = {"postgresql": 5432, "mysql": 3306, "redshift": 5439}
_INSECURE_SSLMODES = {"disable", "allow", "prefer"}
_SSLMODES = {"require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect, with how to protect the connection."""

    engine: Engine
    driver: Driver
    host: str | None
    port: int
    user: str | None
    database: str | None
    sslmode: str  # require | verify-ca | verify-full
    sslrootcert: str | None
    options: dict[str, str] = field(default_factory=dict)  # other DSN query parameters
    discover_from: str | None = None  # "cluster <id>" / "workgroup <name>" when host is None
    # Token-host override (?iam_host=, ?iam_port=): the endpoint tokens are signed for and TLS
    # verifies, while host:port above is the address dialled (a tunnel, a port-forward, a
    # custom DNS name). None: the dialled host is the endpoint.
    iam_host: str | None = None
    iam_port: int | None = None

    @property
    def signed_host(self) -> str | None:
        """The host credentials are for: ``iam_host``, else the dialled host."""
        return self.iam_host if self.iam_host is not None else self.host

    @property
    def signed_port(self) -> int:
        """The port credentials are for: ``iam_port`` with an ``iam_host``, else the dialled one."""
        return self.iam_port if self.iam_port is not None else self.port

    @property
    def endpoint(self) -> str:
        """``host:port``, or for Redshift without a host, what its endpoint is looked up from."""
        if self.host is None:
            return f"Redshift {self.discover_from}"
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6
        return f"{host}:{self.port}"


def parse_target(dsn: str, config: AwsIamConfig) -> Target:
    """Read a DSN against the IAM configuration; every problem reported at once.

    Raises:
        ConfigError: unknown scheme, a password in the DSN, a user other than ``db_username``,
            a host that is not one host name or IP address (a path, several hosts, still
            percent-encoded, ...: see ``iampool._endpoints``), a port outside 1-65535, ``?host=``
            or ``?port=`` disagreeing with the authority, a parameter given twice with different
            values, a fragment, or a TLS mode that could fall back to plain text.
    """
    problems: list[ConfigProblem] = []
    # Split off the scheme ourselves: urlsplit refuses "_" in one (redshift+redshift_connector).
    scheme, separator, rest = dsn.partition("://")
    known = SCHEMES.get(scheme.lower()) if separator else None
    if known is None:
        allowed = ", ".join(f"{name}://" for name in SCHEMES)
        raise ConfigError(
            ConfigProblem("dsn", f"unsupported scheme; use one of {allowed}"), context="DSN"
        )
    engine, driver = known
    authority, tail = _split_authority(rest)
    tail, hash_sign, _ = tail.partition("#")
    path, _, query = tail.partition("?")
    if hash_sign:
        problems.append(
            ConfigProblem("dsn", "has a '#' fragment, which no driver reads; percent-encode "
                                 "'#' in a name as %23")
        )  # fmt: skip
    userinfo, _, hostport = authority.rpartition("@")
    username, _, password = userinfo.partition(":")
    found = len(problems)
    host, port = _host_and_port(hostport, problems)
    invalid_host = len(problems) > found
    options = _query_options(query, problems)
    host, port = _query_endpoint(options, host, port, problems)
    iam_host, iam_port = _token_endpoint(options, engine, config, problems)
    # libpq and asyncpg also read the user from "?user=": it must agree with db_username too.
    named = [name for name in (unquote(username), options.pop("user", "")) if name]
    user = named[0] if named else None
    expected = config.db_username
    # Redshift answers IAM:<user>, or IAMA:<user> when it auto-creates the user.
    accepted = (
        {expected, f"IAM:{expected}", f"IAMA:{expected}"} if engine == "redshift" else {expected}
    )
    for name in dict.fromkeys(named):
        if config.secret_id is not None:
            problems.append(
                ConfigProblem("dsn", f"names user {name!r}, but a login from Secrets Manager "
                                     "is the secret's 'username' (it may change at a "
                                     "rotation); drop it from the DSN")
            )  # fmt: skip
        elif expected is None:
            problems.append(
                ConfigProblem("dsn", f"names user {name!r}, but Redshift Serverless logs in as "
                                     "the user GetCredentials returns; drop it from the DSN")
            )  # fmt: skip
        elif name not in accepted:
            problems.append(
                ConfigProblem("dsn", f"names user {name!r} but aws_iam.db_username is "
                                     f"{expected!r}; drop the user from the DSN or make them match")
            )  # fmt: skip
    # Aurora DSQL endpoints carry certificates of public CAs: verify them by default.
    default_sslmode = "verify-full" if config.backend == "dsql" else "require"
    sslmode = options.pop("sslmode", default_sslmode).lower()
    sslrootcert = options.pop("sslrootcert", None)
    if password or options.pop("password", None) is not None:
        problems.append(
            ConfigProblem("dsn", "must not contain a password: IAM authentication supplies it")
        )
    if sslmode in _INSECURE_SSLMODES:
        problems.append(
            ConfigProblem("sslmode", f"{sslmode!r} could send IAM credentials in plain text; "
                                     "use require, verify-ca or verify-full")
        )  # fmt: skip
    elif sslmode not in _SSLMODES:
        problems.append(ConfigProblem("sslmode", "must be require, verify-ca or verify-full"))
    if host is None and engine != "redshift" and not invalid_host:
        problems.append(ConfigProblem("dsn", "needs a host (the database endpoint)"))
    database = unquote(path.lstrip("/")) or None
    if engine == "redshift":
        problems.extend(_redshift_problems(config, database, options))
        database = database or config.db_name
    if problems:
        raise ConfigError(problems, context="DSN")
    return Target(
        engine=engine,
        driver=driver,
        host=host,
        port=port or config.port or DEFAULT_PORTS[engine],
        user=None if engine == "redshift" else user or expected,
        database=database,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        options=options,
        discover_from=(
            None
            if host is not None or engine != "redshift"
            else f"workgroup {config.workgroup_name}"
            if config.workgroup_name
            else f"cluster {config.cluster_identifier}"
        ),
        iam_host=iam_host,
        iam_port=iam_port,
    )


def _token_endpoint(
    options: dict[str, str], engine: Engine, config: AwsIamConfig, problems: list[ConfigProblem]
) -> tuple[str | None, int | None]:
    """Take ``iam_host`` and ``iam_port`` out of the DSN's query: the endpoint that tokens are
    signed for and TLS verifies when the DSN's host is a tunnel (aws-advanced-python-wrapper's
    ``iam_host`` and ``iam_default_port``). ``iam_port`` defaults to the block's ``port``, else
    the engine's default port: a tunnel's local port is rarely the server's."""
    host = options.pop("iam_host", None)
    host = host.lower() if host is not None else None
    port_text = options.pop("iam_port", None)
    if host is None:
        if port_text is not None:
            problems.append(
                ConfigProblem("iam_port", "needs iam_host: it is the port of the endpoint that "
                                          "tokens are signed for")
            )  # fmt: skip
        return None, None
    if engine == "redshift":
        problems.append(
            ConfigProblem("iam_host", "does not apply to redshift://: passwords are not signed "
                                      "for a host, and redshift-connector verifies TLS against "
                                      "the host it dials; through a tunnel use sslmode=verify-ca "
                                      "and name the region in aws_iam")
        )  # fmt: skip
        return None, None
    problem = host_problem(host, "iam_host")
    if problem is not None or ":" in host:  # a name: the certificate and the token carry it
        why = f" ({problem.message})" if problem is not None else ""
        problems.append(
            ConfigProblem("iam_host", "must be the endpoint's DNS name, such as "
                                      "'db.cluster-abc.us-east-1.rds.amazonaws.com', with its "
                                      f"port as iam_port{why}")
        )  # fmt: skip
        host = None
    port, port_problem = dsn_port(port_text or "", "iam_port")
    if port_problem is not None:
        problems.append(port_problem)
    port = port or config.port or DEFAULT_PORTS[engine]
    return (host, port) if host is not None else (None, None)


def dsn_endpoint(dsn: str) -> tuple[str | None, int | None]:
    """The host and port of a DSN's authority when both pass the rules (else ``None``): what a
    message may repeat of a DSN that was not parsed yet."""
    _, separator, rest = dsn.partition("://")
    authority, tail = _split_authority(rest)
    if not separator or "@" in tail:  # an '@' after '/', '?' or '#': a password cut short
        return None, None
    problems: list[ConfigProblem] = []
    host, port = _host_and_port(authority.rpartition("@")[2], problems)
    return (None, None) if problems else (host, port)


def _split_authority(rest: str) -> tuple[str, str]:
    """``user@host:port`` and what follows it (path, query, fragment) in a DSN after ``://``."""
    ends = [index for index in (rest.find(c) for c in "/?#") if index >= 0]
    end = min(ends, default=len(rest))
    return rest[:end], rest[end:]


def _host_and_port(hostport: str, problems: list[ConfigProblem]) -> tuple[str | None, int | None]:
    """The DSN's host (percent-decoded once) and port if given and valid; else ``None`` and
    a problem (for an invalid one)."""
    if "," in hostport:
        problems.append(
            ConfigProblem("dsn host", "several hosts are not supported: tokens are signed per "
                                      "host; use the cluster endpoint (or RDS Proxy)")
        )  # fmt: skip
        return None, None
    if hostport.startswith("["):
        raw_host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            problems.append(
                ConfigProblem("dsn host", "an IPv6 address goes in brackets followed by an "
                                          "optional port: [2001:db8::1]:5432")
            )  # fmt: skip
            return None, None
        host = unquote(raw_host)
        if ":" not in host:
            problems.append(
                ConfigProblem("dsn host", "brackets hold an IPv6 address; write a host name "
                                          "or IPv4 address without them")
            )  # fmt: skip
            return None, None
        port_text = after[1:]
    else:
        if hostport.count(":") > 1:
            problems.append(
                ConfigProblem("dsn host", "an IPv6 address goes in brackets: [2001:db8::1]:5432")
            )
            return None, None
        raw_host, _, port_text = hostport.partition(":")
        host = unquote(raw_host)
    problem = host_problem(host, "dsn host") if host else None
    port, port_error = dsn_port(port_text, "dsn port")
    problems.extend(found for found in (problem, port_error) if found is not None)
    # Lower case, as urllib gave it before: the token is signed for this name.
    return (host.lower() or None) if problem is None else None, port


def _query_options(query: str, problems: list[ConfigProblem]) -> dict[str, str]:
    """The query parameters; a name given twice with different values is a problem."""
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if options.setdefault(name, value) != value:
            problems.append(ConfigProblem(name, "is given twice with different values"))
    return options


def _query_endpoint(
    options: dict[str, str], host: str | None, port: int | None, problems: list[ConfigProblem]
) -> tuple[str | None, int | None]:
    """``?host=`` and ``?port=`` as libpq reads them: used when the DSN's authority has none;
    both given and different is a problem (libpq and asyncpg would disagree on which wins)."""
    query_host = options.pop("host", "").lower()
    if query_host:
        problem = host_problem(query_host, "dsn ?host=")
        if problem is not None:
            problems.append(problem)
        elif host is not None and host != query_host:
            problems.append(
                ConfigProblem("dsn ?host=", f"names {query_host!r} but the DSN's host is "
                                            f"{host!r}; give the host once")
            )  # fmt: skip
        host = host or query_host
    query_port, problem = dsn_port(options.pop("port", ""), "dsn ?port=")
    if problem is not None:
        problems.append(problem)
    elif query_port is not None:
        if port is not None and port != query_port:
            problems.append(
                ConfigProblem("dsn ?port=", f"is {query_port} but the DSN's port is {port}; "
                                            "give the port once")
            )  # fmt: skip
        port = port or query_port
    return host, port


def _redshift_problems(
    config: AwsIamConfig, database: str | None, options: dict[str, str]
) -> list[ConfigProblem]:
    # Redshift logs in as the user its API returns (IAM:<name>), to the database it was
    # minted for: a DSN may only repeat those, and driver settings go in keyword arguments.
    problems = []
    if database is not None and config.db_name is not None and database != config.db_name:
        problems.append(
            ConfigProblem("dsn", f"names database {database!r} but aws_iam.db_name is "
                                 f"{config.db_name!r}; the password is minted for db_name")
        )  # fmt: skip
    for name in options:
        problems.append(
            ConfigProblem(name, "is not a redshift:// DSN option; pass redshift-connector "
                                "settings as keyword arguments")
        )  # fmt: skip
    return problems
