"""The HTTP server under ``FakeAws``: werkzeug's threaded server in a background thread, which
can stop listening and cut its open connections (an outage) and then listen again on the same
port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from werkzeug.serving import ThreadedWSGIServer

__all__ = ["BackgroundServer"]

_POLL_INTERVAL = 0.05  # how quickly the serving thread notices a stop
_DRAIN_TIMEOUT = 5.0  # how long a stop waits for open connections to finish


class _Server(ThreadedWSGIServer):
    """werkzeug's threaded server that can cut its open connections, like a host going away."""

    def __init__(self, sock: socket.socket, app: Any, handler: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_changed = threading.Condition()
        host, port = sock.getsockname()[:2]
        super().__init__(host, port, app, handler=handler, fd=sock.fileno())

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_changed:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._open_changed:
                self._open.discard(request)
                self._open_changed.notify_all()

    def cut_connections(self) -> None:
        """Shut every open connection down: clients see the connection drop, unanswered."""
        with self._open_changed:
            for connection in self._open:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def wait_closed(self, timeout: float) -> None:
        """Wait until the request threads are done with their connections."""
        with self._open_changed:
            self._open_changed.wait_for(lambda: not self._open, timeout=timeout)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # create_server sets SO_REUSEADDR, so an outage can end on the very same port
    return socket.create_server((host, port), family=family, backlog=128)


class BackgroundServer:
    """Serves a WSGI application on ``host:port`` from a daemon thread.

    Args:
        app: the WSGI application.
        handler: werkzeug's request handler class to use (moto's, for its header handling).
        on_cut: called after open connections were cut, to release requests still held
            inside the application (e.g. by injected latency).
    """

    def __init__(
        self,
        app: Any,
        handler: Any,
        *,
        host: str,
        port: int,
        on_cut: Callable[[], None],
    ) -> None:
        self._app = app
        self._handler = handler
        self._host = host
        self._port = port
        self._on_cut = on_cut
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port: the one asked for, or the free one picked at the first ``listen()``."""
        return self._port

    @property
    def listening(self) -> bool:
        """Whether it accepts connections now."""
        return self._server is not None

    def listen(self) -> None:
        """Listen and serve in the background, on the same port as before if it listened."""
        sock = _listen(self._host, self._port)
        try:
            server = _Server(sock, self._app, self._handler)
        finally:
            sock.close()  # the server listens on its own duplicate of the descriptor
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"iampool-fake-aws-{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def close(self) -> None:
        """Stop listening, cut open connections and wait for the request threads. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()
        self._on_cut()  # requests held inside the app find their connection gone
        server.wait_closed(_DRAIN_TIMEOUT)
        thread.join()
