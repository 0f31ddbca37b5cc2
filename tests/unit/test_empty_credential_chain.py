"""The unit run's AWS credential chain is empty, on any machine (tests/unit/conftest.py).

Unit tests never depend on the credentials of the machine they run on, and never ask an EC2
host's instance metadata service: the real default chain, read as iampool reads it, finds nothing.
"""

from __future__ import annotations

import asyncio

import botocore.utils
import pytest

from iampool import CredentialError
from iampool._aws import AioAwsSource


def test_the_default_chain_finds_nothing_and_never_asks_instance_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def metadata_url(fetcher: botocore.utils.IMDSFetcher, path: str) -> str:
        # Reached only once the fetcher is enabled, before any request: refused at once (the
        # fetcher answers "no credentials"), so that this test itself sends nothing.
        asked.append(path)
        raise botocore.utils.BadIMDSRequestError(path)

    monkeypatch.setattr(botocore.utils.IMDSFetcher, "_construct_url", metadata_url)

    async def default_chain() -> None:
        source = AioAwsSource()
        try:
            await source.default_credentials("us-east-1")
        finally:
            await source.aclose()

    with pytest.raises(CredentialError) as caught:
        asyncio.run(default_chain())

    assert asked == []
    assert caught.value.code == "NoCredentials"
