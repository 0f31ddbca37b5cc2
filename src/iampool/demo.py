"""``iampool demo``: the whole flow on this machine, with no AWS account and no set-up.

A local AWS stand-in (FakeAws) issues role credentials, an IAM gateway in front of PostgreSQL
checks every login the way RDS does, and an iampool pool runs a concurrent workload through it.
PostgreSQL is the local server when one answers (``IAMPOOL_TEST_PG_DSN`` or 127.0.0.1:5432),
else an embedded one from the ``pgserver`` wheel (``pip install 'iampool[demo]'``).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import anyio

from ._cache import CredentialCache
from ._config import AwsIamConfig
from .pools import create_pool

__all__ = ["DemoSummary", "run_demo"]

LOGIN_USER = "iam_demo"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class DemoSummary:
    """What the demo measured (printed as a table, or as JSON with ``--json``)."""

    postgres: str
    identity: str
    sts_assume_role_calls: int
    tokens_signed: int
    connections_opened: int
    logins_rejected: int
    queries: int
    errors: int
    acquire_p50_ms: float
    acquire_p99_ms: float
    elapsed_s: float
    queries_per_s: float

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.sts_assume_role_calls == 1 and self.queries > 0


def run_demo(
    *,
    workers: int = 64,
    queries: int = 5000,
    pool_size: int = 10,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Run the demo; exit status 0 when every query succeeded on one AssumeRole call."""
    summary = anyio.run(_run, workers, queries, pool_size)
    if as_json:
        print(json.dumps(asdict(summary) | {"ok": summary.ok}, indent=2), file=out)
    else:
        _print_table(summary, out)
    return 0 if summary.ok else 1


async def _run(workers: int, queries: int, pool_size: int) -> DemoSummary:
    from .testing import FakeAws, IamGateway

    with (
        FakeAws() as aws,
        aws.export_env(),
        _postgres() as (upstream, where),
        IamGateway("postgresql", upstream=upstream, authority=aws, region=aws.region) as gateway,
    ):
        gateway.ensure_user(LOGIN_USER)
        config = AwsIamConfig.from_extra(
            {
                "aws_iam": {
                    "enabled": True,
                    "region": aws.region,
                    "role_arn": aws.create_role("iampool-demo", external_id="iampool-demo-ext"),
                    "external_id": "iampool-demo-ext",
                    "db_username": LOGIN_USER,
                }
            }
        )
        _say(f"AWS stand-in at {aws.endpoint_url}; PostgreSQL ({where}) behind an IAM gateway "
             f"at {gateway.endpoint}")  # fmt: skip
        cache = CredentialCache()
        try:
            pool = await create_pool(
                gateway.dsn(LOGIN_USER), aws_iam=config, min_size=1, max_size=pool_size, cache=cache
            )
            try:
                identity = str(await pool.fetchval("SELECT current_user"))
                waits, errors, elapsed = await _workload(pool, workers, queries)
            finally:
                await pool.close()
        finally:
            await cache.aclose()
        stats = cache.stats()
        waits.sort()
        return DemoSummary(
            postgres=where,
            identity=identity,
            sts_assume_role_calls=aws.calls["AssumeRole"],
            tokens_signed=stats["tokens_signed"],
            connections_opened=gateway.accepted,
            logins_rejected=sum(gateway.rejected.values()),
            queries=len(waits),
            errors=errors,
            acquire_p50_ms=round(statistics.median(waits) * 1000, 3) if waits else 0.0,
            acquire_p99_ms=round(waits[int(len(waits) * 0.99) - 1] * 1000, 3) if waits else 0.0,
            elapsed_s=round(elapsed, 3),
            queries_per_s=round(len(waits) / elapsed, 1) if elapsed else 0.0,
        )


async def _workload(pool: Any, workers: int, queries: int) -> tuple[list[float], int, float]:
    waits: list[float] = []
    errors = 0
    remaining = queries
    progress = _Progress(queries)
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            asked = time.perf_counter()
            try:
                async with pool.acquire() as connection:
                    waits.append(time.perf_counter() - asked)
                    await connection.fetchval("SELECT 1")
            except Exception:  # counted and reported: the demo's verdict is the error count
                errors += 1
            progress.step()

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)
    progress.done()
    return waits, errors, time.perf_counter() - started


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
    try:
        from pgserver import postgres_server
    except ImportError:
        raise SystemExit(
            "iampool demo: no PostgreSQL answers on 127.0.0.1:5432 and the embedded one is not "
            "installed: pip install 'iampool[demo]' (or set IAMPOOL_TEST_PG_DSN)"
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
    rows = [
        ("PostgreSQL", summary.postgres),
        ("logged in as", summary.identity),
        ("STS AssumeRole calls", str(summary.sts_assume_role_calls)),
        ("RDS tokens signed", str(summary.tokens_signed)),
        ("connections opened", str(summary.connections_opened)),
        ("logins rejected", str(summary.logins_rejected)),
        ("queries", str(summary.queries)),
        ("errors", str(summary.errors)),
        ("acquire p50 / p99", f"{summary.acquire_p50_ms:.2f} ms / {summary.acquire_p99_ms:.2f} ms"),
        ("elapsed", f"{summary.elapsed_s:.2f} s ({summary.queries_per_s:,.0f} queries/s)"),
        ("result", "OK" if summary.ok else "FAILED"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=out)
