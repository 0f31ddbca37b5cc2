"""Apache Superset's own IAM logins against the same logins through ``iampool.superset.install()``.

Runs in Superset's environment (``scripts/superset-env``: the real ``apache-superset`` 6.1 and
boto3), with the testing kit's FakeAws and an RDS-mode IAM gateway in front of the real
PostgreSQL, all in this process. Superset's app is built with ``create_app()`` and the feature
flag on; each row runs Superset's path (not installed) and iampool's (installed, a fresh
``CredentialCache``) in the same run:

- herd: 50 threads, started together on a cold process state, each opening a connection the
  way Superset does (``Database.get_sqla_engine()``, connect, ``SELECT 1``): AssumeRole calls
  the stand-in received, and the wall time of the herd;
- token cost, warm, median per call over batches: the whole IAM step of a new engine,
  ``Database.update_params_from_encrypted_extra`` (flag check, validation, STS cache, token,
  connect_args), and its token step alone, ``generate_rds_auth_token`` (Superset: a new boto3
  client and a signature); Superset's path twice (the second is the A/A control: its ratio to
  the first is 1.00 in truth and shows the noise of this run), then iampool's; and iampool's
  primitive alone, ``DbAuth.credentials_sync()`` (DESIGN target: <= 2 us);
- Redshift: 20 threads, cold, provisioned (GetClusterCredentials) and Serverless
  (GetCredentials): the AWS calls each path made;
- forked workers: 30 children forked while the parent's own login waits on AssumeRole (a flight
  in progress at every fork, as in a pre-fork server), each logging in cold and connecting; the
  children that did not finish within 120 s are counted as hung (target 0 of 30). This is the
  procedure of tests/superset's forked-workers test, imported from it.

Run: ``PYTHONPATH=src $(scripts/superset-env) benchmarks/bench_superset.py`` (about a minute).
``IAMPOOL_TEST_PG_DSN`` names the upstream server (default: PostgreSQL at 127.0.0.1:5432).
Prints numbers, never secrets.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from typing import Any

REGION = "us-east-1"
USER = "app"
PG_UPSTREAM = os.environ.get("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
HERD = 50
REDSHIFT_HERD = 20
CHILDREN = 30


def main() -> int:
    folder = tempfile.mkdtemp(prefix="bench-superset-")
    config = os.path.join(folder, "superset_config.py")
    with open(config, "w") as file:
        file.write(
            f"SECRET_KEY = {uuid.uuid4().hex * 2!r}\n"
            f"SQLALCHEMY_DATABASE_URI = {'sqlite:///' + os.path.join(folder, 'meta.db')!r}\n"
            "FEATURE_FLAGS = {'AWS_DATABASE_IAM_AUTH': True}\n"
        )
    os.environ["SUPERSET_CONFIG_PATH"] = config
    import logging

    from superset.app import create_app

    import iampool.superset
    from iampool import CredentialCache
    from iampool.testing import FakeAws, IamGateway

    app = create_app()
    logging.disable(logging.WARNING)  # Superset's INFO lines; the tables are the output
    with ExitStack() as stack:
        aws = stack.enter_context(FakeAws(region=REGION))
        stack.enter_context(aws.export_env())
        gateway = IamGateway(
            "postgresql", upstream=PG_UPSTREAM, authority=aws, region=REGION, mode="rds"
        )
        gateway.start()
        stack.callback(gateway.stop)
        stack.callback(gateway.drop_created_users)
        gateway.ensure_user(USER)
        stack.enter_context(app.app_context())

        def database(role: str, scheme: str = "postgresql+psycopg2", **block: Any) -> Any:
            from superset.models.core import Database

            name = gateway.upstream.database or "postgres"
            user = "" if scheme.startswith("redshift") else f"{USER}@"
            aws_iam = {
                "enabled": True,
                "role_arn": aws.create_role(role),
                "region": REGION,
                "db_username": USER,
                **block,
            }
            return Database(
                database_name=role,
                sqlalchemy_uri=f"{scheme}://{user}{gateway.host}:{gateway.port}/{name}",
                encrypted_extra=json.dumps({"aws_iam": aws_iam}),
            )

        def paths(run: Callable[[str], Any]) -> dict[str, Any]:
            """``run`` on Superset's path, then on iampool's (installed on a fresh cache)."""
            results = {"Superset": run("superset")}
            cache = CredentialCache()
            assert iampool.superset.install(cache=cache, strict=True)
            try:
                results["iampool"] = run("iampool")
            finally:
                iampool.superset.uninstall()
                cache.close()
            return results

        herd = paths(lambda path: bench_herd(app, aws, database(f"bench-herd-{path}")))
        tokens = bench_token_cost(database("bench-token"))
        redshift = bench_redshift(app, aws, gateway, database, paths)
        hung, exits = bench_forked(app, aws, gateway)
    print_report(herd, tokens, redshift, hung, exits)
    return 0 if hung == 0 else 1


def clear_supersets_cache() -> None:
    from superset.db_engine_specs import aws_iam

    aws_iam._credentials_cache.clear()


def in_threads(app: Any, size: int, login: Callable[[], Any]) -> float:
    """``login`` on ``size`` threads started together (each in an app context); wall time."""
    barrier = threading.Barrier(size + 1)
    errors: list[BaseException] = []

    def run() -> None:
        with app.app_context():
            barrier.wait()
            try:
                login()
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(size)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def bench_herd(app: Any, aws: Any, database: Any) -> dict[str, float]:
    from sqlalchemy import text

    clear_supersets_cache()
    before = aws.calls["AssumeRole"]

    def connect() -> None:
        with database.get_sqla_engine() as engine, engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    seconds = in_threads(app, HERD, connect)
    return {"assume_role": aws.calls["AssumeRole"] - before, "seconds": seconds}


def per_call_us(call: Callable[[], Any], batches: int, size: int) -> float:
    """Median over ``batches`` of the mean time per call in a batch of ``size`` calls."""
    call()
    samples = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(size):
            call()
        samples.append((time.perf_counter() - started) / size * 1e6)
    return statistics.median(samples)


def bench_token_cost(database: Any) -> dict[str, dict[str, float]]:
    """Per call, warm: the whole IAM step of a new engine, and its token step alone."""
    from sqlalchemy.engine.url import make_url
    from superset.db_engine_specs.aws_iam import AWSIAMAuthMixin as Mixin

    import iampool.superset
    from iampool import CredentialCache, auth_for

    block = json.loads(database.encrypted_extra)["aws_iam"]
    url = make_url(database.sqlalchemy_uri)
    role, region = block["role_arn"], block["region"]

    def step() -> None:
        database.update_params_from_encrypted_extra({})

    def token(credentials: Any) -> Callable[[], Any]:
        return lambda: Mixin.generate_rds_auth_token(credentials, url.host, url.port, USER, region)

    clear_supersets_cache()
    supersets = token(Mixin.get_iam_credentials(role, region))
    rows = {
        "step": {"superset": per_call_us(step, 15, 20), "control": per_call_us(step, 15, 20)},
        "token": {
            "superset": per_call_us(supersets, 15, 20),
            "control": per_call_us(supersets, 15, 20),
        },
    }
    cache = CredentialCache()
    assert iampool.superset.install(cache=cache, strict=True)
    try:
        rows["step"]["iampool"] = per_call_us(step, 15, 200)
        rows["token"]["iampool"] = per_call_us(
            token(Mixin.get_iam_credentials(role, region)), 15, 2000
        )
    finally:
        iampool.superset.uninstall()
    auth = auth_for(block, host=url.host, port=url.port, cache=cache)
    rows["sync"] = {"iampool": per_call_us(auth.credentials_sync, 50, 2000)}
    rows["async"] = {"iampool": asyncio.run(awaited_us(auth.credentials, 50, 2000))}
    cache.close()
    return rows


async def awaited_us(call: Callable[[], Any], batches: int, size: int) -> float:
    """``per_call_us`` for a coroutine function, awaited on one event loop."""
    await call()
    samples = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(size):
            await call()
        samples.append((time.perf_counter() - started) / size * 1e6)
    return statistics.median(samples)


def bench_redshift(
    app: Any, aws: Any, gateway: Any, database: Any, paths: Callable[..., dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    name = gateway.upstream.database or "postgres"
    aws.create_redshift_cluster("bench-cluster", db_name=name, address=gateway.host, port=5439)
    aws.create_workgroup("bench-workgroup", address=gateway.host, port=5439)
    rows: dict[str, dict[str, Any]] = {}
    serverless = {"workgroup_name": "bench-workgroup", "db_username": None}
    for kind, api, block in (
        ("provisioned", "GetClusterCredentials", {"cluster_identifier": "bench-cluster"}),
        ("Serverless", "GetCredentials", serverless),
    ):

        def run(path: str, kind: str = kind, api: str = api, block: Any = block) -> dict[str, int]:
            role = f"bench-redshift-{kind}-{path}".lower()
            target = database(role, scheme="redshift+psycopg2", db_name=name, **block)
            extra = json.loads(target.encrypted_extra)
            extra["aws_iam"] = {k: v for k, v in extra["aws_iam"].items() if v is not None}
            target.encrypted_extra = json.dumps(extra)
            clear_supersets_cache()
            before = dict(aws.calls)
            in_threads(app, REDSHIFT_HERD, lambda: target.update_params_from_encrypted_extra({}))
            return {
                "assume_role": aws.calls["AssumeRole"] - before.get("AssumeRole", 0),
                "login": aws.calls[api] - before.get(api, 0),
            }

        rows[kind] = {"api": api, **paths(run)}
    return rows


def bench_forked(app: Any, aws: Any, gateway: Any) -> tuple[int, list[int]]:
    """The forked-workers test's own procedure (tests/superset), run here to report its count."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its tests
    from tests.superset.test_superset_logins import fork_while_minting

    from iampool import AwsIamConfig
    from iampool.testing import IamDatabase

    block = {"enabled": True, "role_arn": aws.create_role("bench-fork"), "region": REGION}
    target = IamDatabase(
        dsn=gateway.dsn(USER),
        config=AwsIamConfig.from_extra({**block, "db_username": USER}),
        gateway=gateway,
        ca_path=gateway.ca_path,
        user=USER,
    )
    hung, codes, _ = fork_while_minting(target, aws, app)
    return hung, codes


def print_report(
    herd: dict[str, Any],
    tokens: dict[str, dict[str, float]],
    redshift: dict[str, dict[str, Any]],
    hung: int,
    exits: list[int],
) -> None:
    print(f"bench_superset.py, {date.today().isoformat()}, {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}, apache-superset {superset_version()}")  # fmt: skip
    print()
    print(f"Cold herd: {HERD} threads open a connection through Database.get_sqla_engine()")
    print("| path | AssumeRole calls | wall time |")
    print("|---|---|---|")
    for path, row in herd.items():
        print(f"| {path} | {row['assume_role']} | {row['seconds']:.2f} s |")
    print()
    print("Warm IAM login per new engine, median per call")
    print("| what | Superset | Superset again (A/A) | iampool | iampool / Superset |")
    print("|---|---|---|---|---|")
    for name, label in (
        ("step", "the whole IAM step (`update_params_from_encrypted_extra`)"),
        ("token", "its token step (`generate_rds_auth_token`)"),
    ):
        row = tokens[name]
        base, control, ours = row["superset"], row["control"], row["iampool"]
        print(f"| {label} | {base:,.1f} us | {control:,.1f} us ({control / base:.2f}) "
              f"| {ours:,.2f} us | {ours / base:.4f} |")  # fmt: skip
    print(f"| iampool's `DbAuth.credentials_sync()` alone (target <= 2 us) | | | "
          f"{tokens['sync']['iampool']:.2f} us | |")  # fmt: skip
    print(f"| for reference: `await DbAuth.credentials()`, same cache | | | "
          f"{tokens['async']['iampool']:.2f} us | |")  # fmt: skip
    print()
    print(f"Redshift: {REDSHIFT_HERD} threads log in cold (AWS calls made)")
    print("| deployment | path | AssumeRole | Redshift credentials call |")
    print("|---|---|---|---|")
    for kind, row in redshift.items():
        for path in ("Superset", "iampool"):
            calls = row[path]
            print(f"| {kind} | {path} | {calls['assume_role']} | "
                  f"{calls['login']} {row['api']} |")  # fmt: skip
    print()
    finished = sum(1 for code in exits if code == 0)
    print(f"Forked workers: {CHILDREN} children forked while the parent's login waits on "
          f"AssumeRole: {hung} of {CHILDREN} hung, {finished} logged in and queried")  # fmt: skip


def superset_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("apache-superset")


if __name__ == "__main__":
    sys.exit(main())
