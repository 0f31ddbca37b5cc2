"""``iampool standin`` / ``python -m iampool.testing``, used as a user uses it: a process of its
own, and clients in other processes that know only the lines it printed."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import httpx
import pymysql
import pytest

PG_ADMIN_DSN = (
    os.environ.get("IAMPOOL_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_DSN = os.environ.get("IAMPOOL_TEST_MYSQL_DSN") or "mysql://root@127.0.0.1:3306/test"
ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 90  # a loaded CI machine imports moto slowly
SHUTDOWN_BOUND = 30  # the stand-in's own bound (15 s) plus the interpreter's exit
# Only what a shell needs: the stand-in's lines must be enough on their own.
BARE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
BIN = Path(sys.executable).parent


@dataclass
class Standin:
    process: subprocess.Popen[str]
    lines: str
    env_file: Path

    @property
    def env(self) -> dict[str, str]:
        """The variables the lines export, read back by a shell."""
        shown = subprocess.run(  # noqa: S603
            ["bash", "-c", f". {self.env_file} && env -0"],  # noqa: S607
            env=BARE_ENV,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal it; its exit status and standard error, within the bound."""
        self.process.send_signal(signum)
        try:
            _, stderr = self.process.communicate(timeout=SHUTDOWN_BOUND)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            pytest.fail(f"the stand-in did not exit within {SHUTDOWN_BOUND} s of a signal")
        return self.process.returncode, stderr


def start_standin(tmp_path: Path, *args: str, module: bool = False) -> Standin:
    env_file = tmp_path / "standin.env"
    command = (
        [sys.executable, "-m", "iampool.testing"] if module else [str(BIN / "iampool"), "standin"]
    )
    process = subprocess.Popen(  # noqa: S603
        [*command, *args, "--env-file", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while not env_file.exists():
        if process.poll() is not None:
            pytest.fail(f"the stand-in exited ({process.returncode}): {process.stderr.read()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the stand-in did not print its lines within {STARTUP_SECONDS} s")
        time.sleep(0.1)
    assert process.stdout is not None
    lines = "".join(process.stdout.readline() for _ in env_file.read_text().splitlines())
    return Standin(process, lines, env_file)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Standin]:
    """A stand-in for both servers; stopped with SIGTERM at the end if the test did not."""
    running = start_standin(tmp_path, "--postgres", PG_ADMIN_DSN, "--mysql", MYSQL_ADMIN_DSN)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def in_shell(standin: Standin, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in a shell whose environment is the stand-in's lines and nothing else."""
    return subprocess.run(  # noqa: S603
        ["bash", "-c", f". {standin.env_file} && PATH={BIN}:$PATH && {command}"],  # noqa: S607
        env=BARE_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def pg_role_exists(name: str) -> bool:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name))
    finally:
        await connection.close()


def mysql_user_exists(name: str) -> bool:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(MYSQL_ADMIN_DSN)
    connection = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM mysql.user WHERE user = %s", (name,))
            return cursor.fetchone() is not None
    finally:
        connection.close()


def test_iampool_check_passes_in_a_process_given_only_the_lines(standin: Standin) -> None:
    env = standin.env
    login = env["IAMPOOL_STANDIN_LOGIN_USER"]
    assert login.startswith("iampool_")
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert json.loads(env["IAMPOOL_STANDIN_AWS_IAM"])["db_username"] == login

    for variable in ("IAMPOOL_STANDIN_POSTGRES_DSN", "IAMPOOL_STANDIN_MYSQL_DSN"):
        checked = in_shell(
            standin, f'iampool check "${variable}" --extra "$IAMPOOL_STANDIN_AWS_IAM"'
        )
        assert checked.returncode == 0, checked.stderr
        assert "identity" in checked.stdout
        assert login in checked.stdout

    status, stderr = standin.stop()
    assert status == 0, stderr
    assert "X-Amz-Signature" not in stderr + standin.lines  # no token printed or logged


@pytest.mark.anyio
async def test_sigterm_drops_the_users_it_created_and_exits_within_the_bound(
    standin: Standin,
) -> None:
    login = standin.env["IAMPOOL_STANDIN_LOGIN_USER"]
    assert await pg_role_exists(login)
    assert mysql_user_exists(login)

    started = time.monotonic()
    status, stderr = standin.stop(signal.SIGTERM)

    assert status == 0, stderr
    assert time.monotonic() - started < SHUTDOWN_BOUND
    assert "the users it created are dropped" in stderr
    assert not await pg_role_exists(login)
    assert not mysql_user_exists(login)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_uvicorn_app_with_three_workers_serves_every_request_through_the_standin(
    standin: Standin,
) -> None:
    port = free_port()
    login = standin.env["IAMPOOL_STANDIN_LOGIN_USER"]
    serve = (
        f". {standin.env_file} && export DATABASE_DSN=$IAMPOOL_STANDIN_POSTGRES_DSN "
        f"AWS_IAM=$IAMPOOL_STANDIN_AWS_IAM && exec {BIN}/python -m uvicorn "
        f"examples.fastapi_app.app:app --workers 3 --host 127.0.0.1 --port {port}"
    )
    server = subprocess.Popen(  # noqa: S603
        ["bash", "-c", serve],  # noqa: S607
        cwd=ROOT,
        env=BARE_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_until_serving(client, server)

            def whoami(_: int) -> tuple[int, str]:
                response = client.get("/whoami")
                return response.status_code, response.json().get("user", "")

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(whoami, range(120)))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, stderr = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()

    assert answers == [(200, login)] * 120
    assert stderr.count("Started server process") == 3  # one line from each worker
    assert "X-Amz-Signature" not in stderr


def wait_until_serving(client: httpx.Client, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"uvicorn exited ({server.returncode})")
        try:
            if client.get("/whoami").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"uvicorn did not serve within {STARTUP_SECONDS} s")


def test_json_output_short_credentials_and_faults_from_python_m_iampool_testing(
    tmp_path: Path,
) -> None:
    standin = start_standin(
        tmp_path,
        "--postgres", PG_ADMIN_DSN,
        "--login-user", "standin_named",
        "--credentials-ttl", "60",
        "--fault", "AssumeRole:access_denied:1",
        "--json",
        module=True,
    )  # fmt: skip
    try:
        document = json.loads(standin.lines)
        env = document["env"]
        assert env["IAMPOOL_STANDIN_LOGIN_USER"] == "standin_named"
        assert "AWS_PROFILE" in document["unset"]
        dsn, block = env["IAMPOOL_STANDIN_POSTGRES_DSN"], env["IAMPOOL_STANDIN_AWS_IAM"]
        client_env = {**BARE_ENV, **env}

        denied = check_with(dsn, block, client_env)
        assert denied.returncode == 1
        assert "AccessDenied" in denied.stderr

        asked = datetime.now(timezone.utc)
        checked = check_with(dsn, block, client_env)
        assert checked.returncode == 0, checked.stderr
        # The token expires with the credentials that signed it: 60 s after issue, not 15 min.
        expiry = report(checked.stdout)["credential expiry"]
        assert datetime.fromisoformat(expiry) <= asked + timedelta(seconds=61 + 30)
    finally:
        status, stderr = standin.stop(signal.SIGINT)
    assert status == 0, stderr


def check_with(dsn: str, block: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(BIN / "iampool"), "check", dsn, "--extra", block],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def report(stdout: str) -> dict[str, str]:
    """``iampool check``'s report: name -> value (two spaces or more between them)."""
    pairs = [re.split(r" {2,}", line, maxsplit=1) for line in stdout.splitlines() if line]
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give at least one server"),
        (["--postgres", "mysql://root@127.0.0.1/test"], "--postgres: give a postgresql:// DSN"),
        (["--postgres", PG_ADMIN_DSN, "--login-user", "no good"], "--login-user:"),
        (["--postgres", PG_ADMIN_DSN, "--fault", "AssumeRole:boom"], "--fault:"),
        (["--postgres", PG_ADMIN_DSN, "--latency", "AssumeRole:x"], "--latency:"),
        (["--postgres", PG_ADMIN_DSN, "--credentials-ttl", "0"], "--credentials-ttl"),
        (["--postgres", "postgresql://postgres@127.0.0.1:1/postgres"], "does not answer"),
        (["--posgres", PG_ADMIN_DSN], "--posgres"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], says: str) -> None:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "iampool.testing", *args],
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert says in done.stderr
