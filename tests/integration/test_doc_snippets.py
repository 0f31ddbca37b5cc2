"""Every code snippet of README.md and docs/*.md runs as written against the stand-in, or is a
marked fragment (``tests/doc_snippets.py`` says how each kind runs and how a fragment is marked).

The stand-in is this session's: the fake AWS and the IAM gateways in front of the PostgreSQL and
MariaDB servers of ``IAMPOOL_TEST_PG_DSN`` / ``IAMPOOL_TEST_MYSQL_DSN``. A snippet runs in a
subprocess with a timeout, its environment pointing every AWS SDK at the fake AWS and naming
what the docs' examples read: ``DATABASE_DSN`` and ``AWS_IAM`` (the gateway's DSN for PostgreSQL
and its ``aws_iam`` block, as docs/fastapi.md deploys them). Test files run with pytest, which
starts the kit's own fixtures in that process, as in a user's project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from ..doc_snippets import ROOT, Snippet, census, every_snippet, pages, snippets

TIMEOUT = 240  # seconds per subprocess: a test file starts its own fake AWS and gateways
# The share of code that runs must not shrink unnoticed: raise it as more snippets run.
AT_LEAST_RUN = 22

_RUNNER = """\
import ast, asyncio, sys
path = sys.argv[1]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__", "__file__": path}
result = eval(code, namespace)  # a coroutine when the snippet awaits at the top level
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


@pytest.fixture(scope="module")
def stand_in_env(fake_aws: Any, iam_postgres: Any) -> dict[str, str]:
    """The environment of every snippet: the fake AWS, the test servers, the example's names."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(fake_aws.env())
    env["DATABASE_DSN"] = iam_postgres.dsn
    env["AWS_IAM"] = json.dumps(iam_postgres.config.to_dict())
    env.setdefault("IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    env.setdefault("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - our interpreter, bash and the docs' own text
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} did not finish in {TIMEOUT} s: {exc.output!r}")


def pytest_outcomes(report: Path) -> dict[str, list[str]]:
    """A junit report: test file -> the failures in it (empty: every test passed)."""
    failures: dict[str, list[str]] = defaultdict(list)
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - pytest's own file
        module = case.get("classname", "").split(".")[0]
        name = f"{module}.py"
        failures.setdefault(name, [])
        for problem in [*case.iter("failure"), *case.iter("error")]:
            failures[name].append(f"{case.get('name')}: {problem.get('message', '')[:2000]}")
    return failures


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_every_snippet_runs_or_is_a_marked_fragment(
    page: Path, stand_in_env: dict[str, str], tmp_path: Path
) -> None:
    failed: list[str] = []
    tests: dict[str, Snippet] = {}
    for snippet in snippets(page):
        if snippet.kind is None or snippet.fragment is not None:
            continue
        if snippet.kind != "python":
            result = run(["bash", "-e", "-c", snippet.commands()], ROOT, stand_in_env)
            if result.returncode:
                failed.append(f"{snippet.where}: exit {result.returncode}\n{result.stderr[-3000:]}")
            continue
        name = snippet.file_name
        if name is None and snippet.defines_tests:
            name = f"test_{Path(snippet.page).stem}_{snippet.line}.py"
        if name is not None:
            (tmp_path / name).write_text(snippet.text)
            if name.startswith("test_"):
                tests[name] = snippet
                continue
            if name == "conftest.py":
                continue
        script = tmp_path / (name or f"snippet_{snippet.line}.py")
        script.write_text(snippet.text)
        result = run([sys.executable, "-c", _RUNNER, str(script)], tmp_path, stand_in_env)
        if result.returncode:
            failed.append(f"{snippet.where}: exit {result.returncode}\n{result.stderr[-3000:]}")
    if tests:
        report = tmp_path / "report.xml"
        result = run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             f"--junitxml={report}", *tests],
            tmp_path,
            stand_in_env,
        )  # fmt: skip
        outcomes = pytest_outcomes(report) if report.exists() else {}
        for name, snippet in tests.items():
            if name not in outcomes:
                failed.append(f"{snippet.where}: no test ran\n{result.stdout[-3000:]}")
            elif outcomes[name]:
                failed.append(f"{snippet.where}: " + "\n".join(outcomes[name]))
    assert not failed, "\n\n".join(failed)


def test_the_census_of_snippets(record_property: Any) -> None:
    found = every_snippet()
    counted = census(found)
    print(counted)  # shown with -s, and in the report of a failure
    record_property("snippets", str(counted))  # in a --junitxml report
    assert counted.run >= AT_LEAST_RUN, counted
    assert counted.run + counted.fragments == sum(s.kind is not None for s in found)
