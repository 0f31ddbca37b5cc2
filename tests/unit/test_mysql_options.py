"""MySQL DSN query options become aiomysql keyword arguments; unknown ones are refused."""

from __future__ import annotations

import pytest

from iampool import ConfigError
from iampool.pools.mysql import _dsn_options


def test_known_options_are_converted_to_aiomysql_types() -> None:
    settings = _dsn_options(
        {"charset": "utf8mb4", "autocommit": "true", "local_infile": "0", "connect_timeout": "2.5"}
    )
    assert settings == {
        "charset": "utf8mb4",
        "autocommit": True,
        "local_infile": False,
        "connect_timeout": 2.5,
    }


def test_unknown_and_malformed_options_are_all_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        _dsn_options({"chrset": "utf8", "autocommit": "maybe", "connect_timeout": "soon"})
    assert caught.value.fields == ["chrset", "autocommit", "connect_timeout"]
    assert "pass other aiomysql settings as keyword arguments" in str(caught.value)
