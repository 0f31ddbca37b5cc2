"""The service loop: one asyncio loop on a daemon thread that runs every AWS call of a cache.

aiobotocore clients belong to the event loop that created them, while iampool's callers live on
many loops (``asyncio.run`` per task, several threads, trio). Running all AWS work on one private
loop gives one set of reusable clients, fetches that no caller's cancellation can cancel, and
background refreshes that never sit on a caller's loop when it closes. Callers wait for results
with :func:`wait`, which only parks the calling task; nothing on the caller's loop is bound to
this one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["ServiceLoop", "wait"]

T = TypeVar("T")


class ServiceLoop:
    """A lazily started background event loop; restarted after ``fork`` or ``close``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []

    def submit(self, work: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
        """Run ``work()`` as a task on the service loop; the future settles with its outcome."""
        loop = self._running_loop()
        coro = work()
        try:
            return asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # closed between the check and the call
            coro.close()
            raise

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook()`` on the service loop when it closes (closing AWS clients, say)."""
        self._shutdown_hooks.append(hook)

    @property
    def is_running(self) -> bool:
        """Whether the loop thread is alive in this process."""
        return self._loop is not None and self._pid == os.getpid()

    def in_service_thread(self) -> bool:
        """Whether the caller runs on the service loop itself."""
        return self._thread is threading.current_thread()

    def forget_parent(self) -> None:
        """In a forked child: drop the parent's loop (its thread did not survive the fork) and a
        lock that another parent thread may have held at the fork; the next use starts anew."""
        self._lock = threading.Lock()
        self._loop = self._thread = None

    def close(self, timeout: float = 10.0) -> None:
        """Cancel outstanding work, run the shutdown hooks, stop the loop and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            if loop is None or thread is None or self._pid != os.getpid():
                return
        if thread is threading.current_thread():
            raise RuntimeError("ServiceLoop.close() cannot be called from the service loop")
        done = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            done.result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for hook in reversed(self._shutdown_hooks):
            await hook()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                # A forked child inherits the parent's loop object but not its thread.
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._loop, ready), name=self._name, daemon=True
                )
                self._thread.start()
                ready.wait()
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


async def wait(future: concurrent.futures.Future[T]) -> T:
    """Wait for ``future`` from any asyncio or trio task without blocking its loop.

    Cancelling the waiting task only stops the wait: the work behind ``future`` goes on for the
    other waiters.
    """
    if future.done():
        return future.result()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return await _wait_trio(future)
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        # A closed loop raises RuntimeError: its waiter is gone, nobody is left to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, woken)

    future.add_done_callback(wake)
    await woken
    return future.result()


def _settle(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


async def _wait_trio(future: concurrent.futures.Future[T]) -> T:
    import trio

    token = trio.lowlevel.current_trio_token()
    event = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(event.set)

    future.add_done_callback(wake)
    await event.wait()
    return future.result()
