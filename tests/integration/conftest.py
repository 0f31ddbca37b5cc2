"""Integration-test settings: collect garbage after every test.

Transports and sockets that a test's event loop left behind are then reported (as errors, with
``filterwarnings = error``) while that test finishes, instead of whenever the garbage collector
happens to run later, inside whichever test is unlucky.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    yield
    gc.collect()
