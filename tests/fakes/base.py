"""The lifecycle every fake HTTP server shares: a handler on 127.0.0.1:<free port>, in a thread."""
from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer


class LocalServer:
    """Subclasses say which handler serves requests; `start()`/`stop()` or `with fake:` run it."""

    _server: ThreadingHTTPServer | None = None

    def handler(self) -> type:
        """A BaseHTTPRequestHandler subclass that can reach this fake."""
        raise NotImplementedError

    def start(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]


def send_json(handler, status: int, body, headers: dict | None = None) -> None:
    """Write `body` as a JSON response with its length (and any extra headers) from a request handler."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)
