"""The gateway's login throttles, as the services apply them.

- RDS (and Aurora) throttle IAM authentication per instance: more than ``rate`` *distinct*
  tokens a second are refused with "too many competing requests"; a login with a token the
  instance already accepted is not counted (the reason iampool reuses tokens).
- Aurora DSQL allows ``rate`` new connections a second per cluster, whatever the token:
  the next one is refused with SQLSTATE 53400.

A sliding window of one second; thread-safe (the gateway's loop writes, tests reconfigure).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LoginThrottle"]

_WINDOW = 1.0
_TOKEN_LIFE = 900.0  # an RDS token is valid for 15 minutes: remembered that long at most
_MAX_KNOWN = 10_000  # then tokens past their life are forgotten


class LoginThrottle:
    """At most ``rate`` counted logins in any second; ``reuse_free`` lets a secret already
    accepted through uncounted (RDS), otherwise every login counts (DSQL)."""

    def __init__(
        self, rate: int, *, reuse_free: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0:
            raise ValueError("login_rate must be >= 0")
        self.rate = rate
        self._reuse_free = reuse_free
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()  # when each counted login of the last second came
        self._known: dict[str, float] = {}  # secret's digest -> when first accepted

    def allows(self, secret: str) -> bool:
        """Whether this login gets past the throttle (and count it if it does)."""
        now = self._clock()
        digest = hashlib.sha256(secret.encode()).hexdigest() if self._reuse_free else ""
        with self._lock:
            while self._recent and self._recent[0] <= now - _WINDOW:
                self._recent.popleft()
            if digest in self._known:
                if now - self._known[digest] < _TOKEN_LIFE:
                    return True
                del self._known[digest]
            if len(self._recent) >= self.rate:
                return False
            self._recent.append(now)
            if self._reuse_free:
                if len(self._known) >= _MAX_KNOWN:
                    self._forget_expired(now)
                self._known[digest] = now
            return True

    def _forget_expired(self, now: float) -> None:
        for digest, seen in list(self._known.items()):
            if now - seen >= _TOKEN_LIFE:
                del self._known[digest]
