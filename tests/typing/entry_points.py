"""Checked by ``mypy --strict`` (scripts/test), never run: the typed entry points give a type
checker each driver's own pool and connection types."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiomysql
from asyncmy import Connection as AsyncmyConnection
from asyncmy import Pool as AsyncmyPool
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

import iampool.aiomysql
import iampool.asyncmy
import iampool.asyncpg
import iampool.psycopg
import iampool.redshift
from iampool import MySQLPool, PendingPool, RedshiftConnection, RedshiftPool
from iampool.sqlalchemy import async_creator

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

CONFIG = {"enabled": True, "region": "us-east-1", "db_username": "app"}


async def psycopg_types() -> None:
    pool = await iampool.psycopg.create_pool("postgresql+psycopg://h/db", aws_iam=CONFIG)
    assert_type(pool, AsyncConnectionPool[AsyncConnection[TupleRow]])
    connection = await iampool.psycopg.connect("postgresql+psycopg://h/db", aws_iam=CONFIG)
    assert_type(connection, AsyncConnection[TupleRow])


async def asyncmy_types() -> None:
    pool = await iampool.asyncmy.create_pool("mysql+asyncmy://h/db", aws_iam=CONFIG)
    assert_type(pool, AsyncmyPool)
    connection = await iampool.asyncmy.connect("mysql+asyncmy://h/db", aws_iam=CONFIG)
    assert_type(connection, AsyncmyConnection)


async def aiomysql_types() -> None:
    pool = await iampool.aiomysql.create_pool("mysql://h/db", aws_iam=CONFIG)
    assert_type(pool, MySQLPool)
    connection = await iampool.aiomysql.connect("mysql://h/db", aws_iam=CONFIG)
    assert_type(connection, aiomysql.Connection)


async def redshift_types() -> None:
    pool = await iampool.redshift.create_pool("redshift://h/db", aws_iam=CONFIG)
    assert_type(pool, RedshiftPool)
    connection = await iampool.redshift.connect("redshift://h/db", aws_iam=CONFIG)
    assert_type(connection, RedshiftConnection)


async def asyncpg_types() -> None:
    # asyncpg ships no type information: its classes are Any to a type checker.
    pool = await iampool.asyncpg.create_pool("postgresql://h/db", aws_iam=CONFIG)
    async with pool.acquire() as connection:
        await connection.fetchval("SELECT 1")


async def async_with_types() -> None:
    # create_pool is also an async context manager, typed like awaiting it.
    async with iampool.psycopg.create_pool("postgresql+psycopg://h/db", aws_iam=CONFIG) as pool:
        assert_type(pool, AsyncConnectionPool[AsyncConnection[TupleRow]])
    async with iampool.asyncmy.create_pool("mysql+asyncmy://h/db", aws_iam=CONFIG) as my_pool:
        assert_type(my_pool, AsyncmyPool)
    async with iampool.aiomysql.create_pool("mysql://h/db", aws_iam=CONFIG) as mysql_pool:
        assert_type(mysql_pool, MySQLPool)
    async with iampool.redshift.create_pool("redshift://h/db", aws_iam=CONFIG) as rs_pool:
        assert_type(rs_pool, RedshiftPool)
    async with iampool.asyncpg.create_pool("postgresql://h/db", aws_iam=CONFIG) as pg_pool:
        await pg_pool.fetchval("SELECT 1")
    async with iampool.create_pool("postgresql://h/db", aws_iam=CONFIG) as any_pool:
        assert_type(any_pool, Any)
    pending = iampool.asyncmy.create_pool("mysql+asyncmy://h/db", aws_iam=CONFIG)
    assert_type(pending, PendingPool[AsyncmyPool])
    assert_type(await pending, AsyncmyPool)


def sqlalchemy_types(url: URL) -> None:
    # async_creator takes a DSN string or a SQLAlchemy URL.
    assert_type(async_creator(url, aws_iam=CONFIG), Callable[[], Awaitable[Any]])
    assert_type(async_creator("postgresql://h/db", aws_iam=CONFIG), Callable[[], Awaitable[Any]])
