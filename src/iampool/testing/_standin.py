"""``iampool standin`` (also ``python -m iampool.testing``): the testing kit as a process.

It starts a ``FakeAws`` and an IAM gateway for each server it is given (through ``_launch``, as
the pytest fixtures do), prints what a client needs as shell ``export`` lines (or one JSON
object), then serves until SIGINT or SIGTERM, when it drops the login users it created, within
a bound. Another process given only those lines can run ``iampool check`` or an application.

Its own output names no issued secret but the stand-in's base key, which a client needs; what
the gateways and the fake log stays at the logging module's default (warnings and up), where
no token is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._aws import FakeAws
    from ._database import IamDatabase
    from ._front import Mode
    from ._logins import WireProtocol

__all__ = ["PREFIX", "StandinError", "run"]

PREFIX = "IAMPOOL_STANDIN_"
SHUTDOWN_SECONDS = 15.0  # dropping the users and stopping, at most, after a signal

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Set in a client's environment, these would take AWS calls away from the stand-in (a profile,
# a session token that does not belong to the base key, a web identity): the lines unset them.
_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_REGION",
)

_FAULT_KINDS = ("throttle", "server_error", "access_denied")


class StandinError(Exception):
    """The stand-in cannot start: reported on one line, exit status 2."""


@dataclass(frozen=True)
class _Server:
    """One server the stand-in fronts: its option, mode and the variables it exports."""

    option: str
    key: str  # POSTGRES -> IAMPOOL_STANDIN_POSTGRES_DSN
    protocol: WireProtocol
    mode: Mode


_SERVERS = (
    _Server("--postgres", "POSTGRES", "postgresql", "rds"),
    _Server("--mysql", "MYSQL", "mysql", "rds"),
    _Server("--redshift", "REDSHIFT", "postgresql", "redshift"),
    _Server("--redshift-serverless", "REDSHIFT_SERVERLESS", "postgresql", "redshift"),
    _Server("--dsql", "DSQL", "postgresql", "dsql"),
)


@dataclass
class _Plan:
    """The checked command line: nothing started yet."""

    servers: list[tuple[_Server, str]]
    login: str
    faults: list[tuple[str, str, int]] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)


def _plan(args: argparse.Namespace) -> _Plan:
    from ._front import Upstream
    from ._launch import login_user

    servers = []
    for server in _SERVERS:
        dsn = getattr(args, server.option[2:].replace("-", "_"))
        if dsn is None:
            continue
        try:
            upstream = Upstream.from_dsn(dsn)
        except ValueError as exc:  # the message does not echo the DSN (it may hold a password)
            raise StandinError(f"{server.option}: {exc}") from None
        if upstream.scheme != server.protocol:
            raise StandinError(f"{server.option}: give a {server.protocol}:// DSN")
        servers.append((server, dsn))
    if not servers:
        raise StandinError(
            "give at least one server: --postgres, --mysql, --redshift, --redshift-serverless "
            "or --dsql, each with an admin DSN (e.g. --postgres postgresql://postgres@127.0.0.1/postgres)"
        )
    try:
        login = login_user(args.login_user, "--login-user", per_worker=False)
    except ValueError as exc:
        raise StandinError(str(exc)) from None
    return _Plan(
        servers=servers,
        login=login,
        faults=[_fault(text) for text in args.fault],
        latencies=[_latency(text) for text in args.latency],
    )


def _fault(text: str) -> tuple[str, str, int]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or parts[1] not in _FAULT_KINDS:
        raise StandinError(
            f"--fault: {text[:60]!r} is not API:KIND[:TIMES] with KIND one of "
            f"{', '.join(_FAULT_KINDS)} (e.g. AssumeRole:throttle:2)"
        )
    times = parts[2] if len(parts) == 3 else "1"
    if not (times.isascii() and times.isdigit()) or not 1 <= int(times) <= 1_000_000:
        raise StandinError(f"--fault: TIMES must be a whole number of 1 or more, got {times!r}")
    return parts[0], parts[1], int(times)


def _latency(text: str) -> tuple[str, float]:
    api, _, seconds = text.partition(":")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not api or not 0 < value <= 3600:
        raise StandinError(
            f"--latency: {text[:60]!r} is not API:SECONDS with 0 < SECONDS <= 3600 "
            "(e.g. AssumeRole:0.5)"
        )
    return api, value


def run(args: argparse.Namespace, *, out: Any = None) -> int:
    """Start, print, serve until SIGINT/SIGTERM, clean up. Exit status 0, 1 (users left
    behind) or 2 (could not start).

    Raises:
        StandinError: the command line cannot work (before anything starts), or a server does
            not answer.
    """
    out = out if out is not None else sys.stdout
    plan = _plan(args)
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    stack = ExitStack()
    try:
        try:
            exported = _start(stack, plan, args)
        except BaseException:
            _close_bounded(stack, quiet=True)
            raise
        _publish(exported, as_json=args.json, out=out, env_file=args.env_file)
        _say(f"serving {len(plan.servers)} server(s) as login user {plan.login}; "
             "SIGINT or SIGTERM stops and drops the users it created")  # fmt: skip
        stop.wait()
        _say("stopping: dropping the users it created")
        return EXIT_OK if _close_bounded(stack) else EXIT_FAILED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if args.env_file:
            Path(args.env_file).unlink(missing_ok=True)


def _start(stack: ExitStack, plan: _Plan, args: argparse.Namespace) -> dict[str, str]:
    """Everything running; the variables to export, in order."""
    from ._aws import FakeAws
    from ._launch import REGION

    aws = stack.enter_context(FakeAws(region=REGION))
    if args.credentials_ttl is not None:
        aws.expire_credentials_early(args.credentials_ttl)
    for api, kind, times in plan.faults:
        getattr(aws.faults, kind)(api, times)
    for api, seconds in plan.latencies:
        aws.faults.latency(api, seconds)
    exported = dict(aws.env())
    rds_block: dict[str, Any] | None = None
    redshift_cas: list[Path] = []
    for server, dsn in plan.servers:
        database = _database(stack, server, dsn, aws, plan.login, args)
        exported[f"{PREFIX}{server.key}_DSN"] = database.dsn
        block = database.config.to_dict()
        if server.mode == "rds":
            rds_block = block  # postgres and mysql share the role and the user: one block
        else:
            exported[f"{PREFIX}{server.key}_AWS_IAM"] = json.dumps(block, separators=(",", ":"))
        if server.mode == "redshift":
            redshift_cas.append(database.ca_path)
    if redshift_cas:
        from ._launch import redshift_trust_bundle

        # redshift-connector reads no CA file: the default store plus the gateways' CAs.
        exported["SSL_CERT_FILE"] = str(redshift_trust_bundle(*redshift_cas))
    if rds_block is not None:
        exported[f"{PREFIX}AWS_IAM"] = json.dumps(rds_block, separators=(",", ":"))
    exported[f"{PREFIX}LOGIN_USER"] = plan.login
    return exported


def _database(
    stack: ExitStack, server: _Server, dsn: str, aws: FakeAws, login: str, args: argparse.Namespace
) -> IamDatabase:
    from . import _launch

    options: dict[str, Any] = {}
    if args.session_lifetime is not None:
        options["session_lifetime"] = float(args.session_lifetime)
    if args.login_rate is not None and server.mode != "redshift":
        options["login_rate"] = args.login_rate
    try:
        gateway = stack.enter_context(
            _launch.running_gateway(server.protocol, dsn, aws, server.mode, **options)
        )
    except ConnectionError as exc:
        raise StandinError(f"{server.option}: {exc}") from None
    try:
        if server.key == "REDSHIFT":
            return _launch.redshift_database(
                gateway, aws, login=login, role_name=f"{login}-redshift"
            )
        if server.key == "REDSHIFT_SERVERLESS":
            return _launch.redshift_serverless_database(gateway, aws, role_name=login)
        if server.key == "DSQL":
            return _launch.dsql_database(gateway, aws, role_name=f"{login}-dsql")
        return _launch.rds_database(gateway, aws, login=login, role_name=login)
    except (ConnectionError, ValueError) as exc:
        raise StandinError(f"{server.option}: {exc}") from None


def _close_bounded(stack: ExitStack, *, quiet: bool = False) -> bool:
    """Drop the users and stop everything within ``SHUTDOWN_SECONDS``; whether all went."""
    failure: list[str] = []

    def close() -> None:
        try:
            stack.close()
        except Exception as exc:
            failure.append(f"{type(exc).__name__}: {exc}")

    closing = threading.Thread(target=close, name="iampool-standin-stop", daemon=True)
    closing.start()
    closing.join(SHUTDOWN_SECONDS)
    if closing.is_alive():
        # The gateways' loop threads would hold the interpreter's exit: leave at once.
        _say(f"could not drop the users and stop within {SHUTDOWN_SECONDS:.0f} s; exiting")
        sys.stdout.flush()
        os._exit(EXIT_FAILED)
    if failure:
        if not quiet:
            _say(f"stopped, but not every user was dropped ({failure[0]})")
        return False
    if not quiet:
        _say("stopped; the users it created are dropped")
    return True


def _publish(exported: dict[str, str], *, as_json: bool, out: Any, env_file: str | None) -> None:
    text = _render(exported, as_json=as_json)
    if env_file:
        _write_whole(Path(env_file), text)
    out.write(text)
    out.flush()


def _render(exported: dict[str, str], *, as_json: bool) -> str:
    if as_json:
        return json.dumps({"unset": list(_UNSET), "env": exported}) + "\n"
    lines = [f"unset {' '.join(_UNSET)}"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in exported.items()]
    return "\n".join(lines) + "\n"


def _write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` all at once (a reader waiting for it never sees half)."""
    directory = path.parent if str(path.parent) else Path()
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _say(line: str) -> None:
    print(f"iampool standin: {line}", file=sys.stderr, flush=True)
