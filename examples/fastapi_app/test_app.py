"""The example app, tested the way a user would: iampool's pytest fixtures and httpx."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from iampool import CredentialCache

from .app import create_app

pytestmark = pytest.mark.anyio


async def test_routes_query_through_an_iam_authenticated_pool(
    iam_postgres: Any, fake_aws: Any
) -> None:
    cache = CredentialCache()
    assume_roles = fake_aws.calls["AssumeRole"]
    app = create_app(iam_postgres.dsn, iam_postgres.config, cache=cache)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                whoami = await client.get("/whoami")
                results: list[httpx.Response] = []

                async def square() -> None:
                    results.append(await client.get("/squares/4"))

                async with anyio.create_task_group() as group:
                    for _ in range(50):
                        group.start_soon(square)
    finally:
        await cache.aclose()

    assert whoami.json() == {"user": iam_postgres.user}  # the run's login user
    assert [response.json() for response in results] == [[1, 4, 9, 16]] * 50
    assert fake_aws.calls["AssumeRole"] - assume_roles == 1
    assert cache.stats()["tokens_signed"] == 1
