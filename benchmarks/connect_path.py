"""How far a DSN travels inside iampool before the driver's connect, and what is done twice.

Not a timing: it runs ``iampool.connect`` / ``iampool.create_pool`` for an asyncpg DSN with the
driver's connect replaced by a stop and the authenticator's credentials by a constant (no
network, no AWS), and prints the iampool frames on the stack when the driver's connect is
reached (the hops), the modules entered on the way, and how often each check ran (a check run
twice is work done twice). Compare two checkouts with ``PYTHONPATH=<checkout>/src``.

Run: ``.venv/bin/python benchmarks/connect_path.py``
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import asyncpg.pool

import iampool
from iampool.auth import _token

DSN = "postgresql://db.cluster-abc.us-east-1.rds.amazonaws.com:5432/db"
CONFIG = {"enabled": True, "region": "us-east-1", "db_username": "app"}
CHECKS = (
    "coerce_config", "parse_target", "host_problem", "port_problem", "check_settings", "vet",
    "refuse_owned_kwargs", "refuse_owned", "check_tls_option", "tls_context", "urlsplit",
)  # fmt: skip


class Reached(Exception):
    """The driver's connect was called."""


async def constant_credentials(self: Any) -> iampool.DbCredentials:
    expires = datetime.now(timezone.utc) + timedelta(minutes=5)
    return iampool.DbCredentials("app", "token", "h", 5432, None, expires)


def measure(entry: str) -> None:
    source = os.path.dirname(iampool.__file__)
    calls: list[tuple[str, str]] = []
    stack: list[tuple[str, str]] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and not frame.f_code.co_name.startswith("<"):
            name = frame.f_code.co_filename
            if name.startswith(source) or frame.f_code.co_name == "urlsplit":
                calls.append((os.path.relpath(name, source), frame.f_code.co_name))

    async def stop(*args: Any, **kwargs: Any) -> None:
        for info in inspect.stack()[1:]:
            if info.filename.startswith(source):
                stack.append((info.filename[len(source) + 1 :], info.function))
        raise Reached

    asyncpg.connect = stop  # what iampool.connect calls
    asyncpg.pool.connection.connect = stop  # what asyncpg's pool calls

    async def run() -> None:
        sys.setprofile(profile)
        try:
            if entry == "connect":
                await iampool.connect(DSN, aws_iam=CONFIG)
            else:
                await iampool.create_pool(DSN, aws_iam=CONFIG, min_size=1, max_size=1)
        except Reached:
            pass
        finally:
            sys.setprofile(None)

    asyncio.run(run())
    modules = {module for module, _ in calls if not module.startswith("..")}
    counted = collections.Counter(function for _, function in calls)
    print(f"{entry}: {len(stack)} iampool frames between the entry and asyncpg's connect")
    print("   " + " <- ".join(f"{module}:{function}" for module, function in stack))
    print(f"   {len(calls)} calls in {len(modules)} iampool modules on the way")
    print("   checks run: " + ", ".join(f"{name} {counted[name]}" for name in CHECKS))


def main() -> None:
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    _token.TokenAuth.credentials = constant_credentials  # type: ignore[method-assign]
    _token.TokenAuth.prefetch = lambda self: None  # type: ignore[method-assign]
    for entry in ("connect", "create_pool"):
        measure(entry)


if __name__ == "__main__":
    main()
