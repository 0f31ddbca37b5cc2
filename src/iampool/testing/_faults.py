"""Failures ``FakeAws`` injects on demand: throttling, 5xx, AccessDenied and latency, per API."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = ["Fault", "FaultKind", "Faults"]

FaultKind = Literal["throttle", "server_error", "access_denied"]


@dataclass
class Fault:
    """One queued failure: what to answer, how many more times, with which HTTP status."""

    kind: FaultKind
    remaining: int
    status: int


class Faults:
    """Failures the fake AWS injects, per API name (``"AssumeRole"``, ``"GetCredentials"``, ...).

    ``api="*"`` matches every API. Queued failures are served in the order they were added,
    those for the exact API first. Thread-safe.
    """

    ANY: ClassVar[str] = "*"

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queued: dict[str, deque[Fault]] = {}
        self._latency: dict[str, float] = {}
        self._generation = 0

    def throttle(self, api: str, times: int = 1) -> None:
        """The next ``times`` calls of ``api`` fail with ``Throttling``.

        JSON-protocol APIs (Redshift Serverless) answer ``ThrottlingException``, as AWS does.
        """
        self._queue(api, Fault("throttle", _positive(times), 400))

    def server_error(self, api: str, times: int = 1, status: int = 503) -> None:
        """The next ``times`` calls of ``api`` fail with HTTP ``status``: ``ServiceUnavailable``
        for 503, ``InternalFailure`` for any other 5xx."""
        if not 500 <= status <= 599:
            raise ValueError(f"status must be a 5xx code, not {status}")
        self._queue(api, Fault("server_error", _positive(times), status))

    def access_denied(self, api: str, times: int = 1) -> None:
        """The next ``times`` calls of ``api`` fail with ``AccessDenied``.

        JSON-protocol APIs answer ``AccessDeniedException``.
        """
        self._queue(api, Fault("access_denied", _positive(times), 403))

    def latency(self, api: str, seconds: float | None) -> None:
        """Every call of ``api`` waits ``seconds`` before it is answered; ``None`` removes it."""
        with self._changed:
            if not seconds:
                self._latency.pop(api, None)
            elif seconds < 0:
                raise ValueError(f"seconds must not be negative, not {seconds}")
            else:
                self._latency[api] = float(seconds)

    def pending(self, api: str) -> int:
        """How many injected failures are still queued for ``api`` (not counting ``"*"``)."""
        with self._changed:
            return sum(fault.remaining for fault in self._queued.get(api, ()))

    def clear(self) -> None:
        """Drop every queued failure and latency; calls waiting on latency are answered now."""
        with self._changed:
            self._queued.clear()
            self._latency.clear()
        self.wake()

    def wake(self) -> None:
        """Release every call waiting on latency (used on stop and outages)."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def delay(self, api: str) -> None:
        """Wait the latency set for ``api`` (or ``"*"``), unless woken first."""
        with self._changed:
            seconds = self._latency.get(api, self._latency.get(self.ANY))
            if seconds is None:
                return
            generation = self._generation
            self._changed.wait_for(lambda: self._generation != generation, timeout=seconds)

    def take(self, api: str) -> Fault | None:
        """Consume one queued failure for ``api`` (or ``"*"``), if any."""
        with self._changed:
            for key in (api, self.ANY):
                queue = self._queued.get(key)
                if queue:
                    fault = queue[0]
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        queue.popleft()
                    return Fault(fault.kind, 1, fault.status)
            return None

    def _queue(self, api: str, fault: Fault) -> None:
        if not api:
            raise ValueError("api must name an AWS API, e.g. 'AssumeRole', or be '*'")
        with self._changed:
            self._queued.setdefault(api, deque()).append(fault)


def _positive(times: int) -> int:
    if times < 1:
        raise ValueError(f"times must be at least 1, not {times}")
    return times
