"""Fixtures of the credential-core unit tests: a fake clock, a fake AWS source, caches on both.

A test module may override ``source`` (with a ``FakeSource`` subclass) and keep the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iampool import CredentialCache

from .fakes import FakeClock, FakeSource


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(clock: FakeClock) -> Iterator[FakeSource]:
    source = FakeSource(clock)
    yield source
    source.gate.open()  # release worker threads still parked at the gates
    source.api_gate.open()


@pytest.fixture
def new_cache(clock: FakeClock, source: FakeSource) -> Iterator[Callable[..., CredentialCache]]:
    """Caches on the fake clock and source (overridable per call), closed after the test."""
    caches: list[CredentialCache] = []

    def new(**options: Any) -> CredentialCache:
        options.setdefault("clock", clock)
        options.setdefault("source", source)
        caches.append(CredentialCache(**options))
        return caches[-1]

    yield new
    for cache in caches:
        cache.close()


@pytest.fixture
def cache(new_cache: Callable[..., CredentialCache]) -> CredentialCache:
    return new_cache()
