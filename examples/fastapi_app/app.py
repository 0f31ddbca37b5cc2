"""A small FastAPI app on an IAM-authenticated asyncpg pool (see docs/fastapi.md).

Run it against a real Aurora PostgreSQL::

    export DATABASE_DSN='postgresql://<cluster endpoint>/app?sslmode=verify-full&sslrootcert=...'
    export AWS_IAM='{"enabled": true, "region": "us-east-1", "db_username": "app"}'
    uvicorn app:app

or test it locally with iampool's testing kit: ``pytest examples/fastapi_app``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request

import iampool


def create_app(dsn: str, aws_iam: Any, **pool_options: Any) -> FastAPI:
    """The application; the pool lives for the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await iampool.create_pool(
            dsn, aws_iam=aws_iam, min_size=1, max_size=10, **pool_options
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="iampool example", lifespan=lifespan)

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        pool: asyncpg.Pool = request.app.state.pool
        return {"user": await pool.fetchval("SELECT current_user")}

    @app.get("/squares/{count}")
    async def squares(count: int, request: Request) -> list[int]:
        pool: asyncpg.Pool = request.app.state.pool
        rows = await pool.fetch("SELECT n * n AS square FROM generate_series(1, $1) AS n", count)
        return [row["square"] for row in rows]

    return app


def app_from_environment() -> FastAPI:
    """For ``uvicorn app:app``: DATABASE_DSN and AWS_IAM (the block or encrypted_extra JSON)."""
    return create_app(os.environ["DATABASE_DSN"], os.environ["AWS_IAM"])


if "DATABASE_DSN" in os.environ:
    app = app_from_environment()
