"""Two test runs at once on one server, as two CI jobs or pytest-xdist workers make them: each
uses the plugin's fixtures with its default login user, and the run that ends first drops only
its own user while the other still logs in as its own.

With one fixed login user (``app``, as before), the run that created it dropped it at its end
and the other run's next login failed (``role "app" does not exist``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.integration.test_standin import mysql_user_exists

PG_ADMIN_DSN = (
    os.environ.get("IAMPOOL_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
WAIT = 120.0  # seconds for a run to start (imports, moto) on a loaded machine

# A user's own test file: it knows nothing of the other run. The first run sets up its users,
# then the second its own; both record their login user, wait for each other, then log in until
# told the other run has ended (the first: at once). With one shared name the first run creates
# the user, the second finds it, and the first drops it at its end: the second's next login fails.
RUN = """
import asyncio, os, time
from pathlib import Path

import iampool

SHARED = Path(os.environ["TWO_RUNS_DIR"])
ME, OTHER = os.environ["TWO_RUNS_ME"], os.environ["TWO_RUNS_OTHER"]


def wait_for(path):
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.05)


async def users(postgres, mysql):
    connection = await iampool.connect(postgres.dsn, aws_iam=postgres.config)
    try:
        pg_user = await connection.fetchval("SELECT current_user")
    finally:
        await connection.close()
    connection = await iampool.connect(mysql.dsn, aws_iam=mysql.config)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT USER()")  # the login name (an anonymous account may match)
            (mysql_user,) = await cursor.fetchone()
    finally:
        connection.close()
    return pg_user, mysql_user.split("@")[0]


def test_logins_while_the_other_run_comes_and_goes(request):
    if ME == "second":  # the first run's users exist before this run asks for its own
        wait_for(SHARED / "first.user")
    iam_postgres = request.getfixturevalue("iam_postgres")
    iam_mysql = request.getfixturevalue("iam_mysql")
    (SHARED / f"{ME}.user").write_text(iam_postgres.user)
    wait_for(SHARED / f"{OTHER}.user")
    logins = 0
    while True:
        ended = (SHARED / f"{OTHER}.ended").exists() or ME == "first"
        assert asyncio.run(users(iam_postgres, iam_mysql)) == (iam_postgres.user,) * 2
        logins += 1
        if ended and logins >= 3:
            break
        time.sleep(0.1)
"""


def start_run(directory: Path, me: str, other: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TWO_RUNS_DIR": str(directory),
        "TWO_RUNS_ME": me,
        "TWO_RUNS_OTHER": other,
    }
    env.pop("IAMPOOL_TEST_LOGIN_USER", None)  # the default: a name unique to the run
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("COVERAGE_PROCESS_START", None)
    with (directory / f"{me}.out").open("w") as output:  # the child keeps its own copy
        return subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-c",
                str(directory / "pytest.ini"),
                "--rootdir",
                str(directory),
                str(directory / "test_users_app.py"),
            ],
            cwd=directory,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )


def wait_for_exit(run: subprocess.Popen[str], other: subprocess.Popen[str]) -> None:
    """Until ``run`` exits; sooner if ``other`` fails (``run`` would wait for it in vain)."""
    deadline = time.monotonic() + WAIT * 2
    while run.poll() is None and other.poll() in (None, 0) and time.monotonic() < deadline:
        time.sleep(0.1)


async def pg_role_exists(name: str) -> bool:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name))
    finally:
        await connection.close()


@pytest.mark.anyio
@pytest.mark.timeout(WAIT * 5)
async def test_two_runs_of_a_fixture_using_test_file_at_once_both_pass(tmp_path: Path) -> None:
    (tmp_path / "test_users_app.py").write_text(RUN)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    first = start_run(tmp_path, "first", "second")
    second = start_run(tmp_path, "second", "first")
    try:
        wait_for_exit(first, second)
        if first.poll() == 0:
            (tmp_path / "first.ended").touch()  # its session is over: its users are dropped
        wait_for_exit(second, first)
    finally:
        for run in (first, second):
            if run.poll() is None:
                run.kill()
            run.wait()
    first_output, second_output = (
        (tmp_path / "first.out").read_text(),
        (tmp_path / "second.out").read_text(),
    )

    assert first.returncode == 0, first_output
    assert second.returncode == 0, second_output
    users = {(tmp_path / f"{run}.user").read_text() for run in ("first", "second")}
    assert len(users) == 2  # one login user each, named for the run
    assert all(user.startswith("iampool_") for user in users)
    for user in users:  # each run dropped what it created
        assert not await pg_role_exists(user)
        assert not mysql_user_exists(user)


def iampool(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "iampool", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


@pytest.mark.anyio
async def test_the_demo_logs_in_as_the_login_user_it_is_given_and_drops_it() -> None:
    name = f"demo_{os.getpid():x}"
    env = {**os.environ, "IAMPOOL_TEST_LOGIN_USER": name}

    result = iampool("demo", "--json", "--queries", "50", "--workers", "4", env=env)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["login_role"], summary["identity"]) == (name, name)
    assert summary["login_role_dropped"] is True
    assert not await pg_role_exists(name)


@pytest.mark.parametrize(
    "args", [["--login-user", "no good"], ["--login-user", "1st"], ["--login-user", "x" * 33]]
)
def test_a_login_user_name_the_kit_cannot_take_is_one_line_exit_2(args: list[str]) -> None:
    result = iampool("demo", *args, env=dict(os.environ))

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("iampool demo: --login-user: ")
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


NAMED = """
import os


def test_the_login_user(iam_login_user):
    assert iam_login_user == os.environ["EXPECTED_LOGIN_USER"]
"""


@pytest.mark.parametrize(
    ("option", "variable", "ini", "expected"),
    [
        ("from_option", "from_env", "from_ini", "from_option"),
        (None, "from_env", "from_ini", "from_env"),
        (None, None, "from_ini", "from_ini"),
        ("from_option", None, None, "from_option_gw7"),  # under xdist: the worker's id added
    ],
)
def test_the_login_user_comes_from_the_option_the_environment_or_the_ini_setting(
    tmp_path: Path, option: str | None, variable: str | None, ini: str | None, expected: str
) -> None:
    (tmp_path / "test_named.py").write_text(NAMED)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\n" + (f"iampool_login_user = {ini}\n" if ini else "")
    )
    env = {**os.environ, "EXPECTED_LOGIN_USER": expected}
    env.pop("IAMPOOL_TEST_LOGIN_USER", None)
    env.pop("COVERAGE_PROCESS_START", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    if variable:
        env["IAMPOOL_TEST_LOGIN_USER"] = variable
    if expected.endswith("_gw7"):
        env["PYTEST_XDIST_WORKER"] = "gw7"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c"]
    command += [str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)]
    if option:
        command += ["--iampool-login-user", option]

    done = subprocess.run(  # noqa: S603
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WAIT, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr
