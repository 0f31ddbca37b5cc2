"""The example app under pytest-asyncio instead of anyio, with one app and pool per module.

iampool's fixtures are synchronous (the fake AWS and the gateways run on threads of their own), so
they work under either plugin. What pytest-asyncio needs is one event loop for everything that
touches the pool: the module-scoped fixture below opens it on the module's loop
(``loop_scope="module"``), and the tests run on that same loop (the module's ``pytestmark``).
A test on its own function-scoped loop would hand asyncpg a pool from another loop.

Written for strict mode (the default: every async test and fixture says it is pytest-asyncio's),
it runs unchanged in auto mode: ``scripts/test`` runs it both ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from iampool import CredentialCache

from .app import create_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(iam_postgres: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its pool open for the whole module, and an HTTP client talking to it."""
    cache = CredentialCache()
    app = create_app(iam_postgres.dsn, iam_postgres.config, cache=cache)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
    finally:
        await cache.aclose()


async def test_whoami_answers_as_the_iam_user(client: httpx.AsyncClient, iam_postgres: Any) -> None:
    response = await client.get("/whoami")

    assert response.json() == {"user": iam_postgres.user}


async def test_concurrent_requests_share_the_module_pool(
    client: httpx.AsyncClient, iam_postgres: Any
) -> None:
    accepted = iam_postgres.gateway.accepted

    responses = await asyncio.gather(*(client.get("/squares/3") for _ in range(40)))

    assert [response.json() for response in responses] == [[1, 4, 9]] * 40
    # The pool lives on: at most max_size (10) new logins, however many requests.
    assert iam_postgres.gateway.accepted - accepted <= 10
