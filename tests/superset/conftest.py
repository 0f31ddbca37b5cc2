"""Fixtures for the tests against the real apache-superset package.

They run in Superset's own virtual environment (``scripts/superset-env``; Superset pins
SQLAlchemy < 2) from ``scripts/test``, with ``tests/superset/pytest.ini``. Where Superset is not
installed (the main suite's environment) this directory is not collected at all.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import iampool
from iampool import CredentialCache
from iampool.testing import FakeAws, IamDatabase

if importlib.util.find_spec("superset") is None:
    collect_ignore_glob = ["*"]

# The iampool under test is the checkout's (scripts/test puts src/ first on PYTHONPATH), not the
# copy installed in the cached environment for its dependencies.
assert Path(iampool.__file__).is_relative_to(Path(__file__).parents[2] / "src"), iampool.__file__

FLAG = "AWS_DATABASE_IAM_AUTH"


@pytest.fixture(scope="session")
def superset_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Superset's Flask app (``create_app``) with the IAM feature flag on."""
    folder = tmp_path_factory.mktemp("superset")
    config = folder / "superset_config.py"
    config.write_text(
        f"SECRET_KEY = {uuid.uuid4().hex * 2!r}\n"
        f"SQLALCHEMY_DATABASE_URI = {'sqlite:///' + str(folder / 'superset.db')!r}\n"
        f"FEATURE_FLAGS = {{{FLAG!r}: True}}\n"
    )
    os.environ["SUPERSET_CONFIG_PATH"] = str(config)
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from superset.models.core import Database

        from superset import db

        # Superset's tables from its models (faster than its migrations), for saved databases
        Database.metadata.create_all(db.engine)
    return app


@pytest.fixture
def app_context(superset_app: Any) -> Iterator[Any]:
    with superset_app.app_context():
        yield superset_app


@pytest.fixture(autouse=True)
def _supersets_own_cache_is_cold() -> Iterator[None]:
    """Superset's path keeps STS credentials in a module-level cache: each test starts cold."""
    if importlib.util.find_spec("superset") is None:
        yield
        return
    from superset.db_engine_specs import aws_iam

    aws_iam._credentials_cache.clear()
    yield
    aws_iam._credentials_cache.clear()


@pytest.fixture
def cache() -> Iterator[CredentialCache]:
    """A cache of the test's own: counters from zero, nothing shared with other tests."""
    cache = CredentialCache()
    yield cache
    cache.close()


@pytest.fixture
def installed(cache: CredentialCache) -> Iterator[CredentialCache]:
    """iampool.superset installed on that cache for the test, uninstalled after it."""
    import iampool.superset

    assert iampool.superset.install(cache=cache, strict=True)
    yield cache
    iampool.superset.uninstall()


@pytest.fixture
def flag(superset_app: Any) -> Iterator[Callable[[bool], None]]:
    """Turn AWS_DATABASE_IAM_AUTH on or off (Superset reads its flags from this dict)."""
    flags = superset_app.config["DEFAULT_FEATURE_FLAGS"]
    before = flags.get(FLAG)

    def set_flag(on: bool) -> None:
        flags[FLAG] = on

    yield set_flag
    flags[FLAG] = before


def superset_database(iam: IamDatabase, scheme: str = "postgresql+psycopg2", **block: Any) -> Any:
    """A Superset ``Database`` (not saved) for a gateway, its ``aws_iam`` block in Secure Extra."""
    from superset.models.core import Database

    gateway = iam.gateway
    name = gateway.upstream.database or "postgres"
    user = "" if scheme.startswith("redshift") else f"{iam.user}@"
    config = iam.config
    aws_iam = {
        "enabled": True,
        "role_arn": config.role_arn,
        "region": config.region,
        "db_username": config.db_username,
        **block,
    }
    return Database(
        database_name=f"iam-{uuid.uuid4().hex[:8]}",
        sqlalchemy_uri=f"{scheme}://{user}{gateway.host}:{gateway.port}/{name}",
        encrypted_extra=json.dumps(
            {"aws_iam": {k: v for k, v in aws_iam.items() if v is not None}}
        ),
    )


def herd(
    size: int, login: Callable[[], Any], release: Callable[[], None] | None = None
) -> list[Any]:
    """Run ``login`` on ``size`` threads started together; their results, errors re-raised.

    ``release`` runs meanwhile on this thread: it waits until the herd is where the test wants
    it (every thread waiting on AWS), then lets AWS answer.
    """
    barrier = threading.Barrier(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = login()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(size)]
    for thread in threads:
        thread.start()
    try:
        if release is not None:
            release()
    finally:
        for thread in threads:
            thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a login never returned"
    if errors:
        raise errors[0]
    return results


def fingerprint(secret: str) -> str:
    """A secret as assertions may show it: its hash's first characters, never the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def assert_no_secret_in(text: str, fake_aws: FakeAws) -> None:
    leaked = [secret for secret in fake_aws.issued_secrets() if secret in text]
    assert not leaked, f"{len(leaked)} issued secret(s) in the log"


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, as ``logging.basicConfig(level=DEBUG)`` deployments run."""
    caplog.set_level(logging.DEBUG)
    return caplog
