"""Checked by ``mypy --strict`` (scripts/test), never run: the typed entry points give a type
checker each driver's own pool and connection types."""

from __future__ import annotations

import sys

import aiomysql

import iampool.aiomysql
import iampool.asyncpg
import iampool.redshift
from iampool import MySQLPool, RedshiftConnection, RedshiftPool

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

CONFIG = {"enabled": True, "region": "us-east-1", "db_username": "app"}


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
