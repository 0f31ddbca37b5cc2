"""The service loop: one asyncio loop on a daemon thread per cache, running every AWS call.

aiobotocore clients belong to the event loop that created them, while iampool's callers live on
many loops (``asyncio.run`` per task, several threads, trio). Running all AWS work on one private
loop gives one set of reusable clients, fetches that no caller's cancellation can cancel, and
background refreshes that never sit on a caller's loop when it closes. Callers wait for results
with :func:`ended`, which only parks the calling task (or :meth:`Flight.join`, which blocks a
thread that has no event loop); nothing on the caller's loop is bound to this one.

The service loop owns what lives and dies with a process, each transition in one place:

- **start**: on the first :meth:`ServiceLoop.submit`, again after ``close()`` or a fork. A
  *worker* is the loop, its thread and the AWS source (sessions, clients) built on that loop.
- **fork**: one at-fork hook. In the child the parent's worker is abandoned (its thread did not
  survive, its clients belong to the parent's loop) and the ``on_fork`` hooks run; the next
  submit starts a new worker with a new AWS source.
- **shutdown**: one function, ``_stop``, reached through the worker's ``weakref.finalize``:
  from ``close()``, when the ``ServiceLoop`` is garbage collected, or at interpreter exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._aws import AwsSource
from ._errors import detached

__all__ = [
    "Flight",
    "ServiceLoop",
    "Stopwatch",
    "current_source",
    "ended",
    "on_service_thread",
    "within",
]

T = TypeVar("T")
_STOP_TIMEOUT = 10.0
_LOOK_EVERY = 0.5  # seconds between looks at the clock while waiting for a deadline
_FREEZE = 2.0  # seconds a look may come late before it means the process was frozen
_RESTARTS = 3  # times one mint starts anew after a freeze


class Flight(Generic[T]):
    """A fetch running on the service loop: its outcome, and who waits for it, loop by loop.

    However many tasks of one event loop wait, the fetch's end crosses into that loop once
    (one ``call_soon_threadsafe``), then wakes them all there.
    """

    __slots__ = ("_future", "_lock", "_waiters")

    def __init__(self) -> None:
        self._future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._waiters: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}

    def done(self) -> bool:
        """Whether the fetch has ended (result, error or cancelled)."""
        return self._future.done()

    def result(self) -> T:
        """The fetch's value; raises its error, or ``concurrent.futures.CancelledError``."""
        return self._future.result()

    def join(self, timeout: float) -> bool:
        """Block the calling thread until the fetch ends or ``timeout`` seconds pass; whether
        it ended. Never on the service loop's own thread (the fetch could not run).

        The seconds are counted from the last freeze of the process, if one came meanwhile
        (see :class:`Stopwatch`): the fetch restarted then, with a deadline of its own.
        """
        watch = Stopwatch()
        while (left := timeout - watch.elapsed) > 0:
            step = min(_LOOK_EVERY, left)
            if concurrent.futures.wait((self._future,), step).done:
                return True
            watch.lap(step)
        return self._future.done()

    def cancel(self) -> None:
        """Fail every waiter with ``concurrent.futures.CancelledError`` (the cache closed)."""
        self._future.cancel()

    def _settle(self, task: asyncio.Task[T]) -> None:
        future = self._future
        if future.done():
            return
        if task.cancelled():
            future.cancel()
        elif (error := task.exception()) is not None:
            # Stored once, delivered to every waiter as the same object: without the frames of
            # the fetch, whose locals hold the AWS credentials it called with and its request.
            future.set_exception(detached(error))
        else:
            future.set_result(task.result())
        with self._lock:  # woken (each loop's list went to its callback): the loops are let go
            self._waiters = {}

    def _waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """A future of ``loop`` that the end of the fetch settles; None if it has ended."""
        woken = loop.create_future()
        with self._lock:
            if self._future.done():
                return None
            waiters = self._waiters.get(loop)
            if waiters is not None:
                waiters.append(woken)
                return woken
            waiters = self._waiters[loop] = [woken]
        # Outside the lock: a fetch that ends meanwhile runs the callback right here.
        self._future.add_done_callback(
            functools.partial(_wake_all, loop, waiters, threading.get_ident())
        )
        return woken


class Stopwatch:
    """Seconds a wait has lasted while the process ran, since it last froze.

    A wait is cut into steps of at most ``_LOOK_EVERY`` seconds; a step that ends more than
    ``_FREEZE`` seconds later than asked means the process did not run meanwhile (SIGSTOP, a
    paused VM or container, AWS Lambda between invocations): the monotonic clock moved on
    without it. Then ``froze`` is set and the count starts again, so a freeze never uses up a
    deadline; what was waited for is likely gone with it (a connection the peer closed).
    """

    __slots__ = ("_last", "elapsed", "froze")

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.elapsed = 0.0
        self.froze = False

    def lap(self, asked: float) -> None:
        """Count a step that was to last ``asked`` seconds and has just ended."""
        now = time.monotonic()
        took, self._last = now - self._last, now
        if took > asked + _FREEZE:
            self.froze = True
            self.elapsed = 0.0
        else:
            self.elapsed += took


async def within(work: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``await work()``, for at most ``deadline`` seconds of the process running.

    After a freeze (see :class:`Stopwatch`) ``work()`` is started anew with the whole
    deadline, up to ``_RESTARTS`` times: what it waited on may have died meanwhile.

    Raises:
        TimeoutError: the deadline passed; ``work()`` was cancelled.
    """
    restarts = 0
    while True:
        task = asyncio.ensure_future(work())
        watch = Stopwatch()
        try:
            while not task.done() and watch.elapsed < deadline:
                step = min(_LOOK_EVERY, deadline - watch.elapsed)
                await asyncio.wait((task,), timeout=step)
                watch.lap(step)
                if watch.froze and restarts < _RESTARTS:
                    break
        finally:
            task.cancel()  # a no-op once it is done; else a restart, a timeout or our own end
        if not task.cancelled() and task.done():
            return task.result()
        await asyncio.wait((task,))  # let the cancelled attempt finish before the next one
        if not task.cancelled():
            task.exception()  # retrieved: what an abandoned attempt raised is dropped
        if not (watch.froze and restarts < _RESTARTS):
            raise TimeoutError
        restarts += 1


def _wake_all(
    loop: asyncio.AbstractEventLoop, waiters: list[asyncio.Future[None]], thread: int, _: object
) -> None:
    if threading.get_ident() == thread:  # the fetch ended on the waiters' own loop
        _settle_all(waiters)
    else:
        # A closed loop raises RuntimeError: its waiters are gone, nobody is left to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_all, waiters)


def _settle_all(waiters: list[asyncio.Future[None]]) -> None:
    for woken in waiters:
        if not woken.done():  # a cancelled waiter is done already
            woken.set_result(None)


@dataclass(eq=False)
class _Worker:
    """One process's service loop: the loop, its thread, and the AWS source built on it."""

    loop: asyncio.AbstractEventLoop
    make_source: Callable[[], AwsSource]
    thread: threading.Thread = field(init=False)
    source: AwsSource | None = None
    outstanding: set[Flight[Any]] = field(default_factory=set)
    prepared: set[str] = field(default_factory=set)  # regions whose clients are being built


_local = threading.local()  # .worker: the worker whose thread this is


def current_source() -> AwsSource:
    """The AWS source of the service loop the caller runs on, built on first use.

    Raises:
        RuntimeError: called outside a service loop (AWS work runs only there).
    """
    worker: _Worker | None = getattr(_local, "worker", None)
    if worker is None:
        raise RuntimeError("AWS calls run on a cache's service loop only")
    if worker.source is None:
        worker.source = worker.make_source()
    return worker.source


class ServiceLoop:
    """A lazily started background event loop for one cache; restarted after fork or close."""

    def __init__(self, name: str, make_source: Callable[[], AwsSource]) -> None:
        self._name = name
        self._make_source = make_source
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._finalizer: weakref.finalize[Any, ServiceLoop] | None = None
        self._fork_hooks: list[Callable[[], None]] = []
        _loops.add(self)

    def submit(self, work: Callable[[], Coroutine[Any, Any, T]]) -> Flight[T]:
        """Run ``work()`` as a task on the service loop; the flight ends with its outcome.

        Called on the service loop itself (a mint that needs another cached value), the task
        is created right away, with no hop through the loop's thread-safe queue.
        """
        worker = self._running_worker()
        flight: Flight[T] = Flight()
        worker.outstanding.add(flight)
        if worker.thread is threading.current_thread():
            _start(worker, work, flight)
        else:
            try:
                worker.loop.call_soon_threadsafe(_start, worker, work, flight)
            except RuntimeError:  # the loop closed between the check and the call
                worker.outstanding.discard(flight)
                flight.cancel()
        return flight

    def prepare(self, region: str) -> None:
        """Start the loop and build the AWS source and its client for ``region`` in the
        background, so that the first fetch does not pay for botocore's loading (~100 ms)."""
        worker = self._running_worker()
        if region not in worker.prepared:
            worker.prepared.add(region)
            self.submit(lambda: current_source().prepare(region))

    def on_fork(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` in a forked child, before anything else runs there."""
        self._fork_hooks.append(hook)

    def close(self) -> None:
        """Cancel outstanding work, close the AWS source, stop the loop and join its thread.

        Safe to call twice; the next ``submit`` starts a new worker.
        """
        with self._lock:
            worker, finalizer = self._worker, self._finalizer
            self._worker = self._finalizer = None
        if worker is not None and worker.thread is threading.current_thread():
            raise RuntimeError("ServiceLoop.close() cannot be called from the service loop")
        if finalizer is not None:
            finalizer()

    def _running_worker(self) -> _Worker:
        worker = self._worker
        if worker is not None:
            return worker
        with self._lock:
            if self._worker is None:
                worker = _Worker(asyncio.new_event_loop(), self._make_source)
                ready = threading.Event()
                worker.thread = threading.Thread(
                    target=_run, args=(worker, ready), name=self._name, daemon=True
                )
                worker.thread.start()
                ready.wait()
                self._worker = worker
                # Shutdown in one place: close(), garbage collection and interpreter exit.
                self._finalizer = weakref.finalize(self, _stop, worker)
            return self._worker

    def _after_fork_in_child(self) -> None:
        # The parent's worker thread does not exist here and its clients belong to the parent's
        # loop: keep them unreachable but alive (collecting them would close sockets the parent
        # still uses), and start afresh on the next submit.
        self._lock = threading.Lock()
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._worker is not None:
            _abandoned.append(self._worker)
        self._worker = self._finalizer = None
        for hook in self._fork_hooks:
            hook()


def _run(worker: _Worker, ready: threading.Event) -> None:
    loop = worker.loop
    asyncio.set_event_loop(loop)
    _local.worker = worker
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _start(worker: _Worker, work: Callable[[], Coroutine[Any, Any, T]], flight: Flight[T]) -> None:
    """On the service loop: run ``work()`` as a task that ends ``flight``."""
    if flight.done():  # cancelled by a shutdown before it started
        worker.outstanding.discard(flight)
        return
    task = worker.loop.create_task(work())

    def settle(task: asyncio.Task[T]) -> None:
        worker.outstanding.discard(flight)
        flight._settle(task)

    task.add_done_callback(settle)


def _stop(worker: _Worker) -> None:
    """Cancel the worker's tasks, close its AWS source, stop its loop and join its thread."""
    loop, thread = worker.loop, worker.thread
    if thread is threading.current_thread():  # collected on its own thread: stop from within
        loop.create_task(_shutdown(worker)).add_done_callback(lambda _: loop.stop())
        return
    try:
        done = asyncio.run_coroutine_threadsafe(_shutdown(worker), loop)
        done.result(_STOP_TIMEOUT)
    except (RuntimeError, concurrent.futures.TimeoutError):  # loop already gone, or stuck
        pass
    finally:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT)
        for flight in list(worker.outstanding):  # waiters learn the cache closed
            flight.cancel()


async def _shutdown(worker: _Worker) -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    source, worker.source = worker.source, None
    if source is not None:
        await source.aclose()


async def ended(flight: Flight[Any]) -> None:
    """Wait until ``flight`` has ended (whatever its outcome), from any asyncio or trio task,
    without blocking its loop.

    Cancelling the waiting task only stops the wait: the work behind ``flight`` goes on for the
    other waiters.
    """
    if flight.done():
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        await _wait_trio(flight._future)
        return
    woken = flight._waiter(loop)
    if woken is not None:
        await woken


def on_service_thread() -> bool:
    """Whether the caller runs on a service loop's thread (where nothing may block)."""
    return getattr(_local, "worker", None) is not None


async def _wait_trio(future: concurrent.futures.Future[Any]) -> None:
    import trio

    token = trio.lowlevel.current_trio_token()
    event = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(event.set)

    future.add_done_callback(wake)
    await event.wait()


_loops: weakref.WeakSet[ServiceLoop] = weakref.WeakSet()
_abandoned: list[_Worker] = []  # a forked child's inherited workers, never touched again


def _after_fork_in_child() -> None:
    # Runs in the child right after os.fork(), before any other thread exists there: no race.
    for service in list(_loops):
        service._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
