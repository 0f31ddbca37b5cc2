"""Memory of 10,000 cache keys: bounded by maxsize (LRU), target < 20 MB (DESIGN §6).

Every key is a distinct RDS endpoint with its own signed token, the biggest kind of entry
(~1 KB token each). Credentials come from a local static source: no AWS, no network.

    .venv/bin/python benchmarks/bench_memory.py
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

from iampool import AwsIamConfig, CredentialCache, auth_for
from iampool._aws import AwsCredentials

KEYS = 10_000


class StaticSource:
    """Hands out one long-lived credential (what a default chain with env keys does)."""

    async def assume_role(self, **_: object) -> AwsCredentials:
        return self._credentials()

    async def default_credentials(self, region: str) -> AwsCredentials:
        return self._credentials()

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


async def fill(cache: CredentialCache, count: int) -> int:
    config = AwsIamConfig.from_extra(
        {"enabled": True, "region": "us-east-1", "db_username": "app", "role_arn":
         "arn:aws:iam::123456789012:role/bench"}
    )  # fmt: skip
    total = 0
    for index in range(count):
        auth = auth_for(config, host=f"db-{index}.example.internal", port=5432, cache=cache)
        total += len((await auth.credentials()).password)
    return total // count


async def main() -> None:
    rows = []
    for maxsize, keys in ((KEYS, KEYS), (KEYS, 2 * KEYS)):
        cache = CredentialCache(maxsize=maxsize + 1, source=StaticSource())  # + the STS entry
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        token_size = await fill(cache, keys)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        stats = cache.stats()
        await cache.aclose()
        rows.append((maxsize, keys, stats["size"], stats["evictions"], after - before, token_size))

    print(f"{'maxsize':>8} {'keys used':>10} {'kept':>7} {'evicted':>8} {'memory':>9} "
          f"{'per entry':>10} {'token':>7}  target")  # fmt: skip
    for maxsize, keys, size, evicted, used, token in rows:
        print(
            f"{maxsize:>8} {keys:>10} {size:>7} {evicted:>8} {used / 2**20:>7.1f} MB "
            f"{used / size:>8.0f} B {token:>5} B  < 20 MB"
        )
    print("\nmemory: Python allocations traced while filling (tracemalloc), after a GC.")


if __name__ == "__main__":
    asyncio.run(main())
