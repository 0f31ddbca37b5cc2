"""What a process does under libfaketime in tests/integration/test_clock_end_to_end.py.

Run as ``python -m tests.integration.clock_worker OFFSET_FILE`` with libfaketime preloaded,
reading its offset from ``OFFSET_FILE`` (``FAKETIME_TIMESTAMP_FILE``, re-read at every call) and
leaving the monotonic clock alone. The AWS stand-in, the IAM gateway and iampool all run in this
process, so they share one (faked) wall clock, as AWS, RDS and a laptop agree on the time after
the laptop slept. The real PostgreSQL behind the gateway is not faked (it checks no token).

Four connects through the gateway, each with a fresh cache lookup:

1. warm;
2. after a 2 h jump of the wall clock;
3. with a jump while AssumeRole's answer is on its way (the relay holds it): the credentials
   arrive expired;
4. across a freeze: with AssumeRole's answer held, the process prints ``freeze-me``; the test
   moves the clock past the credentials' expiry, SIGSTOPs this process for longer than the
   cache's deadline, SIGCONTs it and writes ``resumed``. A thread blocked on the same
   credentials (``Leases.get_blocking``, a timeout shorter than the freeze) waits across it.

Prints one JSON line: per step, the connects that failed and the logins the gateway refused.
Never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

import iampool
from iampool._cache import mint_context
from iampool._minting import sts_key
from iampool.testing import FakeAws, IamGateway
from iampool.testing.plugin import DEFAULT_PG_DSN, PG_DSN_VARIABLE
from tests.users import APP

REGION = "us-east-1"
USER = APP
DEADLINE = 3.0  # the cache's; the test freezes the process for longer


class HeldRelay:
    """A TCP relay to the AWS stand-in that can hold its answers (``hold()``/``release()``):
    an answer AWS wrote before the laptop slept, read after it woke."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open = threading.Event()
        self._open.set()
        self.holding = threading.Event()  # an answer is being held
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        self.holding.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._port))
            for source, target, answers in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pipe, args=(source, target, answers), daemon=True
                ).start()

    def _pipe(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and not self._open.is_set():
                    self.holding.set()
                    self._open.wait()
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def set_offset(path: str, offset: str) -> None:
    with open(path, "w") as file:
        file.write(f"{offset}\n")


async def scenario(offset_file: str) -> dict[str, Any]:
    with FakeAws(region=REGION) as aws, aws.export_env():
        relay = HeldRelay(aws.port)
        os.environ["AWS_ENDPOINT_URL_STS"] = relay.url
        gateway = IamGateway(
            "postgresql",
            upstream=os.environ.get(PG_DSN_VARIABLE) or DEFAULT_PG_DSN,
            authority=aws,
            region=REGION,
        )
        gateway.start()
        try:
            gateway.ensure_user(USER)
            block = {
                "enabled": True,
                "region": REGION,
                "role_arn": aws.create_role(f"iampool-clock-{os.getpid()}"),
                "db_username": USER,
            }
            return await steps(offset_file, relay, gateway, block)
        finally:
            gateway.drop_created_users()
            gateway.stop()


async def steps(
    offset_file: str, relay: HeldRelay, gateway: IamGateway, block: dict[str, Any]
) -> dict[str, Any]:
    cache = iampool.CredentialCache(deadline=DEADLINE)
    loop = asyncio.get_running_loop()
    report: dict[str, Any] = {}

    async def connect() -> str | None:
        """None when the connect worked, else what went wrong."""
        try:
            connection = await iampool.connect(gateway.dsn(USER), aws_iam=block, cache=cache)
            try:
                await connection.fetchval("SELECT 1")
            finally:
                await connection.close()
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        return None

    def record(step: str, failures: list[str | None]) -> None:
        report[step] = {
            "failed": [failure for failure in failures if failure is not None],
            "rejected": dict(gateway.rejected),
        }
        gateway.reset_counters()

    record("warm", [await connect()])

    set_offset(offset_file, "+2h")
    record("jump", [await connect()])

    relay.hold()
    cache.clear()
    pending = asyncio.ensure_future(connect())
    await loop.run_in_executor(None, relay.holding.wait, 60)
    set_offset(offset_file, "+4h")  # AWS wrote the answer at +2h; it is read at +4h
    relay.release()
    record("jump in flight", [await pending])

    relay.hold()
    cache.clear()
    pending = asyncio.ensure_future(connect())
    await loop.run_in_executor(None, relay.holding.wait, 60)
    blocked: list[str | None] = []
    waiter = threading.Thread(target=lambda: blocked.append(blocking_lookup(cache, block)))
    waiter.start()
    print("freeze-me", flush=True)  # the test moves the clock to +6h and stops this process
    await loop.run_in_executor(None, sys.stdin.readline)
    relay.release()
    failures = [await pending]
    await loop.run_in_executor(None, waiter.join, 60)
    record("freeze", failures + blocked)
    report["sts_calls"] = cache.stats()["sts_calls"]
    await cache.aclose()
    return report


def blocking_lookup(cache: iampool.CredentialCache, block: dict[str, Any]) -> str | None:
    """A lookup from a thread without a loop (as Superset's code makes one), its timeout shorter
    than the freeze: None when it got the credentials."""
    config = iampool.AwsIamConfig.from_extra(block)
    context = mint_context(cache)
    try:
        context.leases.get_blocking(
            sts_key(config), lambda: context.mint_aws_credentials(config), timeout=DEADLINE - 1
        )
    except Exception as exc:
        return f"blocking: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def main() -> None:
    signal.alarm(180)  # a hang ends the process, and the test reads no report
    report = asyncio.run(scenario(sys.argv[1]))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
