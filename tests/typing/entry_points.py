"""Checked by ``mypy --strict`` (scripts/test), never run: the typed entry points give a type
checker each driver's own pool and connection types."""

from __future__ import annotations

import sys

import aiomysql
from asyncmy import Connection as AsyncmyConnection
from asyncmy import Pool as AsyncmyPool
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

import iampool.aiomysql
import iampool.asyncmy
import iampool.asyncpg
import iampool.psycopg
import iampool.redshift
from iampool import MySQLPool, RedshiftConnection, RedshiftPool

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
