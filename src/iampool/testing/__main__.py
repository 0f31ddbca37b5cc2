"""``python -m iampool.testing``: the same as ``iampool standin`` (one implementation)."""

from __future__ import annotations

import sys

from iampool.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["standin", *sys.argv[1:]]))
