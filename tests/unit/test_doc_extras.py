"""The install docs list every extra pyproject.toml defines, and say what ``all`` holds."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

ROOT = Path(__file__).resolve().parents[2]
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]


def extras_of(requirement: list[str]) -> set[str]:
    """``iampool[a,b]`` requirements: the extras they name."""
    named: set[str] = set()
    for item in requirement:
        match = re.fullmatch(r"iampool\[([\w,-]+)\]", item)
        if match:
            named.update(match.group(1).split(","))
    return named


def index_rows() -> dict[str, str]:
    """docs/index.md's extras table: extra -> what it brings."""
    text = (ROOT / "docs" / "index.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)` \| ([^|]+) \|", text, flags=re.MULTILINE)
    return {name: brings.strip() for name, brings in rows}


def test_the_index_table_lists_every_extra() -> None:
    assert sorted(index_rows()) == sorted(EXTRAS)


def test_the_index_table_says_what_all_holds() -> None:
    listed = set(re.findall(r"`([\w-]+)`", index_rows()["all"]))
    assert listed == extras_of(EXTRAS["all"])


def test_the_readme_installs_every_extra_and_says_what_all_holds() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = dict(re.findall(r"^pip install '\.\[([\w-]+)\]' +# (.*)$", readme, flags=re.MULTILINE))
    assert sorted(lines) == sorted(EXTRAS)
    # "every driver, dsql, sqlalchemy and testing": the drivers' extras go by that word
    drivers = {"postgres", "psycopg", "mysql", "asyncmy", "redshift"}
    for extra in extras_of(EXTRAS["all"]) - drivers:
        assert extra in lines["all"], extra
    assert drivers <= extras_of(EXTRAS["all"])
