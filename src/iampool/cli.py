"""The ``iampool`` command: mint a token, check a connection, run the local demo.

Exit codes: 0 success; 1 AWS or the database refused or failed; 2 bad usage or configuration.
Secrets are never printed, except the token ``iampool token`` was asked for.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from . import __version__
from ._cache import CredentialCache, mint_context
from ._config import AwsIamConfig
from ._errors import (
    AuthTokenRejected,
    ConfigError,
    ConfigProblem,
    CredentialError,
    IamPoolError,
)
from .auth import auth_for
from .pools import resolve
from .pools._dsn import Target

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _load_config(extra: str) -> AwsIamConfig:
    """``--extra``: a file path, ``-`` for standard input, or the JSON itself."""
    if extra == "-":
        return AwsIamConfig.from_extra(sys.stdin.read())
    path = Path(extra)
    if not extra.lstrip().startswith("{") and path.is_file():
        return AwsIamConfig.from_extra(path.read_text(encoding="utf-8"))
    return AwsIamConfig.from_extra(extra)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iampool", description="AWS IAM database authentication for async Python pools."
    )
    parser.add_argument("--version", action="version", version=f"iampool {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = commands.add_parser(
        "token", help="print an RDS auth token (or a Redshift temporary user and expiry)"
    )
    token.add_argument("--extra", required=True, help="aws_iam block: JSON, a file, or - (stdin)")
    token.add_argument("--host", help="database endpoint host (required for RDS)")
    token.add_argument("--port", type=int, help="database port (RDS: required unless in --extra)")
    token.add_argument(
        "--show-password",
        action="store_true",
        help="Redshift: also print the temporary password",
    )

    check = commands.add_parser("check", help="connect once and report identity, TLS, timings")
    check.add_argument("dsn", help="postgresql://, mysql:// or redshift:// DSN without password")
    check.add_argument("--extra", required=True, help="aws_iam block: JSON, a file, or - (stdin)")
    check.add_argument("--sslrootcert", help="CA file to verify the server with (verify-full)")

    demo = commands.add_parser("demo", help="run everything locally: no AWS, no setup")
    demo.add_argument("--workers", type=int, default=64, help="concurrent workers (default 64)")
    demo.add_argument("--queries", type=int, default=5000, help="queries in all (default 5000)")
    demo.add_argument("--pool-size", type=int, default=10, help="pool max_size (default 10)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m iampool``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "token":
            return anyio.run(_token, args)
        if args.command == "check":
            return anyio.run(_check, args)
        from .demo import run_demo

        return run_demo(
            workers=args.workers, queries=args.queries, pool_size=args.pool_size, as_json=args.json
        )
    except ConfigError as exc:
        print(f"iampool: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CredentialError, AuthTokenRejected) as exc:
        print(f"iampool: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except IamPoolError as exc:
        print(f"iampool: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # the drivers' own errors: report them, no traceback
        print(f"iampool: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _enabled(config: AwsIamConfig) -> AwsIamConfig:
    if not config.enabled:
        raise ConfigError(
            ConfigProblem("enabled", "is false: this aws_iam block does not ask for IAM auth")
        )
    return config


async def _token(args: argparse.Namespace) -> int:
    config = _enabled(_load_config(args.extra))
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
        dsn += ("&" if "?" in dsn else "?") + f"sslrootcert={args.sslrootcert}"
    cache = CredentialCache()
    report: list[tuple[str, str]] = []
    try:
        target, auth = resolve(dsn, config, cache)
        started = time.perf_counter()
        aws = await mint_context(cache).aws_credentials(config)
        report.append(("AWS credentials", f"{aws.source} ({_ms(started)})"))
        started = time.perf_counter()
        credentials = await auth.credentials()
        report.append(("database login", f"user {credentials.user} ({_ms(started)})"))
        report.append(("credential expiry", credentials.expires_at.isoformat(timespec="seconds")))
        started = time.perf_counter()
        facts = await _probe(target, dsn, config, cache)
        report.append(("connect + query", _ms(started)))
        report.extend(facts)
    finally:
        await cache.aclose()
    width = max(len(name) for name, _ in report)
    for name, value in report:
        print(f"{name:<{width}}  {value}")
    return EXIT_OK


async def _probe(
    target: Target, dsn: str, config: AwsIamConfig, cache: CredentialCache
) -> list[tuple[str, str]]:
    from .pools import connect

    engine = target.engine
    connection: Any = await connect(dsn, aws_iam=config, cache=cache)
    try:
        if engine == "postgresql":
            row = await connection.fetchrow(
                "SELECT current_user, version(), "
                "(SELECT version || ' ' || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid() "
                "AND ssl)"
            )
            return [
                ("identity", str(row[0])),
                ("server", str(row[1]).split(",")[0]),
                ("TLS", _tls_line(target, row[2])),
            ]
        if engine == "mysql":
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT CURRENT_USER(), VERSION()")
                user, version = await cursor.fetchone()
                await cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                cipher = await cursor.fetchone()
            return [
                ("identity", str(user)),
                ("server", f"MySQL {version}"),
                ("TLS", _tls_line(target, cipher[1] if cipher and cipher[1] else None)),
            ]
        row = await connection.fetchrow("SELECT current_user, version()")
        return [
            ("identity", str(row[0])),
            ("server", str(row[1])[:80]),
            ("TLS", _tls_line(target, None)),
        ]
    finally:
        close = connection.close()
        if hasattr(close, "__await__"):
            await close


def _tls_line(target: Target, server_view: str | None) -> str:
    """The client side is always TLS (iampool refuses anything else); the server may see it
    terminated by a proxy in between (RDS Proxy, a load balancer, iampool's test gateway)."""
    seen = server_view or "not encrypted on its side (TLS ends at a proxy in between)"
    return f"sslmode={target.sslmode} (client); server: {seen}"


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.1f} ms"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
