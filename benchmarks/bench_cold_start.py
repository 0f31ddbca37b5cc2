"""A cold herd in a cold process: 500 tasks on a pool of 50, against a static-token floor.

Each measurement runs in a fresh Python process, as a worker that has just started: asyncpg and
iampool are imported, nothing has called AWS, no aiobotocore client exists. Timed: from the
pool's creation until 500 tasks have each acquired a connection and run ``SELECT 1`` (the pool
opens its 50 connections on demand: ``min_size=0``).

- iampool: ``iampool.create_pool(dsn, aws_iam=..., min_size=0, max_size=50)``, a new process's
  ``default_cache()``: it builds its STS client and calls AssumeRole inside the timed region;
- floor: ``asyncpg.create_pool(..., password=<token>)``, the same gateway and TLS settings, with
  one token minted by the parent before the run (a static password, no AWS at all);
- control: the floor again, an A/A control whose ratio is 1.00 in truth;
- iampool, started: as an application does it, the pool is created at start-up and the herd
  arrives 0.5 s later (only the herd is timed): the STS client, built when the pool is created,
  and the credentials are then off the herd's path.

Rounds run the four in rotating order; the ratio is the median of per-round ratios to the floor.
Everything goes through one RDS-mode ``IamGateway`` in front of the real PostgreSQL, and to one
``FakeAws`` (both in the parent process, reached over 127.0.0.1). Target (DESIGN §6): at most 1.15x.

    .venv/bin/python benchmarks/bench_cold_start.py [--rounds 7]

Prints numbers, never secrets (the floor's token reaches its child in an environment variable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

REGION = "us-east-1"
USER = "app"
TASKS, POOL = 500, 50
PG_UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SIDES = ("iampool", "floor", "control", "started")
STARTUP = 0.5  # seconds between the pool's creation and the herd, for "started"


def child(side: str, dsn: str, block: str) -> dict[str, Any]:
    """One cold herd in this (fresh) process."""
    import asyncpg

    import iampool

    async def herd() -> dict[str, Any]:
        started = time.perf_counter()
        if side in ("iampool", "started"):
            pool = await iampool.create_pool(dsn, aws_iam=block, min_size=0, max_size=POOL)
            if side == "started":
                await asyncio.sleep(STARTUP)
                started = time.perf_counter()
        else:
            from iampool.pools._dsn import parse_target
            from iampool.pools._tls import tls_context

            target = parse_target(dsn, iampool.AwsIamConfig.from_extra(block))
            pool = await asyncpg.create_pool(
                host=target.host,
                port=target.port,
                user=USER,
                database=target.database,
                password=os.environ["BENCH_STATIC_TOKEN"],
                ssl=tls_context(target),
                min_size=0,
                max_size=POOL,
            )

        async def task() -> None:
            async with pool.acquire() as connection:
                await connection.fetchval("SELECT 1")

        await asyncio.gather(*(task() for _ in range(TASKS)))
        seconds = time.perf_counter() - started
        await pool.close()
        stats = iampool.default_cache().stats()
        return {
            "seconds": seconds,
            "sts_calls": stats["sts_calls"],
            "signed": stats["tokens_signed"],
        }

    return asyncio.run(herd())


def run_child(side: str, dsn: str, block: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - this script, run again as a child
        [sys.executable, __file__, "--child", side, "--dsn", dsn, "--block", block],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench_cold_start: the {side} child failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def parent(rounds: int) -> None:
    from iampool import CredentialCache, auth_for
    from iampool.testing import FakeAws, IamGateway

    started_at, load = time.perf_counter(), os.getloadavg()[0]
    with FakeAws(region=REGION) as aws, aws.export_env():
        gateway = IamGateway("postgresql", upstream=PG_UPSTREAM, authority=aws, region=REGION)
        gateway.start()
        try:
            gateway.ensure_user(USER)
            block = json.dumps(
                {
                    "enabled": True,
                    "region": REGION,
                    "role_arn": aws.create_role("bench-cold-start"),
                    "db_username": USER,
                }
            )
            dsn = gateway.dsn(USER)

            async def static_token() -> str:
                cache = CredentialCache()
                try:
                    auth = auth_for(block, host=gateway.host, port=gateway.port, cache=cache)
                    return (await auth.credentials()).password
                finally:
                    await cache.aclose()

            env = {**os.environ, "BENCH_STATIC_TOKEN": asyncio.run(static_token())}
            results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
            for index in range(rounds):
                order = SIDES[index % len(SIDES) :] + SIDES[: index % len(SIDES)]
                for side in order:
                    results[side].append(run_child(side, dsn, block, env))
        finally:
            gateway.stop()

    floor = results["floor"]
    ratios = {
        side: statistics.median(
            run["seconds"] / base["seconds"] for run, base in zip(runs, floor, strict=True)
        )
        for side, runs in results.items()
    }
    print(f"cold herd: {TASKS} tasks, pool of {POOL}, each run in a fresh process; {rounds} rounds")
    print(f"(started: the herd arrives {STARTUP:g} s after the pool was created; herd timed only)")
    print(f"{'side':<9} {'median':>9} {'min':>9} {'max':>9} {'vs floor':>9}  AssumeRole, tokens")
    for side, runs in results.items():
        seconds = [run["seconds"] * 1e3 for run in runs]
        calls = {(run["sts_calls"], run["signed"]) for run in runs}
        print(
            f"{side:<9} {statistics.median(seconds):>6.0f} ms {min(seconds):>6.0f} ms "
            f"{max(seconds):>6.0f} ms {ratios[side]:>8.3f}x  {sorted(calls)}"
        )
    print("\ntarget: iampool <= 1.15x the floor; control: the floor against itself (A/A).")
    print(
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at "
        f"end, {time.perf_counter() - started_at:.0f} s in all."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the four sides (7)")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--block", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.child, options.dsn, options.block)))
    else:
        parent(options.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
