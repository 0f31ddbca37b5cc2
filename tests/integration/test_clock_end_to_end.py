"""Clock jumps and freezes end to end (DESIGN invariant 14), under libfaketime.

A child process (``clock_worker.py``) runs the AWS stand-in, the IAM gateway in front of the real
PostgreSQL and iampool on one wall clock that libfaketime moves (``FAKETIME_TIMESTAMP_FILE``,
monotonic clock untouched, as when a laptop sleeps), and this test freezes it with SIGSTOP for
longer than its cache's deadline, as AWS Lambda freezes a process between invocations. Every
connect must work at once: no refused login, no failed connect.

Needs libfaketime (Debian: ``apt-get install libfaketime``); skipped, saying so, without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from iampool.testing import IamDatabase

from .clock_worker import DEADLINE

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
FREEZE = DEADLINE + 4.0  # seconds the child is stopped: past its deadline and freeze threshold
ROOT = Path(__file__).resolve().parents[2]


def run_worker(offset_file: Path) -> dict[str, Any]:
    """Run the worker under libfaketime, freeze it when it asks, and return its report."""
    offset_file.write_text("+0\n")
    env = {
        **os.environ,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "DONT_FAKE_MONOTONIC": "1",  # the name before libfaketime 0.9.8
    }
    report: dict[str, Any] = {}
    errors = offset_file.with_name("worker-stderr.txt")
    with (
        errors.open("w") as stderr,
        subprocess.Popen(  # noqa: S603 - this interpreter, a module of ours
            [sys.executable, "-m", "tests.integration.clock_worker", str(offset_file)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as worker,
    ):
        assert worker.stdin is not None
        assert worker.stdout is not None
        for line in worker.stdout:
            if line == "freeze-me\n":
                offset_file.write_text("+6h\n")  # past the expiry of every credential it holds
                os.kill(worker.pid, signal.SIGSTOP)
                time.sleep(FREEZE)
                os.kill(worker.pid, signal.SIGCONT)
                worker.stdin.write("resumed\n")
                worker.stdin.flush()
            elif line.startswith("{"):
                report = json.loads(line)
        code = worker.wait(200)
    assert code == 0, f"the worker exited with {code}: {errors.read_text()[-3000:]}"
    return report


@pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason=f"libfaketime is not installed ({LIBFAKETIME})"
)
def test_no_refused_login_and_no_failed_connect_after_clock_jumps_and_a_freeze(
    iam_postgres: IamDatabase, tmp_path: Path
) -> None:
    report = run_worker(tmp_path / "faketime")

    nothing_wrong = {"failed": [], "rejected": {}}
    assert report["warm"] == nothing_wrong
    assert report["jump"] == nothing_wrong  # 2 h later: credentials and token minted anew
    assert report["jump in flight"] == nothing_wrong  # arrived expired: minted again, not used
    assert report["freeze"] == nothing_wrong  # the mint and the blocked thread outlived it
    assert report["sts_calls"] >= 4
