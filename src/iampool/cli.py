"""The ``iampool`` command: mint a token, check a connection, run the local demo or stand-in.

Exit codes: 0 success; 1 AWS or the database refused or failed; 2 bad usage or configuration.
Usage errors (arguments, files, ports, CA paths) are found before any AWS call and reported on
one line. Secrets are never printed, except the token ``iampool token`` was asked for.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import quote

import anyio

from . import __version__
from ._cache import CredentialCache, mint_context
from ._config import DISABLED, AwsIamConfig, disabled_first
from ._errors import (
    AuthTokenRejected,
    ConfigError,
    CredentialError,
    IamPoolError,
    shown,
)
from ._standin_options import add_arguments as add_standin_arguments
from .auth import auth_for
from .pools import Plan, resolve
from .pools._tls import ca_file_problem

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line that cannot work: reported on one line, exit status 2, before any AWS call."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is one ``--help`` away).

    It keeps what ``_parse`` needs to report a mistyped flag by the subcommand it was given to:
    the flags declared with ``add_argument`` on it or on one of its argument groups and, on the
    top level, the subcommands.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: dict[str, bool] = {}  # every --flag: whether it takes a value
        self.commands: Mapping[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._known(super().add_argument(*args, **kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        """A group whose flags this parser knows too (``iampool standin``'s servers)."""
        group = super().add_argument_group(*args, **kwargs)
        declare = group.add_argument

        def add_argument(*args: Any, **kwargs: Any) -> argparse.Action:
            return self._known(declare(*args, **kwargs))

        group.add_argument = add_argument  # type: ignore[method-assign]
        return group

    def _known(self, action: argparse.Action) -> argparse.Action:
        for option in action.option_strings:
            self.flags[option] = action.nargs != 0
        return action

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parse(parser: _Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but an unknown flag or a stray argument is reported by the
    subcommand it was given to, pointing at that subcommand's help (argparse leaves them to the
    top level, whose help does not list them), with the closest flag the subcommand has."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = _subcommand(parser, args)
    if command is not None:
        _refuse_unknown_flags(*command)
    parsed, unknown = parser.parse_known_args(args)
    if unknown:
        where = command[0] if command is not None else parser
        where.error(f"unrecognized arguments: {' '.join(_flag(arg) for arg in unknown)}")
    return parsed


def _flag(arg: str) -> str:
    """An argument as typed when it is plain text, else quoted with its escapes."""
    return arg if arg.isprintable() and len(arg) <= 60 else shown(arg, 60)


def _subcommand(parser: _Parser, argv: list[str]) -> tuple[_Parser, list[str]] | None:
    """The subcommand's parser and the arguments after its name, if ``argv`` names one."""
    for index, arg in enumerate(argv):
        if arg in parser.commands:
            return parser.commands[arg], argv[index + 1 :]
        if not arg.startswith("-"):
            return None  # an unknown command: argparse lists the choices
    return None


def _refuse_unknown_flags(parser: _Parser, argv: list[str]) -> None:
    """A ``--flag`` the subcommand does not know (nor abbreviates) is an error naming the
    closest flag it has, said before argparse would complain of a missing required one."""
    import difflib

    known = parser.flags
    expects_value = False
    for arg in argv:
        if expects_value:
            expects_value = False
            continue
        if arg == "--":
            return
        if not arg.startswith("--"):
            continue
        name, has_value, _ = arg.partition("=")
        matches = [flag for flag in known if flag.startswith(name)]
        if name in known or len(matches) == 1:
            expects_value = known[name if name in known else matches[0]] and not has_value
            continue
        if len(matches) > 1:
            continue  # ambiguous: argparse names the candidates
        closest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {closest[0]}?" if closest else ""
        parser.error(f"unrecognized arguments: {_flag(name)}{hint}")


def _digits(text: str) -> int | None:
    """``text`` as a whole number written in ASCII digits only, else None (``int()`` would
    also take "5_432", " 5432", "+5432" and other scripts' digits)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        return None
    return int(text)


def _count(text: str) -> int:
    """A whole number of 1 or more (workers, queries, pool size)."""
    value = _digits(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {shown(text)}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    if value > _MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_COUNT:,}, got {value}")
    return value


_MAX_COUNT = 1_000_000


def _port(text: str) -> int:
    value = _digits(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"must be a port number, got {shown(text)}")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {value}")
    return value


_MINT_ABOUT = """\
Mint database credentials the way a pool would, and print them: for RDS and Aurora the
IAM auth token (like `aws rds generate-db-auth-token`), for Redshift the temporary user, its
expiry and the endpoint, for a block naming secret_id (Secrets Manager) the secret's user and
endpoint (the password only with --show-password)."""

_MINT_EXAMPLES = """\
examples:
  iampool token --extra block.json --host mydb.cluster-abc123.us-east-1.rds.amazonaws.com \\
    --port 5432
  PGPASSWORD="$(iampool token --extra block.json --host "$HOST" --port 5432)" \\
    psql "host=$HOST user=app dbname=app sslmode=verify-full sslrootcert=global-bundle.pem"
  iampool token --extra redshift.json"""

_CHECK_ABOUT = """\
Connect once, as a pool would, and report each step: where the AWS credentials came from, the
database login, the credential expiry, connect time, the identity the server sees, and the TLS
mode used (with what the server reports about it, where it can)."""

_CHECK_EXAMPLES = """\
example:
  iampool check 'postgresql://mydb.cluster-abc123.us-east-1.rds.amazonaws.com/app' \\
    --extra block.json --sslrootcert global-bundle.pem"""

_DEMO_ABOUT = """\
Run iampool end to end on this machine, with no AWS account: a local AWS stand-in, an IAM
gateway that checks every login like RDS does, and PostgreSQL (the local server, else an
embedded one). Workers share a small pool; the summary says what the run proved."""

_DEMO_EXAMPLES = """\
examples:
  iampool demo
  iampool demo --workers 8 --queries 500 --pool-size 4 --json"""


_STANDIN_ABOUT = """\
Run a local AWS stand-in and an IAM gateway in front of each server given, print the
environment a client needs as shell export lines (AWS_ENDPOINT_URL and test credentials,
IAMPOOL_STANDIN_<SERVER>_DSN, IAMPOOL_STANDIN_AWS_IAM, ...), and serve until SIGINT or SIGTERM,
then drop the login users it created. Exit status 2 when it cannot start."""

_STANDIN_EXAMPLES = """\
examples:
  iampool standin --postgres postgresql://postgres@127.0.0.1:5432/postgres --env-file standin.env &
  until [ -s standin.env ]; do sleep 0.2; done; . ./standin.env
  iampool check "$IAMPOOL_STANDIN_POSTGRES_DSN" --extra "$IAMPOOL_STANDIN_AWS_IAM"
  kill %1"""


def _parser() -> _Parser:
    parser = _Parser(
        prog="iampool",
        description="AWS IAM database authentication for async Python pools.",
        epilog="examples:\n  iampool demo\n  iampool token --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"iampool {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = commands.choices  # the live table: every add_parser below lands in it
    extra_help = "the aws_iam block (or encrypted_extra): JSON text, a file, or - (stdin)"

    token = commands.add_parser(
        "token",
        help="print an RDS auth token (or a Redshift temporary user and expiry)",
        description=_MINT_ABOUT,
        epilog=_MINT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--extra", required=True, help=extra_help)
    token.add_argument("--host", help="database endpoint host (required for RDS)")
    token.add_argument(
        "--port", type=_port, help="database port (RDS: required unless the block has port)"
    )
    token.add_argument(
        "--show-password",
        action="store_true",
        help="Redshift, Secrets Manager: also print the password",
    )

    check = commands.add_parser(
        "check",
        help="connect once and report identity, TLS, timings",
        description=_CHECK_ABOUT,
        epilog=_CHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("dsn", help="postgresql://, mysql:// or redshift:// DSN without password")
    check.add_argument("--extra", required=True, help=extra_help)
    check.add_argument("--sslrootcert", help="CA file (PEM) to verify the server with: verify-full")

    demo = commands.add_parser(
        "demo",
        help="run everything locally: no AWS, no setup",
        description=_DEMO_ABOUT,
        epilog=_DEMO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--workers", type=_count, default=64, help="concurrent workers (64)")
    demo.add_argument("--queries", type=_count, default=5000, help="queries in all (5000)")
    demo.add_argument("--pool-size", type=_count, default=10, help="pool max_size (10)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument(
        "--login-user",
        metavar="NAME",
        help="the login role to create and use (default: IAMPOOL_TEST_LOGIN_USER, else unique)",
    )

    standin = commands.add_parser(
        "standin",
        help="run the testing kit as a process: fake AWS and IAM gateways for your servers",
        description=_STANDIN_ABOUT,
        epilog=_STANDIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_standin_arguments(standin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m iampool``."""
    args = _parse(_parser(), argv)
    try:
        if args.command == "token":
            return anyio.run(_token, args)
        if args.command == "check":
            return anyio.run(_check, args)
        if args.command == "standin":
            return _standin(args)
        from .demo import _login_user, run_demo

        try:
            _login_user(args.login_user)  # checked before anything starts
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return run_demo(
            workers=args.workers,
            queries=args.queries,
            pool_size=args.pool_size,
            as_json=args.json,
            login_user=args.login_user,
        )
    except UsageError as exc:
        _say(f"iampool {args.command}: {exc}")
        return EXIT_USAGE
    except ConfigError as exc:
        _say(f"iampool {args.command}: {_one_line(exc)}")
        return EXIT_USAGE
    except (CredentialError, AuthTokenRejected) as exc:
        _say(f"iampool: {exc}")
        return EXIT_FAILED
    except IamPoolError as exc:
        _say(f"iampool: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except Exception as exc:  # the drivers' own errors: report them, no traceback
        _say(f"iampool: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _standin(args: argparse.Namespace) -> int:
    try:
        from .testing._standin import StandinError, run
    except ImportError as exc:
        raise UsageError(
            f"needs the testing extra ({exc.name} is missing): pip install 'iampool[testing]'"
        ) from None
    try:
        return run(args)
    except StandinError as exc:
        raise UsageError(str(exc)) from None


def _say(message: str) -> None:
    """An error on one line of standard error (libpq's messages span several), at most 4 KB."""
    line = " ".join(message.split())
    print(line if len(line) <= 4000 else f"{line[:4000]}…", file=sys.stderr)


def _one_line(error: ConfigError) -> str:
    """A ``ConfigError`` on one line: its single problem, or the header and every problem."""
    if len(error.errors) == 1:
        return str(error.errors[0])
    header, *problems = str(error).split("\n")
    return f"{header} {'; '.join(problem.removeprefix('  - ') for problem in problems)}"


_MAX_EXTRA = 1 << 20  # bytes of --extra read: an aws_iam block is well under a kilobyte
_PATH_SHOWN = 200  # characters of a file name quoted in a message


def _load_config(extra: str) -> AwsIamConfig:
    """``--extra``: JSON text (it starts with ``{``), ``-`` for standard input, or a file."""
    if extra == "-":
        return _parsed(_read_limited(sys.stdin.buffer, "standard input"))
    if extra.lstrip().startswith("{"):
        return _parsed(extra)
    try:
        with Path(extra).open("rb") as file:
            data = _read_limited(file, shown(extra, _PATH_SHOWN))
    except FileNotFoundError:
        raise UsageError(
            f"--extra: no file {shown(extra, _PATH_SHOWN)} (give the aws_iam block as JSON "
            "text, a file, or -)"
        ) from None
    except (OSError, ValueError) as exc:  # a directory, no permission, a NUL in the name
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a file name"
        raise UsageError(f"--extra: cannot read {shown(extra, _PATH_SHOWN)}: {reason}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--extra: {shown(extra, _PATH_SHOWN)} is not UTF-8 text") from None
    return _parsed(text)


def _parsed(extra: str | bytes) -> AwsIamConfig:
    """The block; with ``"enabled": false`` that comes first among its problems (every command
    needs IAM auth)."""
    try:
        return AwsIamConfig.from_extra(extra)
    except ConfigError as exc:
        raise disabled_first(exc, extra) from None


def _read_limited(file: BinaryIO, name: str) -> bytes:
    """At most 1 MiB of ``file``: ``/dev/zero`` or a wrong file is refused, not read forever."""
    data = file.read(_MAX_EXTRA + 1)
    if len(data) > _MAX_EXTRA:
        raise UsageError(f"--extra: {name} holds more than 1 MiB: not an aws_iam block")
    return data


def _enabled(config: AwsIamConfig) -> AwsIamConfig:
    if not config.enabled:
        raise ConfigError(DISABLED)
    return config


async def _token(args: argparse.Namespace) -> int:
    config = _enabled(_load_config(args.extra))
    if config.backend == "rds":
        if not args.host:
            raise UsageError(
                "--host is required for RDS and Aurora: a token is signed for one endpoint"
            )
        if args.port is None and config.port is None:
            raise UsageError(
                "--port is required for RDS and Aurora (5432 PostgreSQL, 3306 MySQL), "
                "unless the block has port"
            )
    cache = CredentialCache()
    try:
        auth = auth_for(config, host=args.host, port=args.port, cache=cache)
        credentials = await auth.credentials()
    finally:
        await cache.aclose()
    if config.backend == "rds":
        print(credentials.password)
    else:
        print(f"user: {credentials.user}")
        print(f"expires: {credentials.expires_at.isoformat(timespec='seconds')}")
        if credentials.host:
            print(f"endpoint: {credentials.host}:{credentials.port}")
        if args.show_password:
            print(f"password: {credentials.password}")
    return EXIT_OK


async def _check(args: argparse.Namespace) -> int:
    config = _load_config(args.extra)
    dsn = args.dsn
    if args.sslrootcert:
        _check_ca_file(args.sslrootcert, "--sslrootcert")
        dsn += ("&" if "?" in dsn else "?") + f"sslrootcert={quote(args.sslrootcert, safe='/')}"
    cache = CredentialCache()
    report: list[tuple[str, str]] = []
    try:
        plan = resolve(dsn, config, cache)  # every local check done: the AWS calls start below
        auth = plan.auth
        started = time.perf_counter()
        aws = await mint_context(cache).aws_credentials(auth.config)  # region from the host
        report.append(("AWS credentials", f"{aws.source} ({_ms(started)})"))
        started = time.perf_counter()
        credentials = await auth.credentials()
        report.append(("database login", f"user {credentials.user} ({_ms(started)})"))
        report.append(("credential expiry", credentials.expires_at.isoformat(timespec="seconds")))
        started = time.perf_counter()
        facts, server_tls = await _probe(plan)
        report.append(("connect + query", _ms(started)))
        report.extend(facts)
        report.append(("TLS", plan.tls.describe()))
        report.append(("server TLS", server_tls))
    finally:
        await cache.aclose()
    width = max(len(name) for name, _ in report)
    for name, value in report:
        print(f"{name:<{width}}  {value}")
    return EXIT_OK


def _check_ca_file(path: str, name: str) -> None:
    """A CA file must exist and hold PEM certificates, or the connect fails after AWS calls."""
    problem = ca_file_problem(path)
    if problem is not None:
        raise UsageError(f"{name}: {problem}")


async def _probe(plan: Plan) -> tuple[list[tuple[str, str]], str]:
    """Identity and server facts, and what the server itself says about the session's TLS."""
    engine = plan.target.engine
    connection: Any = await plan.driver.connect(plan)
    try:
        if engine == "postgresql":
            row = await connection.fetchrow(
                "SELECT current_user, version(), "
                "(SELECT version || ' ' || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid() "
                "AND ssl)"
            )
            facts = [("identity", str(row[0])), ("server", str(row[1]).split(",")[0])]
            return facts, _server_tls(row[2], "pg_stat_ssl")
        if engine == "mysql":
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT CURRENT_USER(), VERSION()")
                user, version = await cursor.fetchone()
                await cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                cipher = await cursor.fetchone()
            facts = [("identity", str(user)), ("server", f"MySQL {version}")]
            return facts, _server_tls(cipher[1] if cipher and cipher[1] else None, "Ssl_cipher")
        row = await connection.fetchrow("SELECT current_user, version()")
        facts = [("identity", str(row[0])), ("server", str(row[1])[:80])]
        return facts, "not checked: Redshift does not report a session's TLS to this probe"
    finally:
        close = connection.close()
        if hasattr(close, "__await__"):
            await close


def _server_tls(seen: str | None, source: str) -> str:
    """What the server reports; the client side was TLS whatever it says (iampool insists)."""
    if seen:
        return f"{seen} (from {source})"
    return (
        f"{source} reports this session unencrypted: TLS ends at something in between "
        "(RDS Proxy, a load balancer, a test gateway)"
    )


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.1f} ms"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
