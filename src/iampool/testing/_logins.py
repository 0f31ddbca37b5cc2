"""The gateway's record of logins: accepted, refused by reason, secrets seen without TLS, and
the valid logins still to refuse on purpose. Thread-safe: the gateway's loop writes, tests read."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from ._verify import RejectReason

__all__ = ["LoginRecord", "PlaintextSecret", "WireProtocol"]

WireProtocol = Literal["postgresql", "mysql"]


@dataclass(frozen=True)
class PlaintextSecret:
    """A password a client sent without TLS: who sent it, its length and SHA-256, never itself."""

    protocol: WireProtocol
    user: str
    length: int
    sha256: str


class LoginRecord:
    """Counters of one gateway's logins."""

    def __init__(self, protocol: WireProtocol) -> None:
        self._protocol: WireProtocol = protocol
        self._lock = threading.Lock()
        self._accepted = 0
        self._rejected: Counter[str] = Counter()
        self._plaintext: list[PlaintextSecret] = []
        self._forced_rejections = 0

    @property
    def accepted(self) -> int:
        """Logins whose credentials were verified."""
        return self._accepted

    @property
    def rejected(self) -> Counter[str]:
        """Refused logins by reason (a copy)."""
        with self._lock:
            return Counter(self._rejected)

    @property
    def plaintext(self) -> tuple[PlaintextSecret, ...]:
        """Passwords that arrived without TLS, as hashes, in arrival order."""
        with self._lock:
            return tuple(self._plaintext)

    def decide(self, reason: RejectReason | None) -> RejectReason | None:
        """Count a checked login; a valid one becomes ``forced`` while rejections are pending."""
        with self._lock:
            if reason is None and self._forced_rejections > 0:
                self._forced_rejections -= 1
                reason = "forced"
            if reason is None:
                self._accepted += 1
            else:
                self._rejected[reason] += 1
        return reason

    def refuse(self, reason: RejectReason) -> None:
        """Count a connection refused before its password was checked."""
        with self._lock:
            self._rejected[reason] += 1

    def capture(self, user: str, secret: str) -> None:
        """Record a password that arrived without TLS (hash and length only)."""
        record = PlaintextSecret(
            protocol=self._protocol,
            user=user,
            length=len(secret),
            sha256=hashlib.sha256(secret.encode()).hexdigest(),
        )
        with self._lock:
            self._plaintext.append(record)

    def reject_next(self, n: int) -> None:
        """Refuse the next ``n`` otherwise valid logins."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._forced_rejections += n

    def reset(self) -> None:
        """Zero every counter, the plaintext record and pending forced rejections."""
        with self._lock:
            self._accepted = 0
            self._rejected.clear()
            self._plaintext.clear()
            self._forced_rejections = 0
