"""The fenced code of README.md and docs/*.md: what runs as written, what is a marked fragment.

A snippet is a fenced block tagged ``python``, ``bash``, ``sh``, ``shell`` or ``console``. Each
either runs as written against the stand-in (``tests/integration/test_doc_snippets.py`` runs it)
or is marked, on the line right before its opening fence, with an HTML comment that mkdocs does
not render::

    <!-- fragment: needs a real Aurora endpoint -->
    ```python

How a snippet that is not a fragment runs:

- Python, first line ``# <name>.py``: written to the page's directory as that file (a later
  snippet of the page may import it); a ``test_*.py`` file is run with pytest, any other file
  as a script. ``conftest.py`` is only written.
- Python that defines a top-level ``test_*`` function: a test file of its own, run with pytest.
- Other Python: a script; top-level ``await`` is allowed, as in ``python -m asyncio`` (it runs in
  ``asyncio.run``).
- bash / sh / shell: ``bash -e`` in the repository's root (where the docs say to type them);
  console: its ``$ `` lines, the same way (the output shown is not compared).

Fences tagged otherwise (``text``, ``json``, ``sql``, none) show output or data, not code.
Fragments are checked too: Python must compile, shell must parse (``bash -n``).
"""

from __future__ import annotations

import ast
import dataclasses
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell", "console": "console"}
FRAGMENT = re.compile(r"^\s*<!--\s*fragment:(?P<reason>.*?)-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)\s*$")
_FILE_HEADER = re.compile(r"^# (?P<name>[\w.-]+\.py)\s*$")


@dataclasses.dataclass(frozen=True)
class Snippet:
    """One fenced block: where it is, its language, its text, and its fragment mark if any."""

    page: str  # relative to the repository's root
    line: int  # of the opening fence, 1-based
    lang: str  # the fence's tag, "" for none
    text: str  # dedented by the fence's indentation
    fragment: str | None  # the reason given, None when not marked

    @property
    def kind(self) -> str | None:
        """``python``, ``shell`` or ``console``; None for output and data."""
        return CODE.get(self.lang)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """The file a Python snippet is, from its first line ``# <name>.py``."""
        first = self.text.split("\n", 1)[0]
        match = _FILE_HEADER.match(first)
        return match.group("name") if match else None

    @property
    def defines_tests(self) -> bool:
        """A Python snippet with a top-level ``test_*`` function: pytest runs it."""
        try:
            tree = ast.parse(self.text)
        except SyntaxError:
            return False
        return any(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")
            for node in tree.body
        )

    def commands(self) -> str:
        """The shell text to run: the block, or a console block's ``$`` lines (with their
        ``\\`` continuation lines)."""
        if self.kind != "console":
            return self.text
        lines: list[str] = []
        continued = False
        for line in self.text.splitlines():
            if line.startswith("$ ") or continued:
                lines.append(line[2:] if line.startswith("$ ") and not continued else line)
                continued = line.endswith("\\")
        return "\n".join(lines) + "\n"


def pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def snippets(page: Path, root: Path = ROOT) -> Iterator[Snippet]:
    """Every fenced block of ``page`` (named relative to ``root``), in order.

    Raises:
        ValueError: a fragment mark that no fence follows, or one without a reason.
    """
    lines = page.read_text().split("\n")
    name = page.relative_to(root).as_posix()
    index = 0
    while index < len(lines):
        line = lines[index]
        mark = FRAGMENT.match(line)
        if mark is not None:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if not _FENCE.match(following):
                raise ValueError(
                    f"{name}:{index + 1}: a fragment mark must be right before a fence"
                )
            if not mark.group("reason").strip():
                raise ValueError(f"{name}:{index + 1}: a fragment mark must give its reason")
        opening = _FENCE.match(line)
        if opening is None:
            index += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = "\n".join(
            text[len(indent) :] if text.startswith(indent) else text.lstrip()
            for text in lines[index + 1 : end]
        )
        before = FRAGMENT.match(lines[index - 1]) if index else None
        yield Snippet(
            page=name,
            line=index + 1,
            lang=opening.group("lang"),
            text=textwrap.dedent(body) + "\n",
            fragment=before.group("reason").strip() if before else None,
        )
        index = end + 1


def every_snippet() -> list[Snippet]:
    return [snippet for page in pages() for snippet in snippets(page)]


@dataclasses.dataclass(frozen=True)
class Census:
    """How many code snippets run as written, how many are marked fragments, and how many fences
    show output or data."""

    run: int
    fragments: int
    not_code: int

    def __str__(self) -> str:
        return (
            f"{self.run} snippets run as written, {self.fragments} marked fragments "
            f"({self.not_code} fences of output or data)"
        )


def census(found: list[Snippet]) -> Census:
    code = [snippet for snippet in found if snippet.kind is not None]
    return Census(
        run=sum(snippet.fragment is None for snippet in code),
        fragments=sum(snippet.fragment is not None for snippet in code),
        not_code=len(found) - len(code),
    )
