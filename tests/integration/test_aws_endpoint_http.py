"""Plain-HTTP AWS endpoints: refused unless loopback or opted in, before any AWS call.

The real aiobotocore client resolves the endpoint from botocore's usual settings
(``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``, the shared config file's profile); a
``http://`` endpoint on another machine would carry every call's secrets in clear. Hosts under
``.invalid`` never resolve, so a call that went ahead would fail with
``EndpointConnectionError``, not ``ConfigError``: the error tells which happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from iampool import AwsIamConfig, ConfigError, CredentialCache, CredentialError, auth_for
from iampool._aws import ALLOW_HTTP_ENDPOINTS, check_endpoint
from iampool._cache import mint_context
from iampool.testing._aws import FakeAws
from tests.unit.test_cache import ROLE

pytestmark = pytest.mark.anyio

DEFAULT_CHAIN = AwsIamConfig.from_extra(
    {"enabled": True, "region": "us-east-1", "db_username": "app"}
)
REDSHIFT = AwsIamConfig.from_extra(
    {
        "enabled": True,
        "region": "us-east-1",
        "cluster_identifier": "analytics",
        "db_username": "app",
        "db_name": "dev",
    }
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Static test credentials and no endpoint setting but the test's own."""
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_REDSHIFT",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        ALLOW_HTTP_ENDPOINTS,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIAMPOOLTESTONLY0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret-key-for-tests-only-0")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return monkeypatch


@pytest.fixture
def new_cache() -> Iterator[Callable[..., CredentialCache]]:
    caches: list[CredentialCache] = []

    def new(**options: Any) -> CredentialCache:
        caches.append(CredentialCache(connect_timeout=1.0, max_attempts=1, **options))
        return caches[-1]

    yield new
    for cache in caches:
        cache.close()


async def refused(cache: CredentialCache, config: AwsIamConfig) -> ConfigError:
    with anyio.fail_after(30), pytest.raises(ConfigError) as caught:
        await mint_context(cache).aws_credentials(config)
    return caught.value


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"])
@pytest.mark.parametrize("config", [ROLE, DEFAULT_CHAIN], ids=["assume-role", "default-chain"])
async def test_http_endpoint_variable_to_another_host_is_refused_naming_the_variable(
    env: pytest.MonkeyPatch,
    new_cache: Callable[..., CredentialCache],
    variable: str,
    config: AwsIamConfig,
) -> None:
    env.setenv(variable, "http://sts.example.invalid:8080")
    error = await refused(new_cache(), config)
    assert [problem.field for problem in error.errors] == [variable]
    message = str(error)
    assert "'http://sts.example.invalid:8080'" in message
    assert "https://" in message
    assert f"{ALLOW_HTTP_ENDPOINTS}=1" in message


async def test_http_endpoint_in_the_profile_is_refused_naming_the_profile_setting(
    env: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache], tmp_path: Path
) -> None:
    (tmp_path / "config").write_text(
        "[profile analytics]\nregion = us-east-1\nendpoint_url = http://10.20.30.40:9\n"
    )
    env.setenv("AWS_PROFILE", "analytics")
    error = await refused(new_cache(), ROLE)
    assert [problem.field for problem in error.errors] == [
        "endpoint_url (AWS config file, profile analytics)"
    ]
    assert "'http://10.20.30.40:9'" in str(error)


async def test_http_endpoint_of_one_service_is_refused_for_that_service(
    env: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache], fake_aws: FakeAws
) -> None:
    # STS on the local stand-in is fine; Redshift's own endpoint, in clear elsewhere, is not.
    env.setenv("AWS_ENDPOINT_URL_STS", fake_aws.endpoint_url)
    env.setenv("AWS_ENDPOINT_URL_REDSHIFT", "http://redshift.example.invalid")
    auth = auth_for(REDSHIFT, host="analytics.example.invalid", port=5439, cache=new_cache())
    with anyio.fail_after(30), pytest.raises(ConfigError) as caught:
        await auth.credentials()
    assert [problem.field for problem in caught.value.errors] == ["AWS_ENDPOINT_URL_REDSHIFT"]


async def test_user_credentials_in_an_endpoint_url_are_not_echoed(
    env: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache]
) -> None:
    env.setenv("AWS_ENDPOINT_URL", "http://proxyuser:Pr0xyPassw0rd@sts.example.invalid")
    error = await refused(new_cache(), ROLE)
    assert "Pr0xyPassw0rd" not in str(error)
    assert "'http://sts.example.invalid'" in str(error)


async def test_opting_in_lets_a_plain_http_call_go_ahead(
    env: pytest.MonkeyPatch, new_cache: Callable[..., CredentialCache]
) -> None:
    env.setenv("AWS_ENDPOINT_URL", "http://sts.example.invalid")
    env.setenv(ALLOW_HTTP_ENDPOINTS, "1")
    with anyio.fail_after(30), pytest.raises(CredentialError) as caught:
        await mint_context(new_cache()).aws_credentials(ROLE)
    assert caught.value.code == "EndpointConnectionError"  # it tried: no ConfigError


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://[::1]:{port}"]
)
def test_loopback_http_endpoints_stay_allowed(endpoint: str) -> None:
    check_endpoint(endpoint.format(port=4566), "STS")  # raises nothing


def test_https_endpoints_are_allowed_anywhere() -> None:
    check_endpoint("https://sts.us-east-1.amazonaws.com", "STS")
    check_endpoint("https://vpce-0123.sts.us-east-1.vpce.amazonaws.com", "STS")
