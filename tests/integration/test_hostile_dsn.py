"""Issue 12, finding 2 (and the DSN parts of 4 and issue 14): hostile DSNs, hosts, ports and
query options never get a secret onto a plain-text listener or a Unix socket.

Every example is a real ``iampool.connect`` against endpoints that would each expose a leak:

- an IAM gateway with TLS (where a connection may succeed) and one with ``offer_tls=False``
  (which records any secret a client sends it), for PostgreSQL and MySQL;
- a recording listener on TCP and on Unix sockets (``<dir>/.s.PGSQL.<port>`` for every port in
  play): a PostgreSQL server without TLS that asks for the password in clear text and keeps every
  byte it receives.

The outcome must be a ``ConfigError`` before any AWS call and before any connection, or a
connection attempt to exactly the endpoint iampool validated (the same ``parse_target``), with
success only over TLS at the TLS gateway. No issued secret or RDS token may reach a plain-text
listener. Counts per category are logged (``--log-cli-level=INFO``) and written by
:func:`test_report_the_counts` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import shutil
import socket
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iampool
from iampool import AwsIamConfig, ConfigError
from iampool.pools._dsn import parse_target
from iampool.testing import FakeAws, IamGateway
from tests.users import APP

UPSTREAMS = {
    "postgresql": os.environ.get(
        "IAMPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("IAMPOOL_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
}
DATABASES = {"postgresql": "postgres", "mysql": "test"}
SCHEMES = {
    "postgresql": "postgresql",
    "postgresql+psycopg": "postgresql",
    "mysql": "mysql",
    "mysql+asyncmy": "mysql",
}
# Each driver's own connect timeout, so that an example never waits long for a silent peer.
TIMEOUTS: dict[str, dict[str, Any]] = {
    "postgresql": {"timeout": 2},
    "postgresql+psycopg": {"connect_timeout": 2},
    "mysql": {"connect_timeout": 2},
    "mysql+asyncmy": {"connect_timeout": 2},
}
DSN_PIECES = [
    "app@", "app:x@", "@", "127.0.0.1", "localhost", ":0", ":99999", ":", ",", "[", "]",
    "[::1]", "/", "%2F", "%252F", "%2C", "%40", "?", "#", "&", "=", "host=", "port=",
    "sslmode=disable", "sslmode=require", "/postgres", "/test",
]  # fmt: skip
OPTION_NAMES = [
    "host", "hostaddr", "port", "sslmode", "sslrootcert", "sslnegotiation", "service",
    "servicefile", "passfile", "user", "password", "requiressl", "gssencmode",
    "target_session_attrs", "application_name", "options", "unix_socket", "local_infile",
    "read_default_file", "read_default_group", "charset", "connect_timeout", "dbname",
    "database", "ssl", "ssl_mode",
]  # fmt: skip
OPTION_VALUES = [
    "127.0.0.1", "/", "disable", "allow", "prefer", "require", "verify-ca", "verify-full",
    "DISABLE", "/no/such/ca.pem", "system", "evil", "direct", "1", "0", "true", "app", "admin",
    "", "utf8mb4", "-c ssl=off",
]  # fmt: skip
BAD_PORTS = [
    "0", "00000", "65536", "-1", "+1", " 1", "1 ", "1e3", "0x10", "\uff11", "5432,5433", "",
    "%35432",
]  # fmt: skip
GIVE_UP = 3.0  # seconds: a MySQL client at a PostgreSQL port waits for a greeting forever
USER = APP
TOKEN_MARKS = (b"X-Amz-", b"Action=connect", b"DBUser=")
PG_SSL_REQUEST = 80877103
PG_GSSENC_REQUEST = 80877104
PG_PROTOCOL_3 = 196608
PG_ASK_CLEAR_TEXT_PASSWORD = b"R" + (8).to_bytes(4, "big") + (3).to_bytes(4, "big")

EXAMPLES = {"dsns": 300, "hosts": 300, "ports": 200, "query options": 300}

log = logging.getLogger("reliability")


def examples(category: str) -> settings:
    return settings(
        max_examples=EXAMPLES[category],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=True,  # the same inputs on every run: counts in the report stay true
    )


# -- the recording listener ----------------------------------------------------------------------


class Recorder:
    """A plain-text PostgreSQL look-alike on TCP and Unix sockets that keeps every byte.

    It answers ``N`` to TLS and GSS requests and asks for a clear-text password after the startup
    message, as a server without TLS would: a client that sends a secret here sends it in clear.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.received: list[bytes] = []
        self.contacts: Counter[str] = Counter()  # "tcp" / "unix"
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._tcp = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._tcp.getsockname()[1]
        self._listeners = [self._tcp]
        self._selector.register(self._tcp, selectors.EVENT_READ, "tcp")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="recorder", daemon=True)

    def listen_unix(self, ports: set[int]) -> None:
        for port in sorted(ports):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.directory / f".s.PGSQL.{port}"))
            listener.listen()
            self._listeners.append(listener)
            self._selector.register(listener, selectors.EVENT_READ, "unix")

    def start(self) -> None:
        self._accepting.start()

    def stop(self) -> None:
        self._stop.set()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)
        for listener in self._listeners:
            listener.close()
        self._selector.close()

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.contacts["tcp"], self.contacts["unix"]

    def received_count(self) -> int:
        with self._lock:
            return len(self.received)

    def leaked(self, secrets: list[str], since: int = 0) -> bool:
        """Whether a token or an issued secret is among the chunks received since ``since``."""
        with self._lock:
            data = b"".join(self.received[since:])
        return any(mark in data for mark in TOKEN_MARKS) or any(
            secret.encode() in data for secret in secrets
        )

    def _accept(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                listener: socket.socket = key.fileobj  # type: ignore[assignment]
                connection, _ = listener.accept()
                with self._lock:
                    self.contacts[key.data] += 1
                thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        asked = False
        connection.settimeout(0.5)
        with connection, contextlib.suppress(OSError):
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                with self._lock:
                    self.received.append(chunk)
                buffer += chunk
                while not asked and len(buffer) >= 8:
                    length = int.from_bytes(buffer[:4], "big")
                    if length < 8 or len(buffer) < length:
                        break
                    code = int.from_bytes(buffer[4:8], "big")
                    buffer = buffer[length:]
                    if code in (PG_SSL_REQUEST, PG_GSSENC_REQUEST):
                        connection.sendall(b"N")
                    elif code == PG_PROTOCOL_3:
                        connection.sendall(PG_ASK_CLEAR_TEXT_PASSWORD)
                        asked = True
                    else:
                        return


# -- the endpoints -------------------------------------------------------------------------------


@dataclass
class Endpoints:
    tls: dict[str, IamGateway]  # by protocol
    plain: dict[str, IamGateway]
    recorder: Recorder
    socket_dir: Path
    ca_path: Path
    service_file: Path
    config: AwsIamConfig
    fake_aws: FakeAws
    loop: asyncio.AbstractEventLoop  # one loop for every example: the token cache stays warm
    ports: dict[str, list[int]] = field(default_factory=dict)  # worth trying, per protocol

    def gateways(self) -> list[IamGateway]:
        return [*self.tls.values(), *self.plain.values()]


@dataclass
class Tally:
    tried: Counter[str] = field(default_factory=Counter)
    config_errors: Counter[str] = field(default_factory=Counter)
    connected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)  # refused, no TLS, no such host, ...
    built: Counter[str] = field(default_factory=Counter)  # auth_for accepted (nothing to connect)
    aimed_at_plain_text: Counter[str] = field(default_factory=Counter)
    secrets_in_clear: Counter[str] = field(default_factory=Counter)

    def line(self, category: str) -> str:
        return (
            f"{category}: {self.tried[category]} inputs, {self.config_errors[category]} "
            f"ConfigError, {self.connected[category]} connected over TLS, "
            f"{self.failed[category]} failed otherwise "
            f"({self.aimed_at_plain_text[category]} of them at a plain-text listener), "
            f"{self.built[category]} auth_for built, {self.secrets_in_clear[category]} "
            "secrets on a plain-text or Unix-socket listener"
        )


TALLY = Tally()


@pytest.fixture(scope="module")
def endpoints(fake_aws: FakeAws) -> Iterator[Endpoints]:
    socket_dir = Path(tempfile.mkdtemp(prefix="iph-"))  # short: Unix socket paths are limited
    started: list[IamGateway] = []
    recorder = Recorder(socket_dir)
    loop = asyncio.new_event_loop()
    try:
        tls: dict[str, IamGateway] = {}
        plain: dict[str, IamGateway] = {}
        for protocol in ("postgresql", "mysql"):
            for offer_tls, into in ((True, tls), (False, plain)):
                gateway = IamGateway(
                    protocol,
                    upstream=UPSTREAMS[protocol],
                    authority=fake_aws,
                    offer_tls=offer_tls,
                )
                started.append(gateway.start())
                gateway.ensure_user(USER)
                into[protocol] = gateway
        ports = {
            protocol: [tls[protocol].port, plain[protocol].port, recorder.port, default]
            for protocol, default in (("postgresql", 5432), ("mysql", 3306))
        }
        recorder.listen_unix({port for listed in ports.values() for port in listed} | {5439})
        recorder.start()
        # A service file pointing at the plain-text listener: ?service= must not follow it.
        service_file = socket_dir / "pg_service.conf"
        service_file.write_text(
            f"[evil]\nhost={socket_dir}\nport={plain['postgresql'].port}\nsslmode=disable\n"
        )
        config = AwsIamConfig.from_extra(
            {
                "enabled": True,
                "region": tls["postgresql"].region,
                "role_arn": fake_aws.create_role("hostile-dsn"),
                "db_username": USER,
            }
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PGSERVICEFILE", str(service_file))
            yield Endpoints(
                tls=tls,
                plain=plain,
                recorder=recorder,
                socket_dir=socket_dir,
                ca_path=tls["postgresql"].ca_path,
                service_file=service_file,
                config=config,
                fake_aws=fake_aws,
                loop=loop,
                ports=ports,
            )
        for gateway in started:
            gateway.drop_created_users()
    finally:
        loop.close()
        recorder.stop()
        for gateway in started:
            gateway.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


# -- one example ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    gateways: tuple[tuple[int, int, int], ...]  # accepted, rejected, secrets seen in clear
    recorder: tuple[int, int]
    aws_calls: int


def state(endpoints: Endpoints) -> State:
    return State(
        gateways=tuple(
            (
                gateway.accepted,
                sum(gateway.rejected.values()),
                len(gateway.secrets_seen_in_plaintext),
            )
            for gateway in endpoints.gateways()
        ),
        recorder=endpoints.recorder.snapshot(),
        aws_calls=sum(endpoints.fake_aws.calls.values()),
    )


def loopback(host: str | None) -> bool:
    """Whether ``host`` resolves to the address the listeners are on (127.0.0.1)."""
    if host is None:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses & {"127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1"})  # noqa: S104


async def attempt(dsn: str, endpoints: Endpoints, scheme: str) -> str:
    """Connect and close; the outcome's kind."""
    try:
        connection: Any = await asyncio.wait_for(
            iampool.connect(dsn, aws_iam=endpoints.config, **TIMEOUTS[scheme]), GIVE_UP
        )
    except ConfigError:
        return "config error"
    except (Exception, asyncio.TimeoutError):  # refused, no TLS, no such host, a timeout, ...
        return "failed"
    close = connection.close()
    if asyncio.iscoroutine(close):
        await close
    elif hasattr(connection, "wait_closed"):
        await connection.wait_closed()
    return "connected"


def check(category: str, dsn: str, scheme: str, endpoints: Endpoints) -> str:
    """Run one DSN and check every rule; count it under ``category``; the outcome."""
    before = state(endpoints)
    received = endpoints.recorder.received_count()
    outcome = endpoints.loop.run_until_complete(attempt(dsn, endpoints, scheme))
    for gateway in endpoints.gateways():
        gateway.wait_idle(timeout=5)
    after = state(endpoints)
    TALLY.tried[category] += 1
    secrets = endpoints.fake_aws.issued_secrets()
    leaked = endpoints.recorder.leaked(secrets, since=received) or any(
        seen[2] != was[2] for seen, was in zip(after.gateways, before.gateways, strict=True)
    )
    if leaked:
        TALLY.secrets_in_clear[category] += 1
    assert not leaked, f"a secret reached a plain-text or Unix-socket listener from {dsn!r}"
    assert after.recorder[1] == before.recorder[1], f"{dsn!r} reached a Unix socket"

    if outcome == "config error":
        TALLY.config_errors[category] += 1
        assert after == before, f"{dsn!r} was refused only after a connection or an AWS call"
        return outcome
    target = parse_target(dsn, endpoints.config)  # the endpoint iampool validated
    near = loopback(target.host)
    contacted = [
        gateway.port
        for gateway, was, now in zip(
            endpoints.gateways(), before.gateways, after.gateways, strict=True
        )
        if was != now
    ]
    if after.recorder[0] != before.recorder[0]:
        contacted.append(endpoints.recorder.port)
    for port in contacted:
        assert near, f"{dsn!r} reached 127.0.0.1:{port}, not the validated {target.endpoint}"
        assert port == target.port, f"{dsn!r} reached port {port}, not {target.endpoint}"
    if outcome == "connected":
        TALLY.connected[category] += 1
        reached = [gateway for gateway in endpoints.tls.values() if gateway.port == target.port]
        assert reached, f"{dsn!r} connected, but not to a TLS gateway ({target.endpoint})"
        index = endpoints.gateways().index(reached[0])
        assert after.gateways[index][0] > before.gateways[index][0]
    else:
        TALLY.failed[category] += 1
        plain_text = [gateway.port for gateway in endpoints.plain.values()]
        if near and target.port in (*plain_text, endpoints.recorder.port):
            TALLY.aimed_at_plain_text[category] += 1
    return outcome


def api(category: str, endpoints: Endpoints, host: object, port: object) -> None:
    """``auth_for`` with this host and port: a ``ConfigError`` before any AWS call, or an
    authenticator for a valid endpoint (built, not used: nothing to connect here)."""
    before = sum(endpoints.fake_aws.calls.values())
    TALLY.tried[category] += 1
    try:
        iampool.auth_for(endpoints.config, host=host, port=port)  # type: ignore[arg-type]
    except ConfigError:
        TALLY.config_errors[category] += 1
        assert sum(endpoints.fake_aws.calls.values()) == before
        return
    TALLY.built[category] += 1
    assert isinstance(host, str)
    assert type(port) is int
    assert 1 <= port <= 65535


# -- strategies ----------------------------------------------------------------------------------

HOSTILE_CHARACTERS = "/\\,@%?#:[] \t\x00\n\r=&+;'\"\x7f\u00e9\uff0f"


def encodings() -> st.SearchStrategy[Callable[[str], str]]:
    """How a host is written into a DSN: as is, percent-encoded once or twice, or only its
    slashes and commas encoded (once or twice)."""

    def partly(text: str) -> str:
        return text.replace("/", "%2F").replace(",", "%2C").replace("@", "%40")

    return st.sampled_from(
        [
            lambda text: text,
            lambda text: quote(text, safe=""),
            lambda text: quote(quote(text, safe=""), safe=""),
            partly,
            lambda text: partly(partly(text)).replace("%2", "%252"),
        ]
    )


@st.composite
def hosts(draw: st.DrawFn, endpoints: Endpoints) -> str:
    socket_dir = str(endpoints.socket_dir)
    return draw(
        st.one_of(
            st.sampled_from(
                [
                    "127.0.0.1",
                    "localhost",
                    "::1",
                    "::ffff:127.0.0.1",
                    "0.0.0.0",  # noqa: S104
                    socket_dir,
                    socket_dir + "/",
                    "/",
                    "/run/postgresql",
                    "/var/run/postgresql",
                    "@" + socket_dir,
                    "." + socket_dir,
                    f"127.0.0.1,{socket_dir}",
                    f"{socket_dir},127.0.0.1",
                    "127.0.0.1,localhost",
                    "fe80::1%lo",
                    "[::1]",
                    "::g",
                    "127.0.0.1 ",
                    "127.0.0.1\x00evil",
                    "no-such-host.invalid",
                    "a..b",
                ]
            ),
            # No digits: a random address might be routed somewhere and time out.
            st.text(alphabet=HOSTILE_CHARACTERS + "abc.", min_size=1, max_size=12),
            st.integers(250, 5000).map(lambda n: "h" * n),
            st.sampled_from(["127.0.0.1", socket_dir]).flatmap(
                lambda base: st.text(alphabet=HOSTILE_CHARACTERS, max_size=3).map(
                    lambda tail: base + tail
                )
            ),
        )
    )


def ports(endpoints: Endpoints, scheme: str) -> st.SearchStrategy[int]:
    """The ports where something listens for this scheme's protocol: the TLS gateway, the
    plain-text gateway, the recording listener and the protocol's default. (A MySQL client at a
    PostgreSQL port would only wait for a greeting.)"""
    return st.sampled_from(endpoints.ports[SCHEMES[scheme]])


def authority(host: str, port: str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def query_of(pairs: list[tuple[str, str]]) -> str:
    return "?" + urlencode(pairs) if pairs else ""


def dsn_for(scheme: str, netloc: str, query: list[tuple[str, str]]) -> str:
    return f"{scheme}://{USER}@{netloc}/{DATABASES[SCHEMES[scheme]]}{query_of(query)}"


# -- the properties ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
@pytest.mark.parametrize(
    "written",
    [
        "%252F{dir}",  # the report's DSN: decoded here, then again by asyncpg
        "{dir}",
        "%2F{dir}",
        "%2F",  # asyncpg then tried its default sockets
        "127.0.0.1%2C{dir}",
        "{dir}%2C127.0.0.1",
    ],
)
def test_a_socket_path_in_the_host_is_refused_before_anything_connects(
    endpoints: Endpoints, scheme: str, written: str
) -> None:
    socket_dir = str(endpoints.socket_dir)
    host = written.replace("%2F{dir}", quote(socket_dir, safe="")).replace("{dir}", socket_dir)
    if written.startswith("%252F"):
        host = quote(quote(socket_dir, safe=""), safe="")
    port = endpoints.tls["postgresql"].port

    dsn = f"{scheme}://app@{host}:{port}/postgres?sslmode=verify-full"

    assert check("dsns", dsn, scheme, endpoints) == "config error"


def test_a_service_file_cannot_send_asyncpg_elsewhere_or_turn_tls_off(endpoints: Endpoints) -> None:
    # PGSERVICEFILE's [evil] names the socket directory, the plain-text gateway and
    # sslmode=disable; asyncpg would read it for ?service=, which is refused (it was overridden
    # by iampool's host, port and TLS before; refused now, as for psycopg).
    port = endpoints.tls["postgresql"].port
    dsn = f"postgresql://app@127.0.0.1:{port}/postgres?service=evil"

    assert check("query options", dsn, "postgresql", endpoints) == "config error"
    assert check("query options", dsn.replace("postgresql:", "postgresql+psycopg:"),
                 "postgresql+psycopg", endpoints) == "config error"  # fmt: skip


def test_hostile_whole_dsns(endpoints: Endpoints) -> None:
    socket_dir = str(endpoints.socket_dir)

    @examples("dsns")
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        scheme = data.draw(st.sampled_from(sorted(SCHEMES)), label="scheme")
        port = endpoints.tls[SCHEMES[scheme]].port
        plain = endpoints.plain[SCHEMES[scheme]].port
        recorder = endpoints.recorder.port
        known = [*DSN_PIECES, f":{port}", f":{plain}", f":{recorder}", socket_dir]
        known.append(quote(socket_dir, safe=""))
        piece = st.one_of(
            st.sampled_from(known), st.text(alphabet=HOSTILE_CHARACTERS + "ahp0", max_size=4)
        )
        pieces = data.draw(st.lists(piece, min_size=1, max_size=8), label="pieces")
        check("dsns", f"{scheme}://{''.join(pieces)}", scheme, endpoints)

    run()


def test_hostile_hosts(endpoints: Endpoints) -> None:
    @examples("hosts")
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        scheme = data.draw(st.sampled_from(sorted(SCHEMES)), label="scheme")
        host = data.draw(hosts(endpoints), label="host")
        port = data.draw(ports(endpoints, scheme), label="port")
        where = data.draw(st.sampled_from(["authority", "query", "auth_for"]), label="where")
        encode = data.draw(encodings(), label="encoding")
        if where == "auth_for":
            api("hosts", endpoints, host, port)
        elif where == "authority":
            netloc = authority(encode(host), str(port))
            check("hosts", dsn_for(scheme, netloc, []), scheme, endpoints)
        else:
            query = [("host", encode(host)), ("port", str(port))]
            check("hosts", dsn_for(scheme, "", query), scheme, endpoints)

    run()


def test_hostile_ports(endpoints: Endpoints) -> None:
    pg = endpoints.tls["postgresql"].port

    @examples("ports")
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        scheme = data.draw(st.sampled_from(sorted(SCHEMES)), label="scheme")
        port = data.draw(
            st.one_of(
                ports(endpoints, scheme).map(str),
                st.integers(-70000, 140000).map(str),
                st.sampled_from([*BAD_PORTS, f"{pg}%00", f"{pg},{pg}", f"{pg}.0"]),
                st.integers(6, 5000).map(lambda n: "9" * n),
            ),
            label="port",
        )
        where = data.draw(st.sampled_from(["authority", "query", "both", "auth_for"]))
        if where == "auth_for":
            value = data.draw(
                st.one_of(
                    st.integers(-(2**70), 2**70),
                    st.booleans(),
                    st.floats(allow_nan=True),
                    st.just(port),
                    ports(endpoints, scheme),
                ),
                label="auth_for port",
            )
            api("ports", endpoints, "127.0.0.1", value)
            return
        other = data.draw(ports(endpoints, scheme).map(str), label="other port")
        if where == "authority":
            dsn = dsn_for(scheme, authority("127.0.0.1", port), [])
        elif where == "query":
            dsn = dsn_for(scheme, "127.0.0.1", [("port", port)])
        else:
            dsn = dsn_for(scheme, authority("127.0.0.1", other), [("port", port)])
        check("ports", dsn, scheme, endpoints)

    run()


def test_hostile_query_options(endpoints: Endpoints) -> None:
    socket_dir = str(endpoints.socket_dir)

    @examples("query options")
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        scheme = data.draw(st.sampled_from(sorted(SCHEMES)), label="scheme")
        protocol = SCHEMES[scheme]
        known = [
            *OPTION_VALUES,
            socket_dir,
            quote(socket_dir, safe=""),
            str(endpoints.plain[protocol].port),
            str(endpoints.recorder.port),
            str(endpoints.ca_path),
            str(endpoints.service_file),
        ]
        values = st.one_of(
            st.sampled_from(known), st.text(alphabet=HOSTILE_CHARACTERS + "ab1", max_size=6)
        )
        option = st.tuples(st.sampled_from(OPTION_NAMES), values)
        pairs = data.draw(st.lists(option, max_size=4), label="options")
        tls_port = endpoints.tls[protocol].port
        netloc = data.draw(
            st.sampled_from([f"127.0.0.1:{tls_port}", "127.0.0.1", "", "localhost"]),
            label="authority",
        )
        check("query options", dsn_for(scheme, netloc, pairs), scheme, endpoints)

    run()


def test_report_the_counts() -> None:
    """Runs last in this module: the per-category counts of the properties above."""
    lines = [TALLY.line(category) for category in EXAMPLES if TALLY.tried[category]]
    for line in lines:
        log.info("hostile inputs: %s", line)
    report = os.environ.get("IAMPOOL_HOSTILE_DSN_REPORT")
    if report:
        Path(report).write_text("\n".join(lines) + "\n")
    assert sum(TALLY.secrets_in_clear.values()) == 0
