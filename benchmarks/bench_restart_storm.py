"""A restart storm against one RDS instance with its IAM login throttle on.

RDS and Aurora throttle IAM authentication per instance by *new* tokens: above a rate of
distinct tokens a second, logins are refused ("too many competing requests"), while a login
that presents a token the instance already accepted is not counted. This benchmark shows what
that means for a fleet that restarts at once (a deploy, a failover): ``--processes`` fresh
processes (8) are started and held at a barrier, then all at once each opens ``--connections``
connections (16) through an asyncpg pool, every one of them to the same RDS-mode
``IamGateway`` (in front of the real PostgreSQL) with its throttle on (``login_rate``:
``--login-rate`` distinct tokens a second, 20 by default), their AWS credentials coming from
the same ``FakeAws``. Sides, each a storm of its own:

- ``iampool``: ``iampool.create_pool`` (asyncpg), a fresh cache per process: one AssumeRole and
  one token per process, reused by every connection; a throttled login is retried with the
  same token after a jittered pause;
- ``iampool again``: the same storm a second time, the A/A control (its ratio to the first is
  1.00 in truth and shows this run's noise);
- ``per-connect``: Superset's pattern (``superset/db_engine_specs/aws_iam.py``, as
  ``bench_peers.py`` and ``bench_superset.py`` model it): every new connection gets its token
  from a new ``boto3.client("rds")`` and ``generate_db_auth_token``, on STS credentials from a
  process-wide cache (10 minutes, no single flight: concurrent first logins each call
  AssumeRole through a new ``boto3.client("sts")``); the work is synchronous, so it runs on a
  thread per connection (a web server's request threads); the token is the asyncpg pool's
  ``password`` callable. A refused login is a failed connection, as in Superset;
- ``per-connect + retries``: the same, with the application retrying a refused connection (a
  new token each try) after the same jittered pauses as iampool's, for as long as iampool's
  login bound (30 s).

Each process creates its pool (``min_size=0``) when the barrier opens and asks for all its
connections at once (held until every one is open, then ``SELECT 1`` on each). Reported per
side (median over ``--rounds`` storms, sides in rotating order): logins the gateway refused as
throttled, connections that failed, time from the barrier until the last connection of the
fleet was open ("-" when one failed), and the AWS calls and tokens behind them (AssumeRole
calls counted by FakeAws, tokens signed and distinct tokens counted in each process). A new
throttle (an empty second) starts each storm.

Run: ``.venv/bin/python benchmarks/bench_restart_storm.py`` (about 4 minutes on a loaded 2-CPU
machine; ``--rounds 1`` about 1.5). ``IAMPOOL_TEST_PG_DSN`` names the upstream server (default:
PostgreSQL at 127.0.0.1:5432 as postgres); a storm holds processes x connections server
connections.
Prints numbers, never secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import random
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

REGION = "us-east-1"
USER = "app"
PG_UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
LOGIN_BOUND = 30.0  # iampool's default connect_timeout, which bounds its throttled retries
BARRIER_TIMEOUT = 300.0  # processes importing on a loaded machine

IAMPOOL, CONTROL, PER_CONNECT, PER_CONNECT_RETRY = (
    "iampool",
    "iampool again (A/A)",
    "per-connect (Superset's)",
    "per-connect + app retries",
)
SIDES = (IAMPOOL, CONTROL, PER_CONNECT, PER_CONNECT_RETRY)
DESCRIPTIONS = {
    IAMPOOL: "token reuse, throttle-aware retry",
    CONTROL: "the same storm again",
    PER_CONNECT: "new boto3 client + token per connect",
    PER_CONNECT_RETRY: "same, retried with a new token",
}


@dataclass(frozen=True)
class Target:
    """What a storm's processes need: where to log in, as whom, and how many connections."""

    host: str
    port: int
    database: str
    ca_path: str
    role_arn: str
    connections: int


@dataclass
class Outcome:
    """One process's storm, as it saw it (times are ``time.time()``: comparable across
    processes on one machine)."""

    started: float
    finished: float
    connected: int
    failed: int
    tokens_signed: int
    distinct_tokens: int
    errors: list[str]


# -- in each process ----------------------------------------------------------------------------


class PerConnectTokens:
    """Superset's token path: STS credentials from a process-wide cache (10 minutes per role and
    region; a miss calls AssumeRole through a new ``boto3.client("sts")``, and concurrent misses
    each call it), then for every connection a new ``boto3.client("rds")`` on those credentials
    and ``generate_db_auth_token``. Synchronous, run on one thread per connection."""

    STS_TTL = 600.0

    def __init__(self, target: Target) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sts: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self.signed = 0
        self._digests: set[str] = set()

    def credentials(self) -> dict[str, Any]:
        import boto3

        key = (self.target.role_arn, REGION)
        with self._lock:
            cached = self._sts.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.STS_TTL:
            return cached[0]
        sts = boto3.client("sts", region_name=REGION)
        try:
            issued: dict[str, Any] = sts.assume_role(
                RoleArn=self.target.role_arn,
                RoleSessionName="superset-iam-session",
                DurationSeconds=3600,
            )["Credentials"]
        finally:
            sts.close()
        with self._lock:
            self._sts[key] = (issued, time.monotonic())
        return issued

    def token(self) -> str:
        import boto3

        issued = self.credentials()
        rds = boto3.client(
            "rds",
            region_name=REGION,
            aws_access_key_id=issued["AccessKeyId"],
            aws_secret_access_key=issued["SecretAccessKey"],
            aws_session_token=issued["SessionToken"],
        )
        token: str = rds.generate_db_auth_token(
            DBHostname=self.target.host, Port=self.target.port, DBUsername=USER
        )
        with self._lock:
            self.signed += 1
            self._digests.add(hashlib.sha256(token.encode()).hexdigest())
        return token

    @property
    def distinct(self) -> int:
        with self._lock:
            return len(self._digests)


def backoff(retry: int) -> float:
    """iampool's pause before retry number ``retry`` of a throttled login (full jitter)."""
    return random.uniform(0.0, min(2.0, 0.05 * 2.0 ** (retry - 1)))


async def open_all(
    acquire: Callable[[], Awaitable[Any]], count: int, retries: bool
) -> tuple[list[Any], list[str]]:
    """``count`` connections asked for at once; those opened, and why the others failed."""

    async def one() -> Any:
        tries = 0
        bound = time.monotonic() + LOGIN_BOUND
        while True:
            try:
                return await acquire()
            except asyncpg.PostgresError as exc:
                tries += 1
                pause = backoff(tries)
                if not retries or time.monotonic() + pause >= bound:
                    raise
                del exc
                await asyncio.sleep(pause)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = [result for result in results if not isinstance(result, BaseException)]
    errors = [type(result).__name__ for result in results if isinstance(result, BaseException)]
    return opened, errors


async def storm(side: str, target: Target, go: Any) -> Outcome:
    tls = ssl.create_default_context(cafile=target.ca_path)
    if side in (IAMPOOL, CONTROL):
        import iampool
        from iampool import AwsIamConfig, CredentialCache

        config = AwsIamConfig.from_extra(
            {"enabled": True, "region": REGION, "role_arn": target.role_arn, "db_username": USER}
        )
        dsn = (
            f"postgresql://{USER}@{target.host}:{target.port}/{target.database}"
            f"?sslmode=verify-full&sslrootcert={target.ca_path}"
        )
        cache = CredentialCache()
        go.wait(BARRIER_TIMEOUT)
        started = time.time()
        pool = await iampool.create_pool(
            dsn, aws_iam=config, cache=cache, min_size=0, max_size=target.connections
        )
        opened, errors = await open_all(pool.acquire, target.connections, retries=False)
        finished = time.time()
        signed = distinct = cache.stats()["tokens_signed"]
        await release_all(pool, opened)
        await cache.aclose()
    else:
        tokens = PerConnectTokens(target)
        threads = ThreadPoolExecutor(max_workers=target.connections)  # a thread per request
        loop = asyncio.get_running_loop()

        async def password() -> str:
            return await loop.run_in_executor(threads, tokens.token)

        go.wait(BARRIER_TIMEOUT)
        started = time.time()
        pool = await asyncpg.create_pool(
            host=target.host,
            port=target.port,
            user=USER,
            database=target.database,
            password=password,
            ssl=tls,
            min_size=0,
            max_size=target.connections,
            timeout=LOGIN_BOUND,
        )
        opened, errors = await open_all(
            pool.acquire, target.connections, retries=side == PER_CONNECT_RETRY
        )
        finished = time.time()
        signed, distinct = tokens.signed, tokens.distinct
        await release_all(pool, opened)
        threads.shutdown()
    return Outcome(started, finished, len(opened), len(errors), signed, distinct, errors)


async def release_all(pool: Any, opened: list[Any]) -> None:
    for connection in opened:
        await connection.fetchval("SELECT 1")
    for connection in opened:
        await pool.release(connection)
    await pool.close()


def process_main(side: str, target: Target, go: Any, results: Any) -> None:
    """One restarting process: imports done, wait at the barrier, storm, report."""
    import logging

    logging.disable(logging.WARNING)  # iampool's retry lines; the table is the output
    try:
        outcome = asyncio.run(storm(side, target, go))
    except BaseException as exc:  # reported, not raised: the parent counts it
        now = time.time()
        outcome = Outcome(now, now, 0, target.connections, 0, 0, [type(exc).__name__])
    results.put(outcome)


# -- the parent ---------------------------------------------------------------------------------


@dataclass
class Storm:
    refused: int  # logins the gateway refused as throttled
    other_refusals: int
    accepted: int
    failed: int
    seconds: float | None  # from the barrier to the fleet's last connection; None: some failed
    assume_role: int
    signed: int
    distinct: int
    errors: list[str]


def run_storm(
    side: str, target: Target, processes: int, login_rate: int, gateway: Any, aws: Any
) -> Storm:
    context = multiprocessing.get_context("spawn")
    go = context.Barrier(processes + 1)
    results = context.Queue()
    workers = [
        context.Process(target=process_main, args=(side, target, go, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    gateway.limit(login_rate=login_rate, session_lifetime=None)  # an empty second
    time.sleep(1.1)  # and nothing of the previous storm in it
    refused_before = gateway.rejected
    accepted_before = gateway.accepted
    assume_before = aws.calls["AssumeRole"]
    go.wait(BARRIER_TIMEOUT)
    outcomes = [results.get(timeout=BARRIER_TIMEOUT + 120) for _ in workers]
    for worker in workers:
        worker.join()
    rejected = gateway.rejected - refused_before
    failed = sum(outcome.failed for outcome in outcomes)
    return Storm(
        refused=rejected["throttled"],
        other_refusals=sum(rejected.values()) - rejected["throttled"],
        accepted=gateway.accepted - accepted_before,
        failed=failed,
        seconds=None
        if failed
        else max(o.finished for o in outcomes) - min(o.started for o in outcomes),
        assume_role=aws.calls["AssumeRole"] - assume_before,
        signed=sum(outcome.tokens_signed for outcome in outcomes),
        distinct=sum(outcome.distinct_tokens for outcome in outcomes),
        errors=sorted({error for outcome in outcomes for error in outcome.errors}),
    )


def rotations(sides: tuple[str, ...], rounds: int) -> list[tuple[str, ...]]:
    return [sides[index % len(sides) :] + sides[: index % len(sides)] for index in range(rounds)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(storms: dict[str, list[Storm]], args: argparse.Namespace) -> None:
    print(
        f"bench_restart_storm.py, {date.today().isoformat()}, {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}"
    )
    print(
        f"{args.processes} processes x {args.connections} connections at once, one RDS-mode "
        f"gateway with login_rate={args.login_rate} distinct tokens/s; medians of "
        f"{args.rounds} storm(s) per side"
    )
    print()
    print(
        "| side | logins refused (throttled) | connections failed | time to all connected "
        "| vs iampool | AssumeRole calls | tokens signed (distinct) |"
    )
    print("|---|---|---|---|---|---|---|")
    base = [s.seconds for s in storms[IAMPOOL]]
    for side in SIDES:
        runs = storms[side]
        times = [s.seconds for s in runs]
        if all(t is not None for t in times):
            seconds = median([t for t in times if t is not None])
            ratios = [
                t / b for t, b in zip(times, base, strict=True) if t is not None and b is not None
            ]
            when = f"{seconds:.2f} s"
            ratio = f"{median(ratios):.2f}x" if len(ratios) == len(runs) else "-"
        else:
            done = [t for t in times if t is not None]
            when = f"- ({len(times) - len(done)} of {len(times)} storms incomplete)"
            ratio = "-"
        refused = median([s.refused for s in runs])
        failed = median([s.failed for s in runs])
        calls = median([s.assume_role for s in runs])
        signed = median([s.signed for s in runs])
        distinct = median([s.distinct for s in runs])
        print(
            f"| {side}: {DESCRIPTIONS[side]} | {refused:g} | {failed:g} of "
            f"{args.processes * args.connections} | {when} | {ratio} | {calls:g} "
            f"| {signed:g} ({distinct:g}) |"
        )
    print()
    for side in SIDES:
        for index, run in enumerate(storms[side]):
            extra = f", other refusals {run.other_refusals}" if run.other_refusals else ""
            errors = f", errors: {', '.join(run.errors)}" if run.errors else ""
            seconds = "-" if run.seconds is None else f"{run.seconds:.2f} s"
            print(
                f"  {side} storm {index + 1}: refused {run.refused}, accepted {run.accepted}, "
                f"failed {run.failed}, {seconds}{extra}{errors}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16, help="per process")
    parser.add_argument("--login-rate", type=int, default=20, help="distinct tokens a second")
    parser.add_argument("--rounds", type=int, default=3, help="storms per side")
    args = parser.parse_args()

    import logging

    from iampool.testing import FakeAws, IamGateway

    logging.disable(logging.WARNING)
    with FakeAws(region=REGION) as aws, aws.export_env():  # the children inherit the environment
        gateway = IamGateway(
            "postgresql",
            upstream=PG_UPSTREAM,
            authority=aws,
            region=REGION,
            mode="rds",
            login_rate=args.login_rate,
        )
        gateway.start()
        try:
            gateway.ensure_user(USER)
            target = Target(
                host=gateway.host,
                port=gateway.port,
                database=gateway.upstream.database or "postgres",
                ca_path=str(gateway.ca_path),
                role_arn=aws.create_role("bench-restart-storm"),
                connections=args.connections,
            )
            storms: dict[str, list[Storm]] = {side: [] for side in SIDES}
            for order in rotations(SIDES, args.rounds):
                for side in order:
                    print(f"storm: {side}", file=sys.stderr, flush=True)
                    storms[side].append(
                        run_storm(side, target, args.processes, args.login_rate, gateway, aws)
                    )
                    gateway.wait_idle(30.0)
        finally:
            gateway.drop_created_users()
            gateway.stop()
    report(storms, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
