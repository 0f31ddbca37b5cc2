"""Integration-test settings: collect garbage after every test.

Transports and sockets that a test's event loop left behind are then reported (as errors, with
``filterwarnings = error``) while that test finishes, instead of whenever the garbage collector
happens to run later, inside whichever test is unlucky.

What survives a collection is then frozen (``gc.freeze``): it is older than every later test,
so the next collection reads only what the next test made. A full collection of the whole
session's heap (moto, botocore's models, the drivers: close to a million objects) cost up to a
second after every test, a third of the integration run.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _unfreeze_after_the_session() -> Iterator[None]:
    """Frozen objects are invisible to ``gc.get_referrers``, which plugins may use after the
    tests (Hypothesis's ``register_random`` does): thaw them when the session ends."""
    yield
    gc.unfreeze()
