"""A small website on 127.0.0.1 for testing the urls source against real HTTP.

Serves, with the behaviour a polite crawler must handle:
  /robots.txt             Disallow: /private/ and a Crawl-delay (both settable)
  /pages/<file>           files from a folder (e.g. gen_pages.py output), with ETag and
                          Last-Modified; answers 304 to a matching If-None-Match / If-Modified-Since
  /private/<anything>     a page robots.txt forbids (the log proves it was never asked for)
  /redirect/<file>        301 to /pages/<file>
  /to-private             302 to a page robots.txt forbids
  /loop                   302 to itself, forever
  /flaky/<file>           503 with Retry-After: 0 the first `flaky_failures` times, then the page
  /big                    an HTML page of `big_bytes` bytes, with Content-Length
  /big-stream             the same without Content-Length (chunked), to test a cap while streaming
  /data.json              application/json, not HTML
  /gone                   404
Every request is logged (method, path, headers, status) so tests can assert what was fetched, when.
"""
from __future__ import annotations

import email.utils
import hashlib
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hangs up early (a size cap, a 304) is normal here, not a server error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


class FakeWeb:
    def __init__(self, pages_dir: Path | None = None, crawl_delay: float | None = 0.1,
                 disallow: str = "/private/", flaky_failures: int = 1, big_bytes: int = 200_000,
                 robots_status: int = 200):
        self.pages_dir = Path(pages_dir) if pages_dir else None
        self.crawl_delay, self.disallow = crawl_delay, disallow
        self.flaky_failures, self.big_bytes, self.robots_status = flaky_failures, big_bytes, robots_status
        self.log: list[dict] = []
        self.pages: dict[str, bytes] = {}     # extra pages by name, served under /pages/
        self._flaky: dict[str, int] = {}
        self._lock = threading.Lock()
        self.modified = email.utils.formatdate(time.time() - 3600, usegmt=True)
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "FakeWeb":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """A URL on this server; host "localhost" reaches the same server as a second host."""
        return f"http://{host}:{self.port}{path}"

    def hits(self, path: str, status: int | None = None) -> list[dict]:
        return [e for e in self.log if e["path"] == path and (status is None or e["status"] == status)]

    def requests_per_page(self) -> dict[str, int]:
        """How many times each path other than /robots.txt was asked for (a 304 counts too)."""
        counts: dict[str, int] = {}
        with self._lock:
            for e in self.log:
                if e["path"] != "/robots.txt":
                    counts[e["path"]] = counts.get(e["path"], 0) + 1
        return counts

    # ------------------------------------------------------------ content
    def page(self, name: str) -> bytes | None:
        if name in self.pages:
            return self.pages[name]
        if self.pages_dir and (self.pages_dir / name).is_file() and "/" not in name:
            return (self.pages_dir / name).read_bytes()
        return None

    def robots(self) -> bytes:
        lines = ["User-agent: *", f"Disallow: {self.disallow}"]
        if self.crawl_delay is not None:
            lines.append(f"Crawl-delay: {self.crawl_delay}")
        return ("\n".join(lines) + "\n").encode()

    def _handler(self):
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def send(self, status: int, body: bytes = b"", ctype: str = "text/html; charset=utf-8",
                     headers: dict | None = None, length: bool = True):
                with web._lock:
                    web.log.append({"method": self.command, "path": self.path, "status": status,
                                    "headers": dict(self.headers), "host": self.headers.get("Host"),
                                    "time": time.monotonic()})
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if status == 304:
                    self.end_headers()
                    return
                self.send_header("Content-Type", ctype)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:  # chunked, so the client cannot know the size up front
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 8192):
                        part = body[i:i + 8192]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/robots.txt":
                    if web.robots_status != 200:
                        return self.send(web.robots_status, b"no", "text/plain")
                    return self.send(200, web.robots(), "text/plain")
                if path.startswith("/pages/"):
                    body = web.page(path[len("/pages/"):])
                    if body is None:
                        return self.send(404, b"not found", "text/plain")
                    etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
                    validators = {"ETag": etag, "Last-Modified": web.modified}
                    if self.headers.get("If-None-Match") == etag or (
                            not self.headers.get("If-None-Match")
                            and self.headers.get("If-Modified-Since") == web.modified):
                        return self.send(304, headers=validators)
                    return self.send(200, body, headers=validators)
                if path.startswith("/private/"):
                    return self.send(200, b"<html><body><p>secret</p></body></html>")
                if path.startswith("/redirect/"):
                    return self.send(301, b"", headers={"Location": "/pages/" + path[len("/redirect/"):]})
                if path == "/to-private":
                    return self.send(302, b"", headers={"Location": "/private/secret.html"})
                if path == "/loop":
                    return self.send(302, b"", headers={"Location": "/loop"})
                if path.startswith("/flaky/"):
                    with web._lock:
                        n = web._flaky[path] = web._flaky.get(path, 0) + 1
                    if n <= web.flaky_failures:
                        return self.send(503, b"busy", "text/plain", headers={"Retry-After": "0"})
                    body = web.page(path[len("/flaky/"):])
                    return self.send(200 if body else 404, body or b"not found")
                if path in ("/big", "/big-stream"):
                    para = b"<p>" + b"lorem ipsum dolor sit amet " * 40 + b"</p>"
                    body = b"<html><body><article>" + para * (web.big_bytes // len(para) + 1) + b"</article></body></html>"
                    return self.send(200, body, length=path == "/big")
                if path == "/data.json":
                    return self.send(200, b'{"not": "html"}', "application/json")
                return self.send(404, b"not found", "text/plain")

        return Handler


if __name__ == "__main__":  # serve a folder by hand: python tests/fakes/web_server.py pages/
    with FakeWeb(Path(sys.argv[1]) if len(sys.argv) > 1 else None) as web:
        print(f"serving on {web.url('/')}")
        threading.Event().wait()
