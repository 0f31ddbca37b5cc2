"""Connection bookkeeping shared by the pools iampool builds itself (MySQL, Redshift).

At most ``max_size`` connections exist, opening included: a semaphore slot is held from the
moment a connection starts opening until it is released. Idle connections are reused most
recent first. State changes happen without awaiting, so cancellation at any await leaves the
counts right and leaks nothing. The slots also own what every such pool repeats: checking its
sizes, filling it to ``min_size`` (closing everything when that fails) and refusing acquires
once it closes, with :class:`~iampool.PoolClosedError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

from .._errors import ConfigError, ConfigProblem, PoolClosedError

__all__ = ["ConnectionSlots", "check_sizes"]

C = TypeVar("C")


class ConnectionSlots(Generic[C]):
    """Hands out connections, opening new ones while fewer than ``max_size`` exist.

    Raises:
        ConfigError: ``min_size``/``max_size`` not whole numbers with
            ``0 <= min_size <= max_size`` and ``max_size >= 1`` (each problem named).
    """

    def __init__(
        self,
        open_connection: Callable[[], Awaitable[C]],
        discard: Callable[[C], None],
        *,
        max_size: int,
        min_size: int = 0,
    ) -> None:
        check_sizes(min_size, max_size)
        self.min_size = min_size
        self.max_size = max_size
        self._open = open_connection
        self._discard = discard
        self._slots = anyio.Semaphore(max_size)
        self._idle: list[C] = []
        self._used: set[C] = set()
        self._opening = 0
        self._closing = False
        self._all_released = anyio.Event()

    @property
    def size(self) -> int:
        """Connections open or opening."""
        return len(self._idle) + len(self._used) + self._opening

    @property
    def idle(self) -> int:
        """Connections ready to be handed out."""
        return len(self._idle)

    @property
    def closing(self) -> bool:
        return self._closing

    async def fill(self) -> None:
        """Open idle connections until ``min_size`` exist."""
        await self.prefill(self.min_size)

    async def start(self) -> None:
        """Fill to ``min_size`` for a new pool; if that fails, close everything and re-raise,
        so a pool that could not start leaves no connection behind."""
        try:
            await self.fill()
        except BaseException:
            self.terminate()
            raise

    async def prefill(self, count: int) -> None:
        """Open idle connections until ``count`` exist."""
        while self.size < count:
            # open_new: taking an idle connection back out would leave the size unchanged
            connection = await self.acquire(lambda _: True, open_new=True)
            self.release(connection, reuse=True)

    async def acquire(self, reusable: Callable[[C], bool], *, open_new: bool = False) -> C:
        """An idle connection that is still ``reusable``, or a newly opened one.

        ``open_new`` skips the idle connections. Raises ``PoolClosedError`` when the pool is
        closing, also if it began closing while this call waited for a slot or opened.
        """
        self._refuse_if_closing()
        await self._slots.acquire()
        try:
            self._refuse_if_closing()  # it began closing while we waited for a slot
            while self._idle and not open_new:
                connection = self._idle.pop()
                if reusable(connection):
                    self._used.add(connection)
                    return connection
                self._discard(connection)
            self._opening += 1
            try:
                connection = await self._open()
            finally:
                self._opening -= 1
            if self._closing:  # closed while opening: close() promised nobody gets one
                self._discard(connection)
                self._refuse_if_closing()
        except BaseException:
            self._slots.release()
            self._notify_if_all_released()
            raise
        self._used.add(connection)
        return connection

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise PoolClosedError("Cannot acquire a connection from a closing pool")

    def release(self, connection: C, *, reuse: bool) -> None:
        """Take a connection back; idle it when ``reuse`` and the pool is open, else close it."""
        if connection not in self._used:
            return
        self._used.discard(connection)
        if reuse and not self._closing:
            self._idle.append(connection)
        else:
            self._discard(connection)
        self._slots.release()
        self._notify_if_all_released()

    def _notify_if_all_released(self) -> None:
        # A connection still opening counts: it is closed when it arrives (see acquire).
        if self._closing and not self._used and not self._opening:
            self._all_released.set()

    def discard_idle(self) -> None:
        """Close every idle connection now."""
        while self._idle:
            self._discard(self._idle.pop())

    def close(self) -> None:
        """Refuse new acquires and close the idle connections."""
        self._closing = True
        self.discard_idle()
        self._notify_if_all_released()

    def terminate(self) -> None:
        """Close everything, in use or not."""
        self.close()
        for connection in list(self._used):
            self.release(connection, reuse=False)

    async def wait_released(self) -> None:
        """Wait until every acquired or opening connection came back (after ``close()``)."""
        await self._all_released.wait()


def check_sizes(min_size: int, max_size: int) -> None:
    problems = []
    for name, value, low in (("min_size", min_size, 0), ("max_size", max_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problems.append(
                ConfigProblem(name, f"must be a whole number of at least {low}, got {value!r:.40}")
            )
    if not problems and min_size > max_size:
        problems.append(
            ConfigProblem("min_size", f"must not exceed max_size ({min_size} > {max_size})")
        )
    if problems:
        raise ConfigError(problems, context="pool size")
