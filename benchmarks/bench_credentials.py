"""Credential core benchmarks (DESIGN §6), each against a baseline measured in the same run.

1. warm ``await auth.credentials()`` vs botocore's and aiobotocore's ``generate_db_auth_token``;
2. a cold herd of 1,000 first callers vs naive per-connect STS (one AssumeRole per connect);
3. refresh under 1 s of STS latency: the longest caller wait with refresh-ahead vs a blocking
   refresh (the same cache with ``refresh_margin=0``, so callers wait when credentials expire).

The AWS stand-in is moto's server, started in this process on 127.0.0.1; nothing reaches AWS.
Run: ``.venv/bin/python benchmarks/bench_credentials.py`` (about 30 s). Prints numbers, never
secrets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

# Never reach real AWS: dummy base credentials, no instance metadata, no shared config.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "AKIAIAMPOOLBENCHBASE",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-not-real",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
    os.environ.pop(_name, None)

import botocore.session  # noqa: E402
from aiobotocore.session import AioSession  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from moto.sts.models import sts_backends  # noqa: E402

from iampool import AwsIamConfig, CredentialCache, auth_for  # noqa: E402
from iampool._aws import AwsApi, AwsCredentials, sign_rds_token  # noqa: E402

REGION = "us-east-1"
HOST = "app.cluster-abc.us-east-1.rds.amazonaws.com"
PORT = 5432
ROLE_ARN = "arn:aws:iam::123456789012:role/app-db"
CONFIG = AwsIamConfig.from_extra(
    {"enabled": True, "region": REGION, "role_arn": ROLE_ARN, "db_username": "app"}
)
HERD = 1000
NAIVE_HERD = 1000  # naive connects actually run; counts and time are scaled to HERD


def start_moto() -> tuple[ThreadedMotoServer, str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    return server, endpoint


def reset_moto(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - a local http URL
        pass


def assume_role_calls_seen_by_moto() -> int:
    return len(sts_backends["123456789012"]["aws"].assumed_roles)


def per_call_us(batches: int, size: int, run_batch: Callable[[int], float]) -> float:
    """Median over batches of (batch time / calls), in microseconds."""
    return statistics.median(run_batch(size) / size * 1e6 for _ in range(batches))


# -- 1. warm credentials() ---------------------------------------------------------------------


async def bench_warm() -> dict[str, float]:
    cache = CredentialCache()
    try:
        auth = auth_for(CONFIG, host=HOST, port=PORT, cache=cache)
        await auth.credentials()  # warm: one AssumeRole, one signature

        async def batch(size: int) -> float:
            started = time.perf_counter()
            for _ in range(size):
                await auth.credentials()
            return time.perf_counter() - started

        warm = statistics.median([(await batch(1000)) / 1000 * 1e6 for _ in range(200)])
        assert cache.stats()["tokens_signed"] == 1
    finally:
        await cache.aclose()

    static = {
        "aws_access_key_id": "ASIAIAMPOOLBENCHTEMP",
        "aws_secret_access_key": "bench-secret-not-real",
        "aws_session_token": "bench-session-token-not-real",
    }
    sync_rds = botocore.session.get_session().create_client("rds", region_name=REGION, **static)

    def sync_batch(size: int) -> float:
        started = time.perf_counter()
        for _ in range(size):
            sync_rds.generate_db_auth_token(DBHostname=HOST, Port=PORT, DBUsername="app")
        return time.perf_counter() - started

    botocore_us = per_call_us(40, 100, sync_batch)
    sync_rds.close()

    async with AioSession().create_client("rds", region_name=REGION, **static) as aio_rds:

        async def aio_batch(size: int) -> float:
            started = time.perf_counter()
            for _ in range(size):
                await aio_rds.generate_db_auth_token(DBHostname=HOST, Port=PORT, DBUsername="app")
            return time.perf_counter() - started

        aio_us = statistics.median([(await aio_batch(100)) / 100 * 1e6 for _ in range(40)])
    return {"warm": warm, "botocore": botocore_us, "aiobotocore": aio_us}


# -- 2. cold herd ------------------------------------------------------------------------------


async def bench_herd(endpoint: str) -> dict[str, float]:
    reset_moto(endpoint)
    cache = CredentialCache()
    try:
        auth = auth_for(CONFIG, host=HOST, port=PORT, cache=cache)
        started = time.perf_counter()
        tokens = await asyncio.gather(*(auth.credentials() for _ in range(HERD)))
        herd_s = time.perf_counter() - started
        assert len({id(token) for token in tokens}) == 1
        herd_calls = assume_role_calls_seen_by_moto()
        signed = cache.stats()["tokens_signed"]
    finally:
        await cache.aclose()

    # Naive: every connect assumes the role itself (one shared STS client) and signs a token.
    reset_moto(endpoint)
    async with AioSession().create_client("sts", region_name=REGION) as sts:

        async def naive_connect(index: int) -> str:
            response = await sts.assume_role(
                RoleArn=ROLE_ARN, RoleSessionName=f"naive-{index}", DurationSeconds=3600
            )
            creds = response["Credentials"]
            aws = AwsCredentials(
                creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"], None, ""
            )
            return sign_rds_token(aws, HOST, PORT, "app", REGION)

        started = time.perf_counter()
        await asyncio.gather(*(naive_connect(index) for index in range(NAIVE_HERD)))
        naive_s = time.perf_counter() - started
    naive_calls = assume_role_calls_seen_by_moto()
    scale = HERD / NAIVE_HERD
    return {
        "herd_calls": herd_calls,
        "herd_signed": signed,
        "herd_ms": herd_s * 1e3,
        "naive_calls": naive_calls * scale,
        "naive_signed": NAIVE_HERD * scale,
        "naive_ms": naive_s * 1e3 * scale,
    }


# -- 3. refresh under STS latency --------------------------------------------------------------


class SlowSts:
    """The real (moto-backed) credential source, with latency added to AssumeRole on demand."""

    def __init__(self) -> None:
        self.api = AwsApi()
        self.latency = 0.0
        self.assume_role_calls = 0

    async def assume_role(self, **params: Any) -> AwsCredentials:
        self.assume_role_calls += 1
        await asyncio.sleep(self.latency)
        return await self.api.assume_role(**params)

    async def default_credentials(self, region: str) -> AwsCredentials:
        return await self.api.default_credentials(region)

    async def aclose(self) -> None:
        await self.api.aclose()


async def longest_wait(
    call: Callable[[], Awaitable[Any]], seconds: float, callers: int = 20
) -> tuple[float, int]:
    """Callers loop on ``call()`` for ``seconds``; the longest single call and how many ran."""
    waits: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.0005)  # a connect-shaped pause between calls

    await asyncio.gather(*(caller() for _ in range(callers)))
    return max(waits), len(waits)


async def bench_refresh(*, refresh_ahead: bool) -> dict[str, float]:
    shift = [0.0]
    source = SlowSts()
    # Small lifetimes so the refresh window comes quickly; the clock is shifted to enter it.
    cache = CredentialCache(
        ttl=3.0,
        token_reuse=3.0,
        refresh_margin=2.0 if refresh_ahead else 0.0,
        clock=lambda: time.time() + shift[0],
        source=source,
    )
    try:
        auth = auth_for(CONFIG, host=HOST, port=PORT, cache=cache)
        await auth.credentials()  # warm-up
        source.latency = 1.0
        before = source.assume_role_calls
        # Refresh-ahead: 1.6 s into a 3 s life is inside the refresh window (it opens at 1.5 s).
        # Blocking: 3.1 s is past the end of usable life, where callers must wait.
        shift[0] = 1.6 if refresh_ahead else 3.1
        worst, calls = await longest_wait(auth.credentials, 2.0)
        stats = cache.stats()
    finally:
        await cache.aclose()
    return {
        "max_wait_ms": worst * 1e3,
        "calls": calls,
        "assume_role": source.assume_role_calls - before,
        "refreshes": stats["refreshes"],
    }


# -- report ------------------------------------------------------------------------------------


def main() -> int:
    scale = HERD / NAIVE_HERD
    server, endpoint = start_moto()
    try:
        reset_moto(endpoint)
        warm = asyncio.run(bench_warm())
        herd = asyncio.run(bench_herd(endpoint))
        reset_moto(endpoint)
        ahead = asyncio.run(bench_refresh(refresh_ahead=True))
        blocking = asyncio.run(bench_refresh(refresh_ahead=False))
    finally:
        server.stop()

    rows = [
        ("what", "iampool", "baseline", "ratio", "target"),
        (
            "warm credentials(), median per call",
            f"{warm['warm']:.2f} us",
            f"{warm['botocore']:.1f} us botocore",
            f"{warm['botocore'] / warm['warm']:.0f}x faster",
            "<= 2 us, >= 75x",
        ),
        (
            "",
            "",
            f"{warm['aiobotocore']:.1f} us aiobotocore",
            f"{warm['aiobotocore'] / warm['warm']:.0f}x faster",
            "",
        ),
        (
            f"cold herd of {HERD}: AssumeRole calls",
            f"{herd['herd_calls']:.0f}",
            f"{herd['naive_calls']:.0f} naive",
            f"{herd['naive_calls'] / max(herd['herd_calls'], 1):.0f}x fewer",
            "exactly 1",
        ),
        (
            f"cold herd of {HERD}: tokens signed",
            f"{herd['herd_signed']:.0f}",
            f"{herd['naive_signed']:.0f} naive",
            f"{herd['naive_signed'] / max(herd['herd_signed'], 1):.0f}x fewer",
            "exactly 1",
        ),
        (
            f"cold herd of {HERD}: wall time",
            f"{herd['herd_ms']:.0f} ms",
            f"{herd['naive_ms']:.0f} ms naive",
            f"{herd['naive_ms'] / herd['herd_ms']:.0f}x faster",
            "",
        ),
        (
            "1 s STS latency: max caller wait",
            f"{ahead['max_wait_ms']:.2f} ms",
            f"{blocking['max_wait_ms']:.0f} ms blocking",
            f"{blocking['max_wait_ms'] / ahead['max_wait_ms']:.0f}x shorter",
            "<= 1 ms vs >= 1 s",
        ),
        (
            "  (calls, AssumeRole, refreshes in 2 s)",
            f"{ahead['calls']:.0f}, {ahead['assume_role']:.0f}, {ahead['refreshes']:.0f}",
            f"{blocking['calls']:.0f}, {blocking['assume_role']:.0f}, {blocking['refreshes']:.0f}",
            "",
            "",
        ),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))
    naive_note = "run in full" if NAIVE_HERD == HERD else f"{NAIVE_HERD} run, scaled x{scale:g}"
    print(
        f"\nnaive herd: one AssumeRole (shared STS client) + one signature per connect, "
        f"{naive_note}.\nblocking refresh: the same cache with refresh_margin=0."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
