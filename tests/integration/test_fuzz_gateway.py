"""Issue 8, scenario 10: fuzzing the IAM gateway's packet parsing.

Random bytes, framed packets with random contents, and mutations of a valid login are sent to
the PostgreSQL and MySQL fronts. Whatever arrives, the gateway closes THAT connection (once the
client has said all it will say), keeps serving, leaves no client or upstream connection open,
and logs no unexpected error. A real driver logs in afterwards.

The examples run against a live gateway thread over real sockets, so these tests live in
``tests/integration``; they use plain blocking sockets, which the gateway's own thread serves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iampool
from iampool import CredentialCache
from iampool.testing import FakeAws, IamDatabase, IamGateway
from tests.users import APP

from .rds_tokens import Tokens, assumed_role_tokens

UPSTREAMS = {
    "postgresql": os.environ.get(
        "IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
}
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NO_VERDICT = "no verdict (the client hung up first)"
HANG_UP_WITHIN = 3.0  # seconds the gateway gets to close a connection whose client went quiet

log = logging.getLogger("reliability")  # verdicts per test; --log-cli-level=INFO shows them

# PostgreSQL startup codes and MySQL capability flags the valid logins use.
PG_SSL_REQUEST = 80877103
PG_GSSENC_REQUEST = 80877104
PG_CANCEL_REQUEST = 80877102
PG_PROTOCOL_3 = 196608
MYSQL_CAPABILITIES = (
    1  # LONG_PASSWORD
    | 1 << 3  # CONNECT_WITH_DB
    | 1 << 9  # PROTOCOL_41
    | 1 << 11  # SSL
    | 1 << 13  # TRANSACTIONS
    | 1 << 15  # SECURE_CONNECTION
    | 1 << 19  # PLUGIN_AUTH
    | 1 << 21  # PLUGIN_AUTH_LENENC_CLIENT_DATA
)


# -- watching the gateway ------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Watch:
    """What the gateway thread reported: its warnings and errors, and each example's verdict."""

    handler: _Collect
    outcomes: Counter[str] = field(default_factory=Counter)

    def problems(self) -> list[str]:
        return [
            f"{record.name}: {record.getMessage()}"
            for record in self.handler.records
            if not _slow_callback_report(record)
        ]


def _slow_callback_report(record: logging.LogRecord) -> bool:
    """asyncio's debug mode (``python -X dev``) reports every callback that ran longer than
    ``slow_callback_duration``: timing on a busy machine, not a problem of the gateway."""
    message = record.getMessage()
    return record.name == "asyncio" and message.startswith("Executing ") and " took " in message


@pytest.fixture(scope="module")
def watch() -> Iterator[Watch]:
    """Collects WARNING and above from the gateway's logger (where a connection handler reports
    an unexpected exception) and from asyncio (tasks that died unobserved)."""
    handler = _Collect()
    loggers = [logging.getLogger("iampool.testing.gateway"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    yield Watch(handler)
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def gateways(fake_aws: FakeAws) -> Iterator[dict[str, IamGateway]]:
    started: dict[str, IamGateway] = {}
    try:
        for protocol in ("postgresql", "mysql"):
            gateway = IamGateway(
                protocol,  # type: ignore[arg-type]
                upstream=UPSTREAMS[protocol],
                authority=fake_aws,
            )
            started[protocol] = gateway.start()
            gateway.ensure_user(APP)
        yield started
        for gateway in started.values():
            gateway.drop_created_users()
    finally:
        for gateway in started.values():
            gateway.stop()


@pytest.fixture(scope="module")
def token_for(fake_aws: FakeAws) -> Tokens:
    return assumed_role_tokens(fake_aws, "gateway-fuzz")


def verdict(gateway: IamGateway, before: tuple[int, Counter[str]]) -> str:
    """How the gateway decided the last connection: accepted, a reject reason, or none."""
    accepted, rejected = before
    if gateway.accepted > accepted:
        return "accepted"
    new = gateway.rejected - rejected
    return next(iter(new), NO_VERDICT)


def settle(gateway: IamGateway, watch: Watch) -> None:
    """After an example: nothing left open, nothing unexpected logged."""
    gateway.wait_idle(timeout=5)
    assert (gateway.active, gateway.upstream_active) == (0, 0)
    assert watch.problems() == []


# -- talking to the gateway over blocking sockets -----------------------------------------------


def drain(sock: socket.socket) -> None:
    """Read until the gateway hangs up; a socket timeout fails the example."""
    sock.settimeout(HANG_UP_WITHIN)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def say_then_hang_up(sock: socket.socket, payload: bytes) -> None:
    """Send ``payload``, half-close (the client will say nothing more), wait for the close.

    On a TLS socket the half-close is a bare TCP FIN without close_notify, as a client that
    crashes sends; what the gateway answers is then read undecrypted.
    """
    if payload:
        sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    drain(sock)


def read_mysql_packet(sock: socket.socket) -> bytes:
    header = receive_exactly(sock, 4)
    return receive_exactly(sock, int.from_bytes(header[:3], "little"))


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the gateway hung up early")
        data += chunk
    return data


def open_plain(gateway: IamGateway) -> socket.socket:
    sock = socket.create_connection((gateway.host, gateway.port), timeout=HANG_UP_WITHIN)
    if gateway.protocol == "mysql":
        greeting = read_mysql_packet(sock)
        assert greeting[:1] == b"\x0a"
    return sock


def open_tls(gateway: IamGateway) -> ssl.SSLSocket:
    """A connection past the TLS upgrade, as each protocol asks for it."""
    sock = open_plain(gateway)
    try:
        if gateway.protocol == "postgresql":
            sock.sendall(struct.pack("!ii", 8, PG_SSL_REQUEST))
            assert receive_exactly(sock, 1) == b"S"
        else:
            ssl_request = struct.pack("<IIB", MYSQL_CAPABILITIES, 1 << 24, 33) + bytes(23)
            sock.sendall(mysql_packet(1, ssl_request))
        return gateway.client_ssl_context().wrap_socket(sock, server_hostname=gateway.host)
    except BaseException:
        sock.close()
        raise


def pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def pg_startup(code: int, body: bytes) -> bytes:
    return struct.pack("!ii", len(body) + 8, code) + body


def mysql_packet(sequence: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence % 256]) + payload


@dataclass(frozen=True)
class Login:
    """What a client sends after the TLS upgrade to log in as ``APP``: message bodies, each
    with its framing (length prefix, type byte), and the framing offsets mutations target."""

    messages: list[tuple[Callable[[bytes], bytes], bytes]]
    hot: list[int]

    @property
    def wire(self) -> bytes:
        return b"".join(frame(body) for frame, body in self.messages)


def valid_login(gateway: IamGateway, token: str) -> Login:
    database = (gateway.upstream.database or "").encode()
    if gateway.protocol == "postgresql":
        startup = (
            struct.pack("!i", PG_PROTOCOL_3)
            + b"user\0"
            + APP.encode()
            + b"\0database\0"
            + database
            + b"\0\0"
        )
        startup_length = len(startup) + 4
        return Login(
            [
                (lambda body: struct.pack("!i", len(body) + 4) + body, startup),
                (lambda body: pg_message(b"p", body), token.encode() + b"\0"),
            ],
            hot=[*range(8), *range(startup_length, startup_length + 5)],
        )
    auth = token.encode() + b"\0"
    response = b"".join(
        [
            struct.pack("<IIB", MYSQL_CAPABILITIES, 1 << 24, 33),
            bytes(23),
            APP.encode() + b"\0",
            b"\xfc" + len(auth).to_bytes(2, "little"),  # length-encoded: tokens exceed 250 bytes
            auth,
            database + b"\0",
            b"mysql_clear_password\0",
        ]
    )
    return Login([(lambda body: mysql_packet(2, body), response)], hot=[*range(13), *range(36, 41)])


# -- strategies ----------------------------------------------------------------------------------

pg_codes = st.sampled_from(
    [PG_SSL_REQUEST, PG_GSSENC_REQUEST, PG_CANCEL_REQUEST, PG_PROTOCOL_3]
) | st.integers(-(2**31), 2**31 - 1)
pg_garbage = st.one_of(
    st.binary(max_size=512),
    st.builds(pg_startup, pg_codes, st.binary(max_size=256)),
    st.lists(st.builds(pg_startup, pg_codes, st.binary(max_size=64)), max_size=4).map(b"".join),
    # a well-framed startup packet whose length field lies
    st.builds(
        lambda length, code, body: struct.pack("!ii", length, code) + body,
        st.integers(-(2**31), 2**31 - 1),
        pg_codes,
        st.binary(max_size=64),
    ),
)
mysql_garbage = st.one_of(
    st.binary(max_size=512),
    st.builds(mysql_packet, st.integers(0, 255), st.binary(max_size=256)),
    # a 32-byte packet is an SSLRequest when its SSL flag is set
    st.builds(mysql_packet, st.integers(0, 255), st.binary(min_size=32, max_size=32)),
    st.builds(
        lambda flags, rest: mysql_packet(1, struct.pack("<I", flags) + rest),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=128),
    ),
)


def edits(size: int, hot: list[int]) -> st.SearchStrategy[list[tuple[str, int, object]]]:
    """Up to four edits: a byte set, bytes inserted or deleted, a truncation. Half the new bytes
    are printable ASCII, so that edited tokens still decode and reach the token check."""
    anywhere = st.integers(0, max(size - 1, 0))
    position = st.sampled_from(hot) | anywhere if hot else anywhere
    byte = st.integers(0x20, 0x7E) | st.integers(0, 255)
    edit = st.one_of(
        st.tuples(st.just("set"), position, byte),
        st.tuples(st.just("insert"), position, st.lists(byte, min_size=1, max_size=8).map(bytes)),
        st.tuples(st.just("delete"), position, st.integers(1, 16)),
        st.tuples(st.just("truncate"), anywhere, st.just(0)),
    )
    return st.lists(edit, min_size=1, max_size=4)


def mutations(login: Login) -> st.SearchStrategy[bytes]:
    """The valid login with its bytes edited: either anywhere (framing included), or inside ONE
    message body, framed again, which reaches the parsers and checks behind the framing."""
    wire = login.wire

    def reframe(index: int, changes: list[tuple[str, int, object]]) -> bytes:
        return b"".join(
            frame(apply(body, changes) if number == index else body)
            for number, (frame, body) in enumerate(login.messages)
        )

    anywhere = edits(len(wire), login.hot).map(lambda changes: apply(wire, changes))
    reframed = st.integers(0, len(login.messages) - 1).flatmap(
        lambda index: edits(len(login.messages[index][1]), []).map(
            lambda changes: reframe(index, changes)
        )
    )
    return anywhere | reframed


def apply(valid: bytes, edits: list[tuple[str, int, object]]) -> bytes:
    data = bytearray(valid)
    for kind, at, argument in edits:
        at = min(at, max(len(data) - 1, 0))
        if kind == "set" and data:
            data[at] = int(argument)  # type: ignore[call-overload]
        elif kind == "insert":
            data[at:at] = argument  # type: ignore[index]
        elif kind == "delete":
            del data[at : at + int(argument)]  # type: ignore[call-overload]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


# -- the properties ------------------------------------------------------------------------------


def still_serves_a_real_driver(gateway: IamGateway, database: IamDatabase, protocol: str) -> None:
    """A driver logs in through the gateway after the fuzzing, as the IAM user."""

    async def log_in() -> str:
        cache = CredentialCache()
        try:
            connection = await iampool.connect(
                gateway.dsn(APP), aws_iam=database.config, cache=cache
            )
            if protocol == "postgresql":
                user = str(await connection.fetchval("SELECT current_user"))
                await connection.close()
                return user
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT CURRENT_USER()")
                (user,) = await cursor.fetchone()
            await connection.ensure_closed()
            # aiomysql does not wait for a TLS transport's shutdown: let the loop finish it
            # before asyncio.run closes the loop (else, at times, "unclosed transport").
            await asyncio.sleep(0.05)
            return str(user).split("@", 1)[0]
        finally:
            await cache.aclose()

    accepted = gateway.accepted
    assert asyncio.run(log_in()) == APP
    assert gateway.accepted == accepted + 1


@pytest.fixture(params=["postgresql", "mysql"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(protocol: str, request: pytest.FixtureRequest) -> IamDatabase:
    fixture = "iam_postgres" if protocol == "postgresql" else "iam_mysql"
    database: IamDatabase = request.getfixturevalue(fixture)
    return database


def run_examples(
    gateway: IamGateway, watch: Watch, strategy: st.SearchStrategy[bytes], tls: bool
) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    opener: Callable[[IamGateway], socket.socket] = open_tls if tls else open_plain

    @EXAMPLES
    @given(strategy)
    def one_connection(payload: bytes) -> None:
        before = (gateway.accepted, gateway.rejected)
        with opener(gateway) as sock:
            say_then_hang_up(sock, payload)
        settle(gateway, watch)
        outcomes[verdict(gateway, before)] += 1

    one_connection()
    return outcomes


def test_random_bytes_close_that_connection_only(
    protocol: str, database: IamDatabase, gateways: dict[str, IamGateway], watch: Watch
) -> None:
    gateway = gateways[protocol]
    garbage = pg_garbage if protocol == "postgresql" else mysql_garbage

    outcomes = run_examples(gateway, watch, garbage, tls=False)

    log.info("scenario 10 (%s, random bytes): %s", protocol, dict(outcomes))
    assert "accepted" not in outcomes
    still_serves_a_real_driver(gateway, database, protocol)
    settle(gateway, watch)


def test_mutated_logins_after_tls_close_that_connection_only(
    protocol: str,
    database: IamDatabase,
    gateways: dict[str, IamGateway],
    watch: Watch,
    token_for: Tokens,
) -> None:
    gateway = gateways[protocol]
    login = valid_login(gateway, token_for(gateway))
    with open_tls(gateway) as sock:  # the unmutated login is accepted: mutations start valid
        accepted = gateway.accepted
        say_then_hang_up(sock, login.wire)
    settle(gateway, watch)
    assert gateway.accepted == accepted + 1

    outcomes = run_examples(gateway, watch, mutations(login), tls=True)

    log.info("scenario 10 (%s, mutated logins): %s", protocol, dict(outcomes))
    # The mutations reach both the framing checks and the credential check behind them.
    assert outcomes["malformed_packet"] > 0
    checked = outcomes.keys() - {"malformed_packet", "accepted", NO_VERDICT}
    assert sum(outcomes[reason] for reason in checked) > 0
    still_serves_a_real_driver(gateway, database, protocol)
    settle(gateway, watch)
