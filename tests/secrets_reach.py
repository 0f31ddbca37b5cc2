"""Where an exception still reaches a secret: its chain, its attributes, its tracebacks' locals.

Error trackers (Sentry and the like) send an exception's whole chain, and with "capture locals"
every traceback frame's local variables, a few levels into the objects they hold. This walks
what they walk, and further: every exception reachable through ``__cause__`` and
``__context__``, each one's ``args`` and attributes, and the locals of every frame of each
one's traceback (``tb_next`` after ``tb_next``), following containers, object attributes,
closures and suspended coroutines ``depth`` levels deep from each local. Exceptions found on the
way are walked in full too.
"""

from __future__ import annotations

import contextlib
import types
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Search", "chain_cycle", "search_secrets", "secret_needles", "secret_paths"]


def secret_needles(secrets: Iterable[str]) -> tuple[str, ...]:
    """What to look for: each secret, and for an RDS token also its signature alone (it
    survives URL-encoding and any re-quoting of the rest)."""
    needles: list[str] = []
    for secret in secrets:
        needles.append(secret)
        _, found, signature = secret.partition("X-Amz-Signature=")
        if found:
            needles.append(signature[:64])
    return tuple(dict.fromkeys(needle for needle in needles if len(needle) >= 16))


def chain_cycle(error: BaseException) -> list[str] | None:
    """A loop in the ``__cause__``/``__context__`` graph, as the links that close it, or None."""
    path: list[BaseException] = []
    links: list[str] = []

    def walk(exc: BaseException) -> list[str] | None:
        path.append(exc)
        for link in ("__cause__", "__context__"):
            chained = getattr(exc, link)
            if chained is None:
                continue
            links.append(f"{type(exc).__name__}.{link}")
            if any(chained is seen for seen in path):
                return [*links, f"-> {type(chained).__name__}"]
            found = walk(chained)
            if found:
                return found
            links.pop()
        path.pop()
        return None

    return walk(error)


@dataclass
class Search:
    """One search: what was found where, and how much was walked to find it."""

    needles: tuple[str, ...]
    depth: int
    seen: set[int] = field(default_factory=set)
    found: list[str] = field(default_factory=list)
    exceptions: int = 0
    frames: int = 0
    texts: int = 0

    def exception(self, exc: BaseException, where: str) -> None:
        if id(exc) in self.seen:
            return
        self.seen.add(id(exc))
        self.exceptions += 1
        self.value(str(exc), f"{where} str()", 0)
        self.value(exc.args, f"{where}.args", 0)
        self.value(vars(exc), f"{where}.__dict__", 0)
        for number, frame in enumerate(_frames(exc.__traceback__)):
            self.frames += 1
            name = f"{where} frame {number} {frame.f_code.co_name}()"
            for local, held in frame.f_locals.items():
                self.value(held, f"{name} local {local!r}", 0)
        for link in ("__cause__", "__context__"):
            chained = getattr(exc, link)
            if chained is not None:
                self.exception(chained, f"{where}.{link}")

    def value(self, value: Any, where: str, level: int) -> None:
        if isinstance(value, str):
            self._text(value, where)
            return
        if isinstance(value, (bytes, bytearray, memoryview)):
            self._text(bytes(value).decode("latin-1"), where)
            return
        if isinstance(value, BaseException):
            self.exception(value, where)
            return
        if value is None or isinstance(value, (int, float, complex, bool, type, types.ModuleType)):
            return
        if level >= self.depth or id(value) in self.seen:
            return
        self.seen.add(id(value))
        for name, item in _children(value):
            self.value(item, f"{where}{name}", level + 1)

    def _text(self, text: str, where: str) -> None:
        self.texts += 1
        for needle in self.needles:
            if needle in text:
                self.found.append(where)
                return


def _frames(traceback: types.TracebackType | None) -> Iterator[types.FrameType]:
    while traceback is not None:
        yield traceback.tb_frame
        traceback = traceback.tb_next


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in list(value.items()):
            yield f"[{key!r:.40}] (key)", key
            yield f"[{key!r:.40}]", item
        return
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        for index, item in enumerate(list(value)):
            yield f"[{index}]", item
        return
    if isinstance(value, (types.CoroutineType, types.GeneratorType)):
        frame = getattr(value, "cr_frame", None) or getattr(value, "gi_frame", None)
        if frame is not None:
            yield from ((f" suspended local {k!r}", v) for k, v in frame.f_locals.items())
        return
    if isinstance(value, types.FrameType):
        yield from ((f" local {k!r}", v) for k, v in value.f_locals.items())
        return
    if isinstance(value, (types.FunctionType, types.MethodType)):
        function = value.__func__ if isinstance(value, types.MethodType) else value
        if isinstance(value, types.MethodType):
            yield ".__self__", value.__self__
        for cell in function.__closure__ or ():
            try:
                yield " closure", cell.cell_contents
            except ValueError:  # an empty cell
                continue
        return
    attributes: dict[str, Any] = {}
    with contextlib.suppress(TypeError):
        attributes.update(vars(value))
    for klass in type(value).__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if isinstance(slot, str) and slot not in attributes and hasattr(value, slot):
                attributes[slot] = getattr(value, slot)
    for name, item in attributes.items():
        yield f".{name}", item


def search_secrets(error: BaseException, secrets: Iterable[str], *, depth: int = 3) -> Search:
    """Search everything reachable from ``error`` for ``secrets``."""
    search = Search(secret_needles(secrets), depth)
    search.exception(error, type(error).__name__)
    return search


def secret_paths(error: BaseException, secrets: Iterable[str], *, depth: int = 3) -> list[str]:
    """Every place, reachable from ``error``, that holds one of ``secrets``; [] when none."""
    return search_secrets(error, secrets, depth=depth).found
