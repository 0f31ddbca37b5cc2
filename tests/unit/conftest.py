"""Fixtures of the credential-core unit tests: a fake clock, a fake AWS source, caches on both.

A test module may override ``source`` (with a ``FakeSource`` subclass) and keep the rest.
Every unit test runs with an empty AWS credential chain (no environment credentials, no shared
files, no instance or container metadata): a unit test that reached the real chain would depend
on the machine it runs on, and on an EC2 host would ask the instance metadata service.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iampool import CredentialCache, _cache

from .fakes import FakeClock, FakeSource

# What botocore's default chain reads (botocore/credentials.py, create_credential_resolver):
# environment keys, profiles, web identity, container and instance metadata.
_CHAIN_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)


@pytest.fixture(autouse=True)
def _empty_aws_credential_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """No unit test finds AWS credentials, or asks instance metadata for them."""
    for name in _CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)  # empty: no profiles
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _no_default_cache_left() -> Iterator[None]:
    """A unit test that makes the process's default cache (``auth_for`` without ``cache=``)
    leaves none behind: made on the empty chain above, it would be the default cache of the
    tests that come after it in this process (an integration test on the same xdist worker
    found no base credentials through it)."""
    before = _cache._default
    yield
    made = _cache._default
    if made is not before:
        _cache._default = before
        if made is not None:
            made.close()


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
