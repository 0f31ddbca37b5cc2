"""iampool.superset.install() against the real apache-superset: Superset's IAM logins through
iampool's cache, everything else Superset's own.

Each comparison runs Superset's own path (not installed) and iampool's (installed) in the same
test, against the testing kit's FakeAws and IAM gateways.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

import iampool.superset
from iampool import CredentialCache
from iampool.testing import FakeAws, IamDatabase, verify_rds_token

from .conftest import assert_no_secret_in, fingerprint, herd, superset_database

pytestmark = pytest.mark.usefixtures("app_context")

HELD = 60.0  # seconds AWS holds a call: until the test releases it


def logged_in_user(database: Any) -> str:
    """Superset's own way to a connection: Database.get_sqla_engine(), then connect."""
    with database.get_sqla_engine() as engine, engine.connect() as connection:
        user: str = connection.execute(text("SELECT current_user")).scalar()
        return user


def connect_args(database: Any) -> dict[str, Any]:
    """What Superset's engine spec puts in ``connect_args`` for one new engine."""
    params: dict[str, Any] = {}
    database.update_params_from_encrypted_extra(params)
    return dict(params["connect_args"])


def released_when(fake_aws: FakeAws, ready: Callable[[], bool]) -> Callable[[], None]:
    """A herd's ``release``: wait until ``ready()``, then let AWS answer every held call."""

    def release() -> None:
        try:
            deadline = time.monotonic() + HELD / 2
            while not ready():
                assert time.monotonic() < deadline, "the herd never reached AWS"
                time.sleep(0.01)
        finally:
            fake_aws.faults.clear()

    return release


def test_a_superset_database_logs_in_through_iampools_cache(
    iam_postgres: IamDatabase, fake_aws: FakeAws, installed: CredentialCache, debug_log: Any
) -> None:
    database = superset_database(iam_postgres)
    assume_role = fake_aws.calls["AssumeRole"]

    users = [logged_in_user(database) for _ in range(3)]

    assert users == [iam_postgres.user] * 3
    assert fake_aws.calls["AssumeRole"] - assume_role == 1
    # CloudTrail sees Superset's session name, as before install()
    assert fake_aws.requests["AssumeRole"][-1]["RoleSessionName"] == "superset-iam-session"
    assert installed.stats()["tokens_signed"] == 1
    # Superset's own SSL handling is untouched: it asks for TLS as before.
    assert connect_args(database)["sslmode"] == "require"
    assert_no_secret_in(debug_log.text, fake_aws)


def test_an_aurora_mysql_database_gets_a_token_for_its_endpoint_and_supersets_ssl_args(
    iam_mysql: IamDatabase, fake_aws: FakeAws, installed: CredentialCache
) -> None:
    # Superset's MySQL spec connects with mysqlclient, not installed here: the token is
    # checked the way the gateway (and RDS) checks it.
    database = superset_database(iam_mysql, scheme="mysql+mysqldb")

    args = connect_args(database)

    gateway = iam_mysql.gateway
    assert set(args) == {"user", "password"}  # Superset's MySQL ssl_args: none of its own
    assert args["user"] == iam_mysql.user
    reason = verify_rds_token(
        args["password"],
        user=iam_mysql.user,
        host=gateway.host,
        port=gateway.port,
        region=iam_mysql.config.region,
        signing_key=fake_aws.signing_key,
        now=datetime.now(timezone.utc),
    )
    assert reason is None
    assert installed.stats()["tokens_signed"] == 1


@pytest.mark.parametrize("path", ["superset", "iampool"])
def test_a_herd_of_50_threads_makes_one_assume_role_call_through_iampool(
    path: str,
    iam_postgres: IamDatabase,
    fake_aws: FakeAws,
    cache: CredentialCache,
    app_context: Any,
) -> None:
    database = superset_database(iam_postgres)
    before = fake_aws.calls["AssumeRole"]

    def login() -> dict[str, Any]:
        with app_context.app_context():
            return connect_args(database)

    fake_aws.faults.latency("AssumeRole", HELD)
    if path == "superset":  # each thread asks STS: the herd is complete when 50 calls wait
        ready = released_when(fake_aws, lambda: fake_aws.calls["AssumeRole"] - before >= 50)
        herd(50, login, ready)
        assert fake_aws.calls["AssumeRole"] - before == 50
        return
    assert iampool.superset.install(cache=cache, strict=True)
    try:
        # Every thread has missed the cache and joined the one flight.
        ready = released_when(fake_aws, lambda: cache.stats()["misses"] >= 50)
        logins = herd(50, login, ready)
    finally:
        iampool.superset.uninstall()
    assert fake_aws.calls["AssumeRole"] - before == 1
    assert len({fingerprint(args["password"]) for args in logins}) == 1  # one token
    assert logged_in_user(database) == iam_postgres.user  # Superset's own path: works too


def superset_error(database: Any) -> tuple[str, str]:
    from superset.exceptions import SupersetSecurityException

    with pytest.raises(SupersetSecurityException) as info:
        connect_args(database)
    return info.value.error.message, info.value.error.error_type


@pytest.mark.parametrize(
    "case", ["flag off", "missing role_arn", "access denied", "wrong external id"]
)
def test_a_refused_login_says_what_superset_says(
    case: str,
    iam_postgres: IamDatabase,
    fake_aws: FakeAws,
    cache: CredentialCache,
    flag: Callable[[bool], None],
) -> None:
    block: dict[str, Any] = {}
    if case == "flag off":
        flag(False)
    elif case == "missing role_arn":
        block["role_arn"] = None
    elif case == "wrong external id":
        role = fake_aws.create_role(f"superset-external-id-{os.getpid()}", external_id="right-one")
        block.update(role_arn=role, external_id="wrong-one")
    database = superset_database(iam_postgres, **block)

    def refusal() -> tuple[str, str]:
        if case == "access denied":
            fake_aws.faults.access_denied("AssumeRole")
        return superset_error(database)

    supersets = refusal()
    assert iampool.superset.install(cache=cache, strict=True)
    try:
        iampools = refusal()
    finally:
        iampool.superset.uninstall()

    assert iampools == supersets
    assert cache.stats()["tokens_signed"] == 0


@pytest.mark.parametrize("path", ["superset", "iampool"])
def test_redshift_logins_of_a_herd_share_one_assume_role_and_one_get_cluster_credentials(
    path: str,
    iam_redshift: IamDatabase,
    fake_aws: FakeAws,
    cache: CredentialCache,
    app_context: Any,
) -> None:
    config = iam_redshift.config
    database = superset_database(
        iam_redshift,
        scheme="redshift+psycopg2",
        cluster_identifier=config.cluster_identifier,
        db_name=config.db_name,
    )
    before = dict(fake_aws.calls)

    def login() -> dict[str, Any]:
        with app_context.app_context():
            return connect_args(database)

    def made(api: str) -> int:
        return fake_aws.calls[api] - before.get(api, 0)

    fake_aws.faults.latency("AssumeRole", HELD)
    if path == "superset":
        herd(20, login, released_when(fake_aws, lambda: made("AssumeRole") >= 20))
        assert (made("AssumeRole"), made("GetClusterCredentials")) == (20, 20)
        return
    assert iampool.superset.install(cache=cache, strict=True)
    try:
        logins = herd(20, login, released_when(fake_aws, lambda: cache.stats()["misses"] >= 20))
    finally:
        iampool.superset.uninstall()
    assert (made("AssumeRole"), made("GetClusterCredentials")) == (1, 1)
    assert made("DescribeClusters") == 0  # the endpoint is the database URI's
    login = logins[0]
    assert login["user"] == iam_redshift.user
    assert login["sslmode"] == "verify-ca"  # Superset's
    issued = fake_aws.redshift_password(login["user"], login["password"]) is not None
    assert issued  # (a failure must not print the password)


def test_per_connection_gives_a_pooled_engine_the_current_token(
    iam_postgres: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    assert iampool.superset.install(cache=cache, strict=True, per_connection=True)
    try:
        database = superset_database(iam_postgres)
        with database.get_sqla_engine(nullpool=False) as engine:
            sent: list[str] = []
            event.listen(
                engine,
                "connect",
                lambda dbapi, record: sent.append(fingerprint(dbapi.info.password)),
            )
            with engine.connect() as first:
                cache.clear()  # the next token is signed with new credentials
                with engine.connect() as second:  # a new DBAPI connection of the same engine
                    user = second.execute(text("SELECT current_user")).scalar()
                    assert user == iam_postgres.user
                first.execute(text("SELECT 1"))
    finally:
        iampool.superset.uninstall()

    assert len(sent) == 2
    assert sent[0] != sent[1]
    assert fake_aws.calls["AssumeRole"] >= 2


def test_forked_workers_log_in_while_the_parent_mints(
    iam_postgres: IamDatabase, fake_aws: FakeAws, app_context: Any
) -> None:
    hung, codes, made = fork_while_minting(iam_postgres, fake_aws, app_context)

    assert hung == 0
    assert codes == [0] * 30
    # Each child minted its own (its own process, its own cache), and so did the parent
    # (botocore's retries of calls refused under 31 at once count too).
    assert made >= 31


FORK_WAIT = 120.0


def fork_while_minting(
    iam_postgres: IamDatabase, fake_aws: FakeAws, app_context: Any
) -> tuple[int, list[int], int]:
    """With install(): 30 children forked while the parent's own login waits on AssumeRole,
    each logging in cold: how many never finished, their exit codes, the AssumeRole calls made.

    Thirty children building their AWS clients at once take a while on a small machine: the
    mint deadline must not be what ends them (a hang is what is counted).
    """
    cache = CredentialCache(deadline=FORK_WAIT)
    assert iampool.superset.install(cache=cache, strict=True)
    try:
        return _fork_while_minting(iam_postgres, fake_aws, app_context)
    finally:
        iampool.superset.uninstall()
        cache.close()


def _fork_while_minting(
    iam_postgres: IamDatabase, fake_aws: FakeAws, app_context: Any
) -> tuple[int, list[int], int]:
    warm = superset_database(iam_postgres)
    assert logged_in_user(warm) == iam_postgres.user  # the service thread runs in the parent
    cold = superset_database(iam_postgres, role_arn=fake_aws.create_role(f"forked-{os.getpid()}"))
    before = fake_aws.calls["AssumeRole"]
    fake_aws.faults.latency("AssumeRole", HELD)
    parent = threading.Thread(target=herd, args=(1, lambda: connect_args_in(app_context, cold)))
    parent.start()  # a flight in progress at every fork
    try:
        fake_aws.wait_for_calls("AssumeRole", before + 1, timeout=HELD / 2)
        children = []
        for _ in range(30):
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child)
                code = 1
                try:
                    with app_context.app_context():
                        code = 0 if logged_in_user(cold) == iam_postgres.user else 2
                finally:
                    os._exit(code)
            children.append(pid)
    finally:
        fake_aws.faults.clear()
        parent.join(FORK_WAIT)
    deadline = time.monotonic() + FORK_WAIT
    codes: dict[int, int] = {}
    while len(codes) < len(children) and time.monotonic() < deadline:
        for pid in children:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    hung = [pid for pid in children if pid not in codes]
    for pid in hung:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return len(hung), sorted(codes.values()), fake_aws.calls["AssumeRole"] - before


def connect_args_in(app: Any, database: Any) -> dict[str, Any]:
    with app.app_context():
        return connect_args(database)


def test_do_connect_logs_a_plain_psycopg2_engine_in(
    iam_postgres: IamDatabase, fake_aws: FakeAws, cache: CredentialCache, debug_log: Any
) -> None:
    gateway = iam_postgres.gateway
    url = (
        f"postgresql+psycopg2://{iam_postgres.user}@{gateway.host}:{gateway.port}/"
        f"{gateway.upstream.database or 'postgres'}?sslmode=verify-full"
        f"&sslrootcert={iam_postgres.ca_path}"
    )
    engine = create_engine(url)
    event.listen(
        engine,
        "do_connect",
        iampool.superset.do_connect(url, aws_iam=iam_postgres.config, cache=cache),
    )
    try:
        for _ in range(2):
            with engine.connect() as connection:
                user = connection.execute(text("SELECT current_user")).scalar()
                assert user == iam_postgres.user
            engine.dispose()  # the next connect is a new DBAPI connection
    finally:
        engine.dispose()
    assert cache.stats()["sts_calls"] == 1
    assert cache.stats()["tokens_signed"] == 1
    assert_no_secret_in(debug_log.text, fake_aws)


def test_install_refuses_a_superset_whose_seam_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from superset.db_engine_specs.aws_iam import AWSIAMAuthMixin

    def changed(cls: Any, role_arn: str, region: str, *, external_id: str | None = None) -> Any:
        raise AssertionError("not to be called")

    monkeypatch.setattr(AWSIAMAuthMixin, "get_iam_credentials", classmethod(changed))
    seam = dict(vars(AWSIAMAuthMixin))

    assert iampool.superset.install() is False
    assert dict(vars(AWSIAMAuthMixin)) == seam  # nothing replaced
    assert "get_iam_credentials" in caplog.text
    with pytest.raises(iampool.IamPoolError, match="get_iam_credentials"):
        iampool.superset.install(strict=True)


def test_install_refuses_an_untested_superset_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(iampool.superset, "TESTED_VERSIONS", ("5.0",))

    assert iampool.superset.install() is False
    assert "is not a tested version (5.0.*)" in caplog.text


def test_install_prefetches_the_iam_databases_superset_holds(
    superset_app: Any, iam_postgres: IamDatabase, fake_aws: FakeAws, cache: CredentialCache
) -> None:
    from superset import db

    database = superset_database(iam_postgres)
    db.session.add(database)
    db.session.commit()
    before = fake_aws.calls["AssumeRole"]
    try:
        assert iampool.superset.install(superset_app, cache=cache, strict=True)
        fake_aws.wait_for_calls("AssumeRole", before + 1)
        deadline = time.monotonic() + 30
        while cache.stats()["tokens_signed"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        hits = cache.stats()["hits"]
        assert logged_in_user(database) == iam_postgres.user
        assert cache.stats()["hits"] == hits + 1  # the first login was a warm one
        assert fake_aws.calls["AssumeRole"] - before == 1
    finally:
        iampool.superset.uninstall()
        db.session.delete(database)
        db.session.commit()


def test_a_block_iampool_finds_invalid_is_refused_before_any_aws_call(
    iam_postgres: IamDatabase, fake_aws: FakeAws, installed: CredentialCache
) -> None:
    database = superset_database(iam_postgres, session_duration=60)
    before = fake_aws.calls["AssumeRole"]

    message, kind = superset_error(database)

    assert "session_duration" in message
    assert kind == "CONNECTION_MISSING_PARAMETERS_ERROR"
    assert fake_aws.calls["AssumeRole"] == before


def test_uninstall_gives_superset_its_own_logins_back(installed: CredentialCache) -> None:
    from superset.db_engine_specs.aws_iam import AWSIAMAuthMixin

    iampool.superset.uninstall()
    try:
        names = ("get_iam_credentials", "generate_rds_auth_token")
        assert all(
            getattr(AWSIAMAuthMixin, name).__module__ == "superset.db_engine_specs.aws_iam"
            for name in names
        )
    finally:
        assert iampool.superset.install(cache=installed, strict=True)
