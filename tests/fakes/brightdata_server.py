"""A stateful fake of Bright Data's Web Scraper API (datasets v3) on 127.0.0.1, for tests.

It follows shared/contracts/brightdata.md: trigger (auth, dataset id, body validation; counts
triggers), progress walking through its statuses a configurable number of polls each, snapshot
download as json/jsonl/ndjson/csv, whole or by parts, 202 until the client has seen `ready`, and
faults injected per endpoint ("trigger", "progress", "snapshot", "parts"), consumed in order:

    fake.fail("snapshot", kind="drop")                      # connection dropped mid-body
    fake.fail("progress", status=429, headers={"Retry-After": "0"}, times=2)
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
import string
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

from tests.fakes.base import LocalServer

DATASETS = {
    "gd_l7q7dkf244hwjntr0": "amazon products",
    "gd_lk56epmy2i5g7lzu0k": "youtube videos",
    "gd_lyy3tktm25m4avu764": "linkedin posts",
    "gd_lvz8ah06191smkebj4": "reddit posts",
}
ENDPOINTS = ("trigger", "progress", "snapshot", "parts")


@dataclass
class Fault:
    status: int = 500
    body: Any = "Internal server error"     # dict/list -> JSON, str -> text/plain
    headers: dict = field(default_factory=dict)
    # status | drop (chunked, cut mid-body) | truncate (short of Content-Length)
    # | cut (no length, no chunking: the body just ends early) | pass (behave normally this time)
    kind: str = "status"


@dataclass
class Snapshot:
    id: str
    dataset_id: str
    records: list
    statuses: list[str]
    error_message: str | None = None
    polls: int = 0
    seen: str | None = None                 # the last status a progress call answered

    @property
    def ready(self) -> bool:
        return self.seen == "ready"


def product_records(inputs: list[dict]) -> list[dict]:
    """Amazon-like records, one per input, shaped like the real output (timestamp + input)."""
    out = []
    for i, given in enumerate(inputs, 1):
        out.append({"title": f"Product {i}", "brand": "ACME", "description": f"A fine thing, number {i}.",
                    "features": ["sturdy", "light"], "final_price": 10.5 + i, "currency": "USD",
                    "url": given.get("url"), "timestamp": "2026-02-02T11:37:05.827Z", "input": given})
    return out


class FakeBrightData(LocalServer):
    def __init__(self, token: str = "test-token-ABC123", polls_per_status: int = 1,
                 statuses: tuple[str, ...] = ("starting", "running", "ready")):
        self.token = token
        self.polls_per_status = polls_per_status
        self.statuses = list(statuses)
        self.make_records: Callable[[list[dict]], list[dict]] = product_records
        self.next_failure: str | None = None      # the next triggered snapshot fails with this message
        self.trailing_newline = True             # jsonl bodies end with "\n"
        self.chunked = False                     # send snapshot bodies with Transfer-Encoding: chunked
        self.snapshots: dict[str, Snapshot] = {}
        self.triggers: list[dict] = []
        self.requests: list[dict] = []           # {method, endpoint, path, query, auth_ok}
        self.faults: dict[str, list[Fault]] = {e: [] for e in ENDPOINTS}
        self._lock = threading.Lock()

    # ---- control
    def handler(self) -> type:
        return type("Handler", (_Handler,), {"fake": self})

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, endpoint: str, status: int = 500, body: Any = "Internal server error",
             headers: dict | None = None, kind: str = "status", times: int = 1) -> None:
        assert endpoint in ENDPOINTS, endpoint
        with self._lock:
            self.faults[endpoint].extend(Fault(status, body, dict(headers or {}), kind) for _ in range(times))

    def add_snapshot(self, records: list, dataset_id: str = "gd_l7q7dkf244hwjntr0",
                     snapshot_id: str | None = None, ready: bool = True) -> str:
        """A snapshot that exists without a trigger (for `snapshot_id:` configs)."""
        sid = snapshot_id or _new_id()
        statuses = ["ready"] if ready else list(self.statuses)
        with self._lock:
            self.snapshots[sid] = Snapshot(sid, dataset_id, records, statuses)
        return sid

    def count(self, endpoint: str) -> int:
        return sum(1 for r in self.requests if r["endpoint"] == endpoint)

    # ---- behaviour, called by the handler under the lock
    def _take_fault(self, endpoint: str) -> Fault | None:
        queue = self.faults[endpoint]
        return queue.pop(0) if queue else None

    def _trigger(self, query: dict, raw: bytes) -> tuple[int, Any]:
        dataset_id = query.get("dataset_id")
        if not dataset_id:
            return 400, "dataset missing"
        if dataset_id not in DATASETS:
            return 404, "dataset does not exist"
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return 400, {"error": "Invalid input format"}
        inputs = body.get("input") if isinstance(body, dict) else body
        if not isinstance(inputs, list):
            return 400, {"error": "Invalid input format"}
        if not inputs:
            return 400, "No data to trigger"
        for index, given in enumerate(inputs, 1):
            url = given.get("url") if isinstance(given, dict) else None
            if not isinstance(given, dict) or (url is not None and not str(url).startswith("https://")):
                return 400, {"error": "Invalid input provided", "code": "validation_error", "type": "validation",
                             "line": json.dumps(given), "index": index,
                             "errors": [["url", "Value should match pattern ^https://(www\\.)?amazon\\..*"]]}
        sid = _new_id()
        statuses = list(self.statuses)
        if self.next_failure:
            statuses[-1] = "failed"
        self.snapshots[sid] = Snapshot(sid, dataset_id, self.make_records(inputs), statuses, self.next_failure)
        self.next_failure = None
        self.triggers.append({"snapshot_id": sid, "query": query, "inputs": inputs})
        return 200, {"snapshot_id": sid}

    def _progress(self, sid: str) -> tuple[int, Any]:
        snap = self.snapshots.get(sid)
        if snap is None:
            return 404, {"error": "Snapshot not found"}
        status = snap.statuses[min(snap.polls // self.polls_per_status, len(snap.statuses) - 1)]
        snap.polls += 1
        snap.seen = status
        body = {"status": status, "snapshot_id": sid, "dataset_id": snap.dataset_id}
        if status == "ready":
            errors = [r for r in snap.records if isinstance(r, dict) and r.get("error_code")]
            codes: dict[str, int] = {}
            for r in errors:
                codes[r["error_code"]] = codes.get(r["error_code"], 0) + 1
            body.update(records=len(snap.records) - len(errors), errors=len(errors), error_codes=codes,
                        collection_duration=1547)
        elif status == "failed":
            body["error_message"] = snap.error_message
        else:
            body["running_time"] = 291 * snap.polls
        return 200, body

    def _download(self, sid: str, query: dict) -> tuple[int, Any, str]:
        snap = self.snapshots.get(sid)
        if snap is None:
            return 404, {"error": "Snapshot not found"}, ""
        if not snap.ready:
            return 202, {"status": snap.seen or "starting",
                         "message": "Snapshot is not ready yet, try again in 10s"}, ""
        records = snap.records
        if "batch_size" in query:
            size = int(query["batch_size"])
            if size < 1000:
                return 400, "Batch size must be at least 1000.", ""
            part = int(query.get("part", 1))
            records = records[(part - 1) * size: part * size]
        fmt = query.get("format", "json")
        return 200, serialise(records, fmt, self.trailing_newline), fmt

    def _parts(self, sid: str, query: dict) -> tuple[int, Any]:
        snap = self.snapshots.get(sid)
        if snap is None:
            return 404, {"error": "Snapshot not found"}
        if not snap.ready:
            return 400, "Snapshot is not ready"
        size = int(query.get("batch_size", 0) or 0)
        if size < 1000:
            return 400, "Batch size must be at least 1000."
        return 200, {"parts": max(1, math.ceil(len(snap.records) / size))}


def serialise(records: list, fmt: str, trailing_newline: bool = True) -> bytes:
    if fmt == "json":
        return json.dumps(records).encode()
    if fmt in ("jsonl", "ndjson"):
        text = "\n".join(json.dumps(r) for r in records)
        return (text + ("\n" if records and trailing_newline else "")).encode()
    if fmt == "csv":
        records = [r for r in records if isinstance(r, dict)]    # a CSV row can only hold an object
        columns: list[str] = []
        for r in records:
            columns.extend(k for k in r if k not in columns)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for r in records:
            writer.writerow(["" if r.get(c) is None else r[c] if isinstance(r.get(c), str)
                             else json.dumps(r[c]) for c in columns])
        return out.getvalue().encode()
    raise ValueError(fmt)


def _new_id() -> str:
    return "s_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=17))


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBrightData
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):       # keep test output quiet
        pass

    def do_POST(self):
        self._handle("POST")

    def do_GET(self):
        self._handle("GET")

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        endpoint = _route(method, parts)
        fake = self.fake
        auth_ok = self.headers.get("Authorization") == f"Bearer {fake.token}"
        with fake._lock:
            fake.requests.append({"method": method, "endpoint": endpoint, "path": url.path, "query": query,
                                  "auth_ok": auth_ok, "user_agent": self.headers.get("User-Agent")})
            fault = fake._take_fault(endpoint) if endpoint else None
            if fault and fault.kind == "pass":        # a queued "behave normally this time"
                fault = None
            if endpoint is None:
                return self._send(404, "Not Found")
            if fault and fault.kind == "status":
                return self._send(fault.status, fault.body, fault.headers)
            if not auth_ok:
                return self._send(401, {"error": "Unauthorized" if endpoint == "trigger"
                                        else "User authentication is required"})
            if endpoint == "trigger":
                return self._send(*fake._trigger(query, raw))
            if endpoint == "progress":
                return self._send(*fake._progress(parts[3]))
            if endpoint == "parts":
                return self._send(*fake._parts(parts[3], query))
            status, body, fmt = fake._download(parts[3], query)
        ctype = "text/csv" if fmt == "csv" else "application/x-ndjson" if fmt in ("jsonl", "ndjson") else None
        if fault and fault.kind == "drop":
            return self._send_dropped(body)
        if fault and fault.kind == "truncate":
            return self._send_truncated(body)
        if fault and fault.kind == "cut":
            return self._send_cut(body)
        if fake.chunked and status == 200:
            return self._send_chunked(body, ctype)
        self._send(status, body, content_type=ctype)

    def _send(self, status: int, body: Any, headers: dict | None = None, content_type: str | None = None):
        if isinstance(body, (bytes, bytearray)):
            data, ctype = bytes(body), content_type or "application/json"
        elif isinstance(body, str):
            data, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_chunked(self, data: bytes, ctype: str | None, stop_at: int | None = None):
        self.send_response(200)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        end = len(data) if stop_at is None else stop_at
        for i in range(0, end, 4096):
            piece = data[i:min(i + 4096, end)]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if stop_at is None:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send_dropped(self, data: bytes):
        """Chunked body cut in the middle, then the connection closes without the final chunk."""
        self._send_chunked(data, None, stop_at=max(1, len(data) // 2))
        self.close_connection = True

    def _send_truncated(self, data: bytes):
        """Content-Length promises more than is sent, then the connection closes."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data) + 1000))
        self.end_headers()
        self.wfile.write(data[: max(1, len(data) // 2)])
        self.wfile.flush()
        self.close_connection = True


    def _send_cut(self, data: bytes):
        """No Content-Length and no chunking: the body ends when the connection closes, early."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data[: max(1, len(data) // 2)])
        self.wfile.flush()
        self.close_connection = True


def _route(method: str, parts: list[str]) -> str | None:
    if parts[:2] != ["datasets", "v3"]:
        return None
    rest = parts[2:]
    if method == "POST" and rest == ["trigger"]:
        return "trigger"
    if method == "GET" and len(rest) == 2 and rest[0] == "progress":
        return "progress"
    if method == "GET" and len(rest) == 2 and rest[0] == "snapshot":
        return "snapshot"
    if method == "GET" and len(rest) == 3 and rest[0] == "snapshot" and rest[2] == "parts":
        return "parts"
    return None
