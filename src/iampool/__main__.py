"""``python -m iampool``: the same as the ``iampool`` command."""

from .cli import main

raise SystemExit(main())
