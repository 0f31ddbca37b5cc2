"""A fake database server for pool tests: opens fake connections and counts them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

C = TypeVar("C")


class FakeServer(Generic[C]):
    """Counts live and opening connections and the peak of both.

    ``make(server, number)`` builds a connection (it should drop itself from ``live`` when
    closed); ``gate``: opens wait for it; ``failures``: how many of the next opens fail.
    """

    def __init__(
        self,
        make: Callable[[Any, int], C],
        *,
        gate: anyio.Event | None = None,
        failures: int = 0,
    ) -> None:
        self.make = make
        self.gate = gate
        self.failures = failures
        self.opening = 0
        self.opened = 0
        self.peak = 0
        self.live: set[C] = set()

    @property
    def alive(self) -> int:
        return self.opening + len(self.live)

    async def open(self) -> C:
        self.opening += 1
        self.peak = max(self.peak, self.alive)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await anyio.lowlevel.checkpoint()
            if self.failures:
                self.failures -= 1
                raise ConnectionRefusedError("refused")
        finally:
            self.opening -= 1
        self.opened += 1
        connection = self.make(self, self.opened)
        self.live.add(connection)
        return connection
