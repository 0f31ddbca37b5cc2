"""Secrets Manager lookups (DESIGN §6): warm ``await auth.credentials()`` of a password kept in a
secret, against an STS-backed lookup (an RDS IAM token from AssumeRole credentials) measured in
the same run, and a cold herd's ``GetSecretValue`` count.

Sides, interleaved batch by batch:

- ``secret``: ``SecretsManagerAuth`` (a block naming ``secret_id``), warm;
- ``sts``: ``RdsIamAuth`` with a role (AssumeRole, then a signed token), warm: the baseline;
- ``sts again``: a second ``RdsIamAuth`` of another role: the A/A control, 1.00x in truth.

The ratio printed is the median of per-round ratios secret / sts (target <= 2x). The herd: 1,000
concurrent first lookups on a cold cache; ``GetSecretValue`` calls are counted by the stand-in.

The AWS stand-in is ``iampool.testing.FakeAws`` (moto) on 127.0.0.1, in this process; its
environment removes every other ``AWS_*`` variable, so nothing reaches AWS.

Run: ``.venv/bin/python benchmarks/bench_secrets.py [--rounds 15]`` (a few seconds). Prints
numbers, never secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from iampool import AwsIamConfig, CredentialCache, DbAuth, auth_for
from iampool.testing._aws import FakeAws

REGION = "us-east-1"
HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"
PORT = 5432
HERD = 1000
BATCH = 20_000


async def per_call_us(auth: DbAuth, size: int) -> float:
    lookup: Callable[[], Awaitable[object]] = auth.credentials
    started = time.perf_counter()
    for _ in range(size):
        await lookup()
    return (time.perf_counter() - started) / size * 1e6


async def bench_warm(aws: FakeAws, rounds: int) -> dict[str, float]:
    secret_arn = aws.create_secret(
        "bench/app", {"username": "app", "password": "bench-only-password-0001", "port": PORT}
    )
    cache = CredentialCache()
    try:
        sides: dict[str, DbAuth] = {
            "secret": auth_for(
                {"enabled": True, "secret_id": secret_arn}, host=HOST, port=PORT, cache=cache
            ),
            "sts": auth_for(rds_config(aws.create_role("bench-a")), host=HOST, port=PORT,
                            cache=cache),
            "sts again": auth_for(rds_config(aws.create_role("bench-b")), host=HOST, port=PORT,
                                  cache=cache),
        }  # fmt: skip
        for auth in sides.values():
            await auth.credentials()  # warm
        times: dict[str, list[float]] = {name: [] for name in sides}
        for index in range(rounds):
            names = list(sides)
            names = names[index % 3 :] + names[: index % 3]  # the order rotates
            for name in names:
                times[name].append(await per_call_us(sides[name], BATCH))
        ratio = statistics.median(s / b for s, b in zip(times["secret"], times["sts"], strict=True))
        control = statistics.median(
            a / b for a, b in zip(times["sts again"], times["sts"], strict=True)
        )
        return {
            "secret_us": statistics.median(times["secret"]),
            "sts_us": statistics.median(times["sts"]),
            "ratio": ratio,
            "control": control,
            "get_secret_value": aws.calls["GetSecretValue"],
        }
    finally:
        await cache.aclose()


async def bench_herd(aws: FakeAws) -> int:
    secret_arn = aws.create_secret(
        "bench/herd", {"username": "app", "password": "bench-only-password-0002"}
    )
    before = aws.calls["GetSecretValue"]
    cache = CredentialCache()
    try:
        auth = auth_for({"enabled": True, "secret_id": secret_arn}, host=HOST, port=PORT,
                        cache=cache)  # fmt: skip
        await asyncio.gather(*(auth.credentials() for _ in range(HERD)))
    finally:
        await cache.aclose()
    return aws.calls["GetSecretValue"] - before


def rds_config(role_arn: str) -> AwsIamConfig:
    return AwsIamConfig.from_extra(
        {"enabled": True, "region": REGION, "role_arn": role_arn, "db_username": "app"}
    )


async def main(rounds: int) -> None:
    with FakeAws(region=REGION) as aws, aws.export_env():
        warm = await bench_warm(aws, rounds)
        herd = await bench_herd(aws)
    print(f"warm lookups, {rounds} rounds of {BATCH:,} per side (median us per call)")
    print(f"  {'side':<28}{'us/call':>10}")
    print(f"  {'secret (GetSecretValue)':<28}{warm['secret_us']:>10.3f}")
    print(f"  {'sts (AssumeRole + token)':<28}{warm['sts_us']:>10.3f}")
    print(
        f"  secret / sts: {warm['ratio']:.2f}x (target <= 2x); "
        f"A/A control sts again / sts: {warm['control']:.2f}x"
    )
    print(f"  GetSecretValue calls while warm: {warm['get_secret_value']:.0f} (1: the warm-up)")
    print(f"cold herd of {HERD:,} first lookups: {herd} GetSecretValue call(s) (target 1)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    asyncio.run(main(parser.parse_args().rounds))
