"""``iampool demo``: the whole flow on this machine, with no AWS account and no set-up.

A local AWS stand-in (FakeAws) issues role credentials, an IAM gateway in front of PostgreSQL
checks every login the way RDS does, and an iampool pool runs a concurrent workload through it.
PostgreSQL is the local server when one answers (``IAMPOOL_TEST_PG_DSN`` or 127.0.0.1:5432),
else an embedded one from the ``pgserver`` wheel (the ``demo`` extra). The login role the demo
creates there is ``--login-user`` (or ``IAMPOOL_TEST_LOGIN_USER``), else named for the run
(``iam_demo_<hex>``), and dropped at the end if the demo created it, so two demos never share
one unless told to.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import anyio

from ._cache import CredentialCache
from ._config import AwsIamConfig
from .pools import create_pool

__all__ = ["DemoSummary", "run_demo"]

LOGIN_ROLE_PREFIX = "iam_demo_"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class DemoSummary:
    """What the demo measured (printed as a table, or as JSON with ``--json``)."""

    postgres: str
    login_role: str
    login_role_dropped: bool
    identity: str
    workers: int
    pool_size: int
    sts_assume_role_calls: int
    tokens_signed: int
    connections_opened: int
    logins_rejected: int
    queries_requested: int
    queries: int
    errors: int
    first_error: str | None
    queue_wait_p50_ms: float
    queue_wait_p99_ms: float
    elapsed_s: float
    queries_per_s: float

    @property
    def problems(self) -> list[str]:
        """Why the run did not prove its point, in words; empty when it did."""
        found = []
        if self.errors:
            found.append(
                f"{self.errors} of {self.queries_requested} queries failed "
                f"(first: {self.first_error})"
            )
        elif self.queries != self.queries_requested:
            found.append(f"only {self.queries} of {self.queries_requested} queries ran")
        if self.sts_assume_role_calls != 1:
            found.append(f"{self.sts_assume_role_calls} STS AssumeRole calls instead of 1")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        """One sentence: what the run proved, or why it did not."""
        if not self.ok:
            return "Not proved: " + "; ".join(self.problems) + "."
        calls = _plural(self.sts_assume_role_calls, "STS AssumeRole call")
        tokens = _plural(self.tokens_signed, "RDS auth token")
        return (
            f"Proved: {self.queries:,} queries from {self.workers} workers ran over "
            f"{_plural(self.connections_opened, 'connection')} whose every login was checked "
            f"as an RDS IAM token, and the whole run cost {calls} and {tokens}."
        )


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def run_demo(
    *,
    workers: int = 64,
    queries: int = 5000,
    pool_size: int = 10,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    login_user: str | None = None,
) -> int:
    """Run the demo; exit status 0 when every query succeeded on one AssumeRole call.

    ``login_user`` names the login role (default: ``IAMPOOL_TEST_LOGIN_USER``, else
    ``iam_demo_<hex>``, new for each run).

    Raises:
        ValueError: ``workers``, ``queries`` or ``pool_size`` below 1, or a login user name
            that is not 1 to 32 letters, digits or underscores.
    """
    for name, value in (("workers", workers), ("queries", queries), ("pool_size", pool_size)):
        if value < 1:
            raise ValueError(f"{name} must be 1 or more, got {value}")
    login = _login_user(login_user)
    summary = anyio.run(_run, workers, queries, pool_size, login)
    if as_json:
        document = asdict(summary) | {
            "ok": summary.ok,
            "verdict": summary.verdict,
            "problems": summary.problems,
        }
        print(json.dumps(document, indent=2), file=out)
    else:
        _print_table(summary, out)
    return 0 if summary.ok else 1


def _login_user(given: str | None) -> str:
    """The login role: ``given``, ``IAMPOOL_TEST_LOGIN_USER``, else one new for this run (so
    concurrent demos never share one). Checked as the testing kit checks names."""
    from .testing._launch import LOGIN_USER_VARIABLE, check_login_user

    if given:
        return check_login_user(given, "--login-user")
    configured = os.environ.get(LOGIN_USER_VARIABLE)
    if configured:
        return check_login_user(configured, LOGIN_USER_VARIABLE)
    return LOGIN_ROLE_PREFIX + secrets.token_hex(3)


async def _run(workers: int, queries: int, pool_size: int, login: str) -> DemoSummary:
    from .testing import FakeAws, IamGateway

    with FakeAws() as aws, aws.export_env(), _postgres() as (upstream, where):
        role = _RoleCleanup(upstream, login)
        async with role.dropped_afterwards():
            with IamGateway(
                "postgresql", upstream=upstream, authority=aws, region=aws.region
            ) as gateway:
                gateway.ensure_user(login)
                config = AwsIamConfig.from_extra(
                    {
                        "aws_iam": {
                            "enabled": True,
                            "region": aws.region,
                            # FakeAws, like IAM, only lets roles that exist be assumed.
                            "role_arn": aws.create_role(
                                "iampool-demo", external_id="iampool-demo-ext"
                            ),
                            "external_id": "iampool-demo-ext",
                            "db_username": login,
                        }
                    }
                )
                _say(f"AWS stand-in at {aws.endpoint_url}; PostgreSQL ({where}) behind an IAM "
                     f"gateway at {gateway.endpoint}; login role {login}")  # fmt: skip
                cache = CredentialCache()
                try:
                    pool = await create_pool(
                        gateway.dsn(login),
                        aws_iam=config,
                        min_size=1,
                        max_size=pool_size,
                        cache=cache,
                    )
                    try:
                        identity = str(await pool.fetchval("SELECT current_user"))
                        run = await _workload(pool, workers, queries)
                    finally:
                        await pool.close()
                finally:
                    await cache.aclose()
                tokens_signed = cache.stats()["tokens_signed"]
                connections_opened = gateway.accepted
                logins_rejected = sum(gateway.rejected.values())
        sts_calls = aws.calls["AssumeRole"]
    waits = sorted(run.waits)
    return DemoSummary(
        postgres=where,
        login_role=login,
        login_role_dropped=role.dropped,
        identity=identity,
        workers=workers,
        pool_size=pool_size,
        sts_assume_role_calls=sts_calls,
        tokens_signed=tokens_signed,
        connections_opened=connections_opened,
        logins_rejected=logins_rejected,
        queries_requested=queries,
        queries=run.succeeded,
        errors=run.errors,
        first_error=run.first_error,
        queue_wait_p50_ms=round(statistics.median(waits) * 1000, 3) if waits else 0.0,
        queue_wait_p99_ms=round(waits[max(0, int(len(waits) * 0.99) - 1)] * 1000, 3)
        if waits
        else 0.0,
        elapsed_s=round(run.elapsed, 3),
        queries_per_s=round(run.succeeded / run.elapsed, 1) if run.elapsed else 0.0,
    )


class _RoleCleanup:
    """Drops the demo's login role (and its grants) at the end, unless it existed before."""

    def __init__(self, admin_dsn: str, role: str) -> None:
        self._admin_dsn = admin_dsn
        self._role = role
        self.dropped = False

    @asynccontextmanager
    async def dropped_afterwards(self) -> AsyncIterator[None]:
        existed = await self._run("SELECT 1 FROM pg_roles WHERE rolname = $1", self._role)
        try:
            yield
        finally:
            if not existed:
                with anyio.CancelScope(shield=True):  # also after Ctrl-C
                    await self._drop()

    async def _drop(self) -> None:
        quoted = '"' + self._role.replace('"', '""') + '"'
        try:
            # DROP OWNED also revokes the grants the gateway gave the role on schema public.
            await self._run(f"DROP OWNED BY {quoted}; DROP ROLE IF EXISTS {quoted}")
        except Exception as exc:  # the demo's result stands; say what is left behind
            _say(f"could not drop login role {self._role} ({type(exc).__name__}: {exc}); "
                 f"drop it with: DROP OWNED BY {quoted}; DROP ROLE {quoted};")  # fmt: skip
        else:
            self.dropped = True

    async def _run(self, sql: str, *args: Any) -> Any:
        import asyncpg

        connection = await asyncpg.connect(self._admin_dsn)
        try:
            if args:
                return await connection.fetchval(sql, *args)
            return await connection.execute(sql)
        finally:
            await connection.close()


@dataclass
class _Workload:
    waits: list[float]
    succeeded: int
    errors: int
    first_error: str | None
    elapsed: float


async def _workload(pool: Any, workers: int, queries: int) -> _Workload:
    run = _Workload(waits=[], succeeded=0, errors=0, first_error=None, elapsed=0.0)
    remaining = queries
    progress = _Progress(queries)
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            asked = time.perf_counter()
            try:
                async with pool.acquire() as connection:
                    run.waits.append(time.perf_counter() - asked)
                    await connection.fetchval("SELECT 1")
                run.succeeded += 1
            except Exception as exc:  # counted and reported: the demo's verdict names the first
                run.errors += 1
                if run.first_error is None:
                    run.first_error = f"{type(exc).__name__}: {exc}"
            progress.step()

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)
    progress.done()
    run.elapsed = time.perf_counter() - started
    return run


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.enabled = sys.stderr.isatty()

    def step(self) -> None:
        self.count += 1
        if self.enabled and (self.count % max(1, self.total // 100) == 0):
            filled = self.count * 30 // self.total
            sys.stderr.write(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {self.count}/{self.total}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


@contextmanager
def _postgres() -> Iterator[tuple[str, str]]:
    """The upstream PostgreSQL admin DSN and where it came from."""
    configured = os.environ.get("IAMPOOL_TEST_PG_DSN")
    if configured and not os.environ.get("IAMPOOL_DEMO_EMBEDDED"):
        yield configured, "IAMPOOL_TEST_PG_DSN"
        return
    if not os.environ.get("IAMPOOL_DEMO_EMBEDDED") and _answers("127.0.0.1", 5432):
        yield LOCAL_PG, "local server 127.0.0.1:5432"
        return
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (containers, CI) when pgserver picks
        # its lock directory on import; the fallback it takes works, so keep the output clean.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        try:
            from pgserver import postgres_server
        except ImportError:
            raise SystemExit(
                "iampool demo: no PostgreSQL answers on 127.0.0.1:5432 and the embedded one is "
                "not installed: pip install 'iampool[demo]' (or set IAMPOOL_TEST_PG_DSN)"
            ) from None
    with tempfile.TemporaryDirectory(prefix="iampool-demo-") as directory:
        _say("starting an embedded PostgreSQL (pgserver)")
        server = postgres_server.get_server(os.path.join(directory, "pgdata"), cleanup_mode="stop")
        try:
            yield server.get_uri(), "embedded pgserver"
        finally:
            server.cleanup()


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _say(line: str) -> None:
    print(f"iampool demo: {line}", file=sys.stderr)


def _print_table(summary: DemoSummary, out: TextIO) -> None:
    if summary.login_role_dropped:
        role = f"{summary.login_role} (created for this run, dropped at the end)"
    else:
        role = f"{summary.login_role} (left in place)"
    rows = [
        ("PostgreSQL", summary.postgres),
        ("login role", role),
        ("logged in as", summary.identity),
        ("STS AssumeRole calls", str(summary.sts_assume_role_calls)),
        ("RDS tokens signed", str(summary.tokens_signed)),
        ("connections opened", str(summary.connections_opened)),
        ("logins rejected", str(summary.logins_rejected)),
        ("queries", f"{summary.queries:,} of {summary.queries_requested:,}"),
        ("errors", str(summary.errors)),
        (
            "queueing p50 / p99",
            f"{summary.queue_wait_p50_ms:.2f} ms / {summary.queue_wait_p99_ms:.2f} ms waiting for "
            f"a free connection ({summary.workers} workers share {summary.pool_size}; "
            "not iampool's cost)",
        ),
        ("elapsed", f"{summary.elapsed_s:.2f} s ({summary.queries_per_s:,.0f} queries/s)"),
        ("result", "OK" if summary.ok else "FAILED"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=out)
    print(f"\n{summary.verdict}", file=out)
