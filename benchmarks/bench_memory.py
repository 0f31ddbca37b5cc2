"""Memory per cached endpoint, and what a call costs below and beyond the cache's bound.

Every key is a distinct RDS endpoint with its own signed token, the biggest kind of entry.
Credentials come from a local static source: no AWS, no network; what is measured is the cache.

1. Memory: 10,000 and 100,000 endpoints at default settings (tracemalloc, after a GC; the
   authenticators are created first, so only what the cache keeps is counted). Target: at most
   600 B per endpoint (issue 16), < 20 MB for 10,000 keys (DESIGN §6).
2. The curve: warm `credentials()` per call with N endpoints in rotation (each called in turn),
   for a cache bound of 10,000 entries: below the bound every call is a hit; beyond it every
   call finds its token evicted and signs a new one on the spot. Baseline, same run: botocore's
   `generate_db_auth_token` per call (what signing on every connect costs), measured before
   and after each row: the second over the first is the row's A/A control (1.00x in truth).

    .venv/bin/python benchmarks/bench_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc

import botocore.session

from iampool import AwsIamConfig, CredentialCache, DbAuth, auth_for
from iampool._aws import AwsCredentials

CONFIG = AwsIamConfig.from_extra(
    {
        "enabled": True,
        "region": "us-east-1",
        "db_username": "app",
        "role_arn": "arn:aws:iam::123456789012:role/bench",
    }
)


class StaticSource:
    """One long-lived credential (what a default chain with env keys gives), no AWS."""

    async def assume_role(self, **_: object) -> AwsCredentials:
        return self._credentials()

    async def default_credentials(self, region: str) -> AwsCredentials:
        return self._credentials()

    async def prepare(self, region: str) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @staticmethod
    def _credentials() -> AwsCredentials:
        return AwsCredentials(
            access_key_id="ASIABENCHMARKKEY0001",
            secret_access_key="benchmark/secret/not-real",
            session_token="IQoJb3JpZ2luX2VjE" * 40,  # a session token is ~700 bytes
            expires_at=time.time() + 3600,
            source="benchmark",
        )


def authenticators(cache: CredentialCache, count: int) -> list[DbAuth]:
    return [
        auth_for(CONFIG, host=f"db-{index}.example.internal", port=5432, cache=cache)
        for index in range(count)
    ]


async def memory_per_endpoint(count: int) -> tuple[float, int, int]:
    """Bytes the default cache keeps per endpoint, the token's length, and the evictions."""
    cache = CredentialCache(source=StaticSource())
    try:
        auths = authenticators(cache, count)
        await auths[0].credentials()  # the STS entry first: not per endpoint
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for auth in auths:
            await auth.credentials()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        token = len((await auths[-1].credentials()).password)
        return (after - before) / count, token, cache.stats()["evictions"]
    finally:
        await cache.aclose()


async def rotation_us(count: int, maxsize: int, rounds: int) -> tuple[float, float]:
    """Median µs per warm call with ``count`` endpoints called in turn; signatures per call."""
    cache = CredentialCache(maxsize=maxsize, source=StaticSource())
    try:
        auths = authenticators(cache, count)
        for auth in auths:  # warm: every token signed once
            await auth.credentials()
        signed = cache.stats()["tokens_signed"]
        calls = max(count, 20_000)
        per_call = []
        for _ in range(rounds):
            started = time.perf_counter()
            for index in range(calls):
                await auths[index % count].credentials()
            per_call.append((time.perf_counter() - started) / calls * 1e6)
        resigned = (cache.stats()["tokens_signed"] - signed) / (calls * rounds)
        return statistics.median(per_call), resigned
    finally:
        await cache.aclose()


def botocore_us() -> float:
    client = botocore.session.get_session().create_client(
        "rds",
        region_name="us-east-1",
        aws_access_key_id="ASIABENCHMARKKEY0001",
        aws_secret_access_key="benchmark/secret/not-real",
        aws_session_token="IQoJb3JpZ2luX2VjE" * 40,
    )
    samples = []
    for _ in range(20):
        started = time.perf_counter()
        for _ in range(100):
            client.generate_db_auth_token(
                DBHostname="db-0.example.internal", Port=5432, DBUsername="app"
            )
        samples.append((time.perf_counter() - started) / 100 * 1e6)
    client.close()
    return statistics.median(samples)


async def main(quick: bool) -> None:
    print("1. memory, default settings (maxsize 131,072)")
    print(
        f"{'endpoints':>10} {'per endpoint':>13} {'total':>9} {'token':>7} {'evicted':>8}  target"
    )
    for count in (10_000,) if quick else (10_000, 100_000):
        per_endpoint, token, evicted = await memory_per_endpoint(count)
        print(
            f"{count:>10,} {per_endpoint:>11.0f} B {per_endpoint * count / 2**20:>6.1f} MB "
            f"{token:>5} B {evicted:>8}  <= 600 B"
        )

    bound = 10_000
    rounds = 3 if quick else 5
    print(f"\n2. warm credentials() with N endpoints in rotation, cache bound {bound:,}")
    print(
        f"{'N':>8} {'per call':>10} {'signed/call':>12} {'botocore per call':>18} "
        f"{'vs botocore':>12} {'A/A control':>12}"
    )
    baseline = botocore_us()
    for count in (1, 100, 10_000, 20_000, 50_000):
        if quick and count > 20_000:
            continue
        per_call, resigned = await rotation_us(count, bound + 1, rounds)
        again = botocore_us()
        print(
            f"{count:>8,} {per_call:>7.2f} us {resigned:>12.2f} {baseline:>15.1f} us "
            f"{baseline / per_call:>5.0f}x faster {again / baseline:>11.2f}x"
        )
        baseline = again  # the next row's baseline
    print(
        "\nbaseline: botocore generate_db_auth_token per call, measured before and after each "
        "row;\nA/A control: after over before (1.00x in truth)."
    )
    print("memory: Python allocations traced while filling (tracemalloc), after a GC.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and rounds")
    asyncio.run(main(parser.parse_args().quick))
