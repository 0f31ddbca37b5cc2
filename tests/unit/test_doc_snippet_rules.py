"""The rules of the docs' snippets that need no server: marks are well placed, every fragment
still parses, and the census adds up (``tests/integration/test_doc_snippets.py`` runs the rest)."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

from ..doc_snippets import Snippet, census, every_snippet, snippets

FOUND = every_snippet()
FRAGMENTS = [snippet for snippet in FOUND if snippet.kind and snippet.fragment is not None]


@pytest.mark.parametrize(
    "snippet",
    [snippet for snippet in FRAGMENTS if snippet.kind == "python"],
    ids=lambda snippet: snippet.where,
)
def test_a_python_fragment_still_compiles(snippet: Snippet) -> None:
    # as the docs show it: top-level await allowed, undefined names allowed
    compile(snippet.text, snippet.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
@pytest.mark.parametrize(
    "snippet",
    [snippet for snippet in FRAGMENTS if snippet.kind in ("shell", "console")],
    ids=lambda snippet: snippet.where,
)
def test_a_shell_fragment_still_parses(snippet: Snippet) -> None:
    result = subprocess.run(  # noqa: S603 - bash -n only parses
        ["bash", "-n", "-c", snippet.commands()],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_mark_gives_a_reason() -> None:
    assert all(snippet.fragment for snippet in FRAGMENTS)


def test_a_mark_away_from_a_fence_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- fragment: lost -->\n\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="right before a fence"):
        list(snippets(page, root=tmp_path))


def test_a_mark_without_a_reason_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- fragment: -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="give its reason"):
        list(snippets(page, root=tmp_path))


def test_marks_files_and_tests_are_read_as_documented(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n"
        "<!-- fragment: needs a real endpoint -->\n```python\nawait go()\n```\n\n"
        "```python\n# app.py\nX = 1\n```\n\n"
        "- item\n\n    ```python\n    def test_it():\n        assert True\n    ```\n\n"
        "```console\n$ echo a \\\n  b\nshown output\n```\n\n"
        "```text\nnot code\n```\n"
    )

    found = list(snippets(page, root=tmp_path))

    assert [(s.line, s.kind, s.fragment) for s in found] == [
        (4, "python", "needs a real endpoint"),
        (8, "python", None),
        (15, "python", None),
        (20, "console", None),
        (26, None, None),
    ]
    assert found[1].file_name == "app.py"
    assert found[2].defines_tests
    assert found[2].text == "def test_it():\n    assert True\n"
    assert found[3].commands() == "echo a \\\n  b\n"
    assert str(census(found)) == (
        "3 snippets run as written, 1 marked fragments (1 fences of output or data)"
    )


def test_the_docs_have_snippets_of_each_kind() -> None:
    counted = census(FOUND)
    assert counted.run > 0
    assert counted.fragments > 0
