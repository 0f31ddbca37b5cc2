"""Shared test configuration: anyio runs async tests on asyncio unless a test asks for trio."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
