"""The SDK log filter on adversarial text (DESIGN §6: <= 5 ms per 64 KB, linear).

For each shape of text built to make a backtracking filter slow, the time ``redact()`` takes on
64 KB and on 1 MB of it, for the filter as it is (``iampool._redact``) and as it was before it
was made linear (``_redact.py`` of commit 9af94da, read from git and imported in this process).
Every number is the median of several runs, in CPU time of the measuring thread (on a shared
machine wall time also counts the time slices other processes got); ``A/A`` is the current
filter against itself (two separate series of runs), the noise floor of every ratio. The
target is judged on the fastest run of both series: on this shared machine CPU time too moves
with the other tenants' load (by up to two times between runs of unchanged code), and the
fastest run is the filter's own cost, the median that plus the load. The old
filter is quadratic: it is measured at 16 KB and 64 KB (one run each; it takes seconds), and its
1 MB time is extrapolated from those two, and marked so.

Run: ``.venv/bin/python benchmarks/bench_redaction.py`` (about five minutes, most of it the
old filter at 64 KB; ``--skip-old`` leaves it out). ``--before REV`` also times the filter of git
revision REV (a linear one) exactly as the current one, interleaved with it run by run, and
prints its times and the current filter's over them. Prints times, never the text.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from iampool import _redact

BASE = "9af94da"  # the last commit with the quadratic filter
KB = 1024
SIZES = {"64 KB": 64 * KB, "1 MB": 1024 * KB}
OLD_SIZES = (16 * KB, 64 * KB)
TARGET_MS_PER_64KB = 5.0


def repeat(unit: str, size: int, head: str = "", tail: str = "") -> str:
    body = unit * ((size - len(head) - len(tail)) // len(unit) + 1)
    return (head + body)[: size - len(tail)] + tail


# Each shape: a name and a function from a size in characters to the text.
SHAPES: list[tuple[str, Callable[[int], str]]] = [
    ("keywords run together", lambda n: repeat("secretpasswordtokensignature", n)),
    ("one long XML name", lambda n: repeat("password", n, "<", ">v")),
    ("token- repeated", lambda n: repeat("token-", n)),
    ("URL-encoded XML name", lambda n: repeat("password", n, "%3C", "%3Ev")),
    ("unclosed XML value", lambda n: repeat("%25", n, "<DbPassword>")),
    ("unterminated quoted value", lambda n: repeat("a%2", n, 'password="')),
    ("unquoted value of escapes", lambda n: repeat("%41", n, "password=")),
    ("Authorization to line end", lambda n: repeat("x%0", n, "Authorization: ")),
    ("separators without values", lambda n: repeat("token:", n)),
    ("names and spaces", lambda n: repeat("password %20", n)),
    ("JSON-escaped quotes", lambda n: repeat('\\"token\\": \\"', n)),
    ("one field every 10 bytes", lambda n: repeat("token: x; ", n)),
    ("AssumeRole bodies", lambda n: repeat(ASSUME_ROLE_BODY, n)),
    # More of the densest text there is to redact, in the SDK's other forms.
    ("a field every 8 bytes", lambda n: repeat("token=x&", n)),
    ("quoted fields (repr)", lambda n: repeat("'token': 'x', ", n)),
    ("security token headers", lambda n: repeat("x-amz-security-token:x\n", n)),
    ("XML fields", lambda n: repeat("<Token>x</Token>", n)),
    # What each way of the one expression reads worst: escapes that turn a loop each, names
    # that start an element or a field and end at once, elements that never close.
    ("a value of %", lambda n: repeat("%", n, "password=x")),
    ("URL-encoded XML of %", lambda n: repeat("%", n, "%3CDbPassword%3E")),
    ("names after <", lambda n: repeat("<token", n)),
    ("URL-encoded tags", lambda n: repeat("%3Ctoken%3E", n)),
    ("elements left open", lambda n: repeat("<Token>x", n)),
]
ASSUME_ROLE_BODY = (
    "b'<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLE"
    "</AccessKeyId><SecretAccessKey>wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY</SecretAccessKey>"
    "<SessionToken>FQoGZXIvYXdzEXAMPLETOKEN</SessionToken><Expiration>2026-11-30T18:45:15Z"
    "</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>'\n"
)


def old_filter(revision: str = BASE) -> ModuleType:
    """``iampool._redact`` as it was at ``revision``, imported under another name."""
    source = subprocess.run(  # noqa: S603 - a git command, the revision from the command line
        ["git", "show", f"{revision}:src/iampool/_redact.py"],  # noqa: S607 - git on PATH
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_redact.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"redact_{revision}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(redact: Callable[[str], str], text: str, runs: int) -> list[float]:
    """Milliseconds of ``redact(text)`` in each of ``runs`` runs, in CPU time of this thread:
    on a shared machine a run longer than a time slice is preempted, which wall time counts."""
    times = []
    for _ in range(runs):
        started = time.thread_time()
        redact(text)
        times.append((time.thread_time() - started) * 1e3)
    return times


def ms(redact: Callable[[str], str], text: str, runs: int) -> float:
    """The median of :func:`timed`."""
    return statistics.median(timed(redact, text, runs))


def interleaved_ms(
    redact: Callable[[str], str], before: Callable[[str], str], text: str, runs: int
) -> tuple[float, float]:
    """``ms`` of two filters, run by run in turn (so that both meet the same load)."""
    ours, theirs = [], []
    for _ in range(runs):
        ours += timed(redact, text, 1)
        theirs += timed(before, text, 1)
    return statistics.median(ours), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--skip-old", action="store_true", help="do not time the old filter")
    parser.add_argument("--runs", type=int, default=7, help="runs per number (current filter)")
    parser.add_argument("--before", metavar="REV", help="also time the filter of this revision")
    args = parser.parse_args()
    old = None if args.skip_old else old_filter()
    before = None if args.before is None else old_filter(args.before)

    print(
        f"{'shape':28} {'64 KB ms':>9} {'fastest':>8} {'1 MB ms':>9} {'A/A':>5}"
        f" {'ms/MB÷ms/64K':>13}"
        + (
            ""
            if before is None
            else f" | {'64 KB ms':>9} {'1 MB ms':>9} {'now÷before 64K':>15} (before: {args.before})"
        )
        + ("" if old is None else f" {'old 64 KB ms':>13} {'old 1 MB s':>12} {'old÷new 64K':>12}")
    )
    worst = worst_median = 0.0
    for name, build in SHAPES:
        small, large = build(SIZES["64 KB"]), build(SIZES["1 MB"])
        first = timed(_redact.redact, small, args.runs)
        second = timed(_redact.redact, small, args.runs)  # the A/A control: same code, again
        per_mb = ms(_redact.redact, large, max(3, args.runs // 2))
        median, fastest = statistics.median(first), min(first + second)
        worst, worst_median = max(worst, fastest), max(worst_median, median)
        line = (
            f"{name:28} {median:9.2f} {fastest:8.2f} {per_mb:9.1f} "
            f"{statistics.median(second) / median:5.2f} {per_mb / median:13.1f}"
        )
        if before is not None:
            ours, theirs = interleaved_ms(_redact.redact, before.redact, small, args.runs)
            _, theirs_mb = interleaved_ms(
                _redact.redact, before.redact, large, max(3, args.runs // 2)
            )
            line += f" | {theirs:9.2f} {theirs_mb:9.1f} {ours / theirs:15.2f}"
        if old is not None:
            old_16k, old_64k = (ms(old.redact, build(size), 1) for size in OLD_SIZES)
            growth = old_64k / old_16k  # 4 when linear, 16 when quadratic
            exponent = max(1.0, min(2.0, math.log(growth, 4)))
            old_1mb = old_64k * 16**exponent / 1e3
            line += f" {old_64k:13.1f} {old_1mb:11.2f}* {old_64k / median:12.0f}"
        print(line, flush=True)
    print(
        f"\nworst 64 KB: fastest run {worst:.2f} ms (target <= {TARGET_MS_PER_64KB} ms), median "
        f"{worst_median:.2f} ms. The target is judged on the fastest of the {2 * args.runs} runs, "
        "the filter's own cost:\nthe medians also carry this machine's other load (the A/A "
        "column shows how much it moved).\nLinear input growth x16 (64 KB -> 1 MB) should cost "
        "about x16 in 'ms/MB÷ms/64K'."
    )
    if old is not None:
        print(
            "* old 1 MB: extrapolated from its 16 KB and 64 KB times (growth exponent measured "
            "between them, capped at 2); running it would take that long."
        )
    sys.exit(0 if worst <= TARGET_MS_PER_64KB else 1)


if __name__ == "__main__":
    main()
