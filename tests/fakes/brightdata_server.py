"""A stateful fake of Bright Data's APIs on 127.0.0.1, for tests (docs/contracts/brightdata.md).

Web Scraper API (datasets v3): trigger and sync scrape (auth, dataset id, body validation,
`custom_output_fields` applied; counted), progress walking through its statuses a configurable
number of polls each, snapshot download as json/jsonl/ndjson/csv, whole or by parts, 202 until the
client has seen `ready`, cancel. `/scrape` answers 200 with the records, or, when
`scrape_times_out` is set (Bright Data's one-minute limit passed), 202 with a snapshot id that is
then polled like a trigger's. The Crawl API is the scraper dataset CRAWL (records built from
`pages`, a url -> HTML map).

Marketplace Dataset API: /datasets/list, /datasets/{id}/metadata, /datasets/filter (JSON or
multipart with value-list files; the filter grammar is evaluated on `market[dataset_id]`),
/datasets/snapshots/{id} (scheduled -> building -> ready), /download (202 text while building, and
`building_after_ready` more 202s after ready) and /parts.

Faults are injected per endpoint (see ENDPOINTS), consumed in order:

    fake.fail("snapshot", kind="drop")                      # connection dropped mid-body
    fake.fail("progress", status=429, headers={"Retry-After": "0"}, times=2)
"""
from __future__ import annotations

import csv
import email.parser
import email.policy
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
    "gd_m6gjtfmeh43we6cqc": "crawl api",
}
CRAWL = "gd_m6gjtfmeh43we6cqc"
SCRAPE_MAX_INPUTS = 20
ENDPOINTS = ("trigger", "scrape", "progress", "snapshot", "parts", "cancel",
             "list", "metadata", "filter", "market_status", "market_download", "market_parts")
MARKET_STATUSES = ("scheduled", "building", "ready")


@dataclass
class Fault:
    status: int = 500
    body: Any = "Internal server error"     # dict/list -> JSON, str -> text/plain
    headers: dict = field(default_factory=dict)
    # status | drop (chunked, cut mid-body) | truncate (short of Content-Length)
    # | cut (no length, no chunking: the body just ends early) | pass (behave normally this time)
    # | close (no answer at all: the connection closes)
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
    cancelled: bool = False
    market: bool = False                    # a marketplace (filter) snapshot
    late_202s: int = 0                      # marketplace: 202s still to send after ready

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


def doc_page(url: str) -> str:
    """A documentation page of the kind the docs templates read, for the Crawl API."""
    name = url.rstrip("/").rsplit("/", 1)[-1] or "index"
    return (f"<html><head><title>{name} - Docs</title></head><body><nav>Home | API | Guides</nav><main>"
            f"<h1>{name}</h1><p>The {name} module handles one part of the system. It is configured "
            f"in a single file and documented here in full detail.</p><p>To use {name}, import it, create "
            "an instance with the settings you need, then call run(). Errors are raised as exceptions "
            "that name the setting at fault.</p></main><footer>(c) Docs</footer></body></html>")


class FakeBrightData(LocalServer):
    def __init__(self, token: str = "test-token-ABC123", polls_per_status: int = 1,
                 statuses: tuple[str, ...] = ("starting", "running", "ready")):
        self.token = token
        self.polls_per_status = polls_per_status
        self.statuses = list(statuses)
        self.make_records: Callable[[list[dict]], list[dict]] = product_records
        self.pages: dict[str, str] = {}          # Crawl API: url -> HTML (default: doc_page(url))
        self.markdown_only: set[str] = set()     # Crawl API: urls answered without page_html
        self.dead_urls: set[str] = set()         # Crawl API: urls answered with a dead_page error record
        self.next_failure: str | None = None      # the next triggered snapshot fails with this message
        self.scrape_times_out = False            # /scrape answers 202 + snapshot id instead of records
        self.trailing_newline = True             # jsonl bodies end with "\n"
        self.chunked = False                     # send snapshot bodies with Transfer-Encoding: chunked
        self.market: dict[str, dict] = {}        # marketplace: dataset id -> {"name", "records", "free"}
        self.market_polls_per_status = 1
        self.building_after_ready = 0            # marketplace: 202s a download still gets after ready
        self.snapshots: dict[str, Snapshot] = {}
        self.triggers: list[dict] = []           # every collection started, by /trigger or /scrape
        self.filters: list[dict] = []            # every marketplace filter that started a snapshot
        self.cancels: list[str] = []
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

    def add_market(self, dataset_id: str, name: str, records: list[dict], free: bool = False) -> None:
        self.market[dataset_id] = {"name": name, "records": records, "free": free}

    def count(self, endpoint: str) -> int:
        return sum(1 for r in self.requests if r["endpoint"] == endpoint)

    def billing_requests(self) -> int:
        """Requests that start something billed: trigger, scrape, marketplace filter."""
        return sum(self.count(e) for e in ("trigger", "scrape", "filter"))

    # ---- behaviour, called by the handler under the lock
    def _take_fault(self, endpoint: str) -> Fault | None:
        queue = self.faults[endpoint]
        return queue.pop(0) if queue else None

    def _inputs(self, query: dict, raw: bytes) -> tuple[int, Any] | list:
        dataset_id = query.get("dataset_id")
        if not dataset_id:
            return 404, "Collector not found"
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
        return inputs

    def _start(self, query: dict, inputs: list[dict], via: str) -> Snapshot:
        dataset_id = query["dataset_id"]
        records = self._crawl_records(inputs) if dataset_id == CRAWL else self.make_records(inputs)
        if query.get("custom_output_fields"):
            keep = query["custom_output_fields"].split("|")
            records = [{k: v for k, v in r.items() if k in keep} if isinstance(r, dict) else r for r in records]
        if query.get("include_errors") == "false":
            records = [r for r in records if not (isinstance(r, dict) and r.get("error_code"))]
        statuses = list(self.statuses)
        if self.next_failure:
            statuses[-1] = "failed"
        sid = _new_id()
        self.snapshots[sid] = snap = Snapshot(sid, dataset_id, records, statuses, self.next_failure)
        self.next_failure = None
        self.triggers.append({"snapshot_id": sid, "query": query, "inputs": inputs, "via": via})
        return snap

    def _crawl_records(self, inputs: list[dict]) -> list[dict]:
        out = []
        for given in inputs:
            url = given["url"]
            if url in self.dead_urls:
                out.append({"timestamp": "2026-09-12T21:52:15.691Z", "input": given, "error_code": "dead_page",
                            "error": "The navigation resulted in a dead page (404 status code)"})
                continue
            html = self.pages.get(url) or doc_page(url)
            title = html.split("<title>")[1].split("</title>")[0] if "<title>" in html else ""
            text = " ".join(html.replace("<", " <").split())
            record = {"url": url, "page_title": title, "markdown": f"# {title}\n\n{text}", "html2text": text,
                      "page_html": html, "timestamp": "2026-02-02T11:37:05.827Z", "input": given}
            if url in self.markdown_only:
                del record["page_html"]
            out.append(record)
        return out

    def _trigger(self, query: dict, raw: bytes) -> tuple[int, Any]:
        got = self._inputs(query, raw)
        if isinstance(got, tuple):
            return got
        return 200, {"snapshot_id": self._start(query, got, "trigger").id}

    def _scrape(self, query: dict, raw: bytes) -> tuple[int, Any, dict, str | None]:
        got = self._inputs(query, raw)
        if isinstance(got, tuple):
            return (*got, {}, None)
        if len(got) > SCRAPE_MAX_INPUTS:
            return 400, {"error": f"Too many inputs: at most {SCRAPE_MAX_INPUTS} per request"}, {}, None
        snap = self._start(query, got, "scrape")
        if self.scrape_times_out:
            return 202, {"snapshot_id": snap.id, "message": "Your request is still in progress and cannot be "
                         "retrieved in this call. Use the provided Snapshot ID to track progress via the "
                         "Monitor Snapshot endpoint and download it once ready via the Download Snapshot "
                         "endpoint."}, {"retry-after": "10"}, None
        del self.snapshots[snap.id]                # answered inline: nothing left to download
        fmt = query.get("format", "ndjson")        # real captures without format were NDJSON
        return 200, serialise(snap.records, fmt, self.trailing_newline), {}, fmt

    def _cancel(self, sid: str) -> tuple[int, Any]:
        snap = self.snapshots.get(sid)
        if snap is None:
            return 404, {"error": "Snapshot not found"}
        if snap.seen in ("ready", "failed") or snap.cancelled:
            return 400, "Snapshot is not running"
        snap.cancelled = True
        self.cancels.append(sid)
        return 200, "OK"

    def _progress(self, sid: str) -> tuple[int, Any]:
        snap = self.snapshots.get(sid)
        if snap is None or snap.market:
            return 404, {"error": "Snapshot not found"}
        status = snap.statuses[min(snap.polls // self.polls_per_status, len(snap.statuses) - 1)]
        if snap.cancelled:                         # what Bright Data answers then is not documented
            status, snap.error_message = "failed", "Snapshot was cancelled"
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

    def _download(self, sid: str, query: dict, market: bool = False) -> tuple[int, Any, str]:
        snap = self.snapshots.get(sid)
        if snap is None or snap.market != market:
            return 404, {"error": "Snapshot not found"}, ""
        if market and (not snap.ready or snap.late_202s > 0):
            if snap.ready:
                snap.late_202s -= 1
            return 202, "Snapshot is building. Try again in a few minutes", "html"
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
        fmt = query.get("format", "jsonl" if market else "json")
        return 200, serialise(records, fmt, self.trailing_newline), fmt

    def _parts(self, sid: str, query: dict, market: bool = False) -> tuple[int, Any]:
        snap = self.snapshots.get(sid)
        if snap is None or snap.market != market:
            return 404, {"error": "Snapshot not found"} if not market else "snapshot not found"
        if not snap.ready:
            return 400, "Snapshot is not ready"
        size = int(query.get("batch_size", 0) or 0)
        if size < 1000:
            return 400, "Batch size must be at least 1000."
        return 200, {"parts": max(1, math.ceil(len(snap.records) / size))}

    # ---- marketplace
    def _list(self) -> tuple[int, Any]:
        return 200, [{"id": k, "name": v["name"], "size": len(v["records"])} for k, v in self.market.items()]

    def _metadata(self, dataset_id: str) -> tuple[int, Any]:
        data = self.market.get(dataset_id)
        if data is None:
            return 404, {"error": "Dataset not found"}
        names: list[str] = []
        for r in data["records"]:
            names.extend(k for k in r if k not in names)
        return 200, {"id": dataset_id, "fields": {n: {"type": "text", "active": True, "required": False,
                                                      "description": n} for n in names}}

    def _filter(self, query: dict, raw: bytes, content_type: str) -> tuple[int, Any]:
        files: dict[str, list] = {}
        if content_type.startswith("multipart/form-data"):
            form, files = _multipart(raw, content_type)
            body = {"dataset_id": query.get("dataset_id"), "filter": json.loads(form.get("filter", "null")),
                    "records_limit": int(query["records_limit"]) if query.get("records_limit") else None}
        else:
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                return 400, {"validation_errors": ['"value" must be of type object']}
        problems = _check_filter_body(body)
        if problems:
            return 400, {"validation_errors": problems}
        data = self.market.get(body["dataset_id"])
        if data is None:
            return 404, {"error": "Dataset not found"}
        try:
            matched = [r for r in data["records"] if body.get("filter") is None or _matches(r, body["filter"], files)]
        except KeyError as missing:
            return 400, {"validation_errors": [f'file {missing} is referenced by the filter but not uploaded']}
        if not matched:
            return 422, {"error": "Provided filter did not match any records"}
        if body.get("records_limit"):
            matched = matched[: body["records_limit"]]
        sid = "snap_" + _new_id()[2:]
        self.snapshots[sid] = Snapshot(sid, body["dataset_id"], matched, list(MARKET_STATUSES), market=True,
                                       late_202s=self.building_after_ready)
        self.filters.append({"snapshot_id": sid, **body, "files": files})
        return 200, {"snapshot_id": sid}

    def _market_status(self, sid: str) -> tuple[int, Any]:
        snap = self.snapshots.get(sid)
        if snap is None or not snap.market:
            return 404, "snapshot not found"
        status = snap.statuses[min(snap.polls // self.market_polls_per_status, len(snap.statuses) - 1)]
        snap.polls += 1
        snap.seen = status
        free = self.market[snap.dataset_id]["free"]
        size = len(snap.records) if status == "ready" else None
        return 200, {"id": sid, "created": "2026-12-01T10:00:00Z", "status": status,
                     "dataset_id": snap.dataset_id, "customer_id": "c_1", "dataset_size": size,
                     "file_size": len(serialise(snap.records, "jsonl")) if size is not None else None,
                     "cost": 0 if free or size is None else round(size * 2.5 / 1000, 4),
                     "error": None, "error_code": None, "warning": None, "warning_code": None,
                     "initiation_type": "api"}


def _check_filter_body(body) -> list[str]:
    if not isinstance(body, dict):
        return ['"value" must be of type object']
    problems = [f'"{k}" is not allowed' for k in body if k not in ("dataset_id", "filter", "records_limit")]
    if not body.get("dataset_id"):
        problems.append('"dataset_id" is required')
    limit = body.get("records_limit")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        problems.append('"records_limit" must be a positive number')
    if body.get("filter") is not None:
        problems += _check_filter(body["filter"], "filter", 1)
    return problems


LEAF_OPS = {"=", "!=", "<", "<=", ">", ">=", "in", "not_in", "includes", "not_includes",
            "array_includes", "not_array_includes"}


def _check_filter(node, at: str, depth: int) -> list[str]:
    if not isinstance(node, dict):
        return [f'"{at}" must be of type object']
    if depth > 3:
        return [f'"{at}" is nested deeper than 3']
    if node.get("operator") in ("and", "or"):
        allowed = {"operator", "filters", "combine_nested_fields"}
        problems = [f'"{at}.{k}" is not allowed' for k in node if k not in allowed]
        for i, child in enumerate(node.get("filters") or []):
            problems += _check_filter(child, f"{at}.filters[{i}]", depth + 1)
        return problems
    if node.get("operator") in ("is_null", "is_not_null"):
        return [f'"{at}.{k}" is not allowed' for k in node if k not in ("name", "operator")]
    problems = [f'"{at}.{k}" is not allowed' for k in node if k not in ("name", "operator", "value")]
    if node.get("operator") not in LEAF_OPS:
        problems.append(f'"{at}.operator" must be one of [{", ".join(sorted(LEAF_OPS))}]')
    return problems


def _matches(record: dict, node: dict, files: dict[str, list]) -> bool:
    op = node["operator"]
    if op in ("and", "or"):
        results = (_matches(record, child, files) for child in node["filters"])
        return all(results) if op == "and" else any(results)
    value = record
    for part in node["name"].split(":"):
        value = value.get(part) if isinstance(value, dict) else None
    if op in ("is_null", "is_not_null"):
        return (value is None) == (op == "is_null")
    want = node.get("value")
    if isinstance(want, str) and want in files:
        want = files[want]
    elif isinstance(want, str) and want.endswith((".csv", ".json")):
        raise KeyError(want)
    if op in ("=", "!="):
        return (value == want) == (op == "=")
    if op in ("<", "<=", ">", ">="):
        if value is None:
            return False
        return {"<": value < want, "<=": value <= want, ">": value > want, ">=": value >= want}[op]
    if op in ("in", "not_in"):
        return (value in want) == (op == "in")
    if op in ("includes", "not_includes"):
        wants = want if isinstance(want, list) else [want]
        hit = isinstance(value, str) and any(str(w).lower() in value.lower() for w in wants)
        return hit == (op == "includes")
    wants = want if isinstance(want, list) else [want]      # array_includes / not_array_includes
    hit = isinstance(value, list) and any(w in value for w in wants)
    return hit == (op == "array_includes")


def _multipart(raw: bytes, content_type: str) -> tuple[dict[str, str], dict[str, list]]:
    """A multipart/form-data body: its text fields, and each uploaded file as a list of values."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    form: dict[str, str] = {}
    files: dict[str, list] = {}
    for part in message.iter_parts():
        name, filename = part.get_param("name", header="content-disposition"), part.get_filename()
        data = part.get_payload(decode=True) or b""
        if filename:
            files[filename] = _value_list(filename, data)
        else:
            form[name] = data.decode()
    return form, files


def _value_list(filename: str, data: bytes) -> list:
    """CSV: a header naming the field, then one value per line. JSON: an array of {field: value}."""
    if filename.endswith(".json"):
        return [next(iter(item.values())) for item in json.loads(data)]
    rows = list(csv.reader(io.StringIO(data.decode())))
    return [row[0] for row in rows[1:] if row]


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
            if fault and fault.kind == "close":       # the answer is lost: the connection just closes
                self.close_connection = True
                return None
            if not auth_ok:
                return self._send(401, {"error": "Unauthorized" if endpoint == "trigger"
                                        else "User authentication is required"})
            sid = parts[3] if len(parts) > 3 else ""
            simple = {"trigger": lambda: fake._trigger(query, raw),
                      "progress": lambda: fake._progress(sid),
                      "parts": lambda: fake._parts(sid, query),
                      "cancel": lambda: fake._cancel(sid),
                      "list": fake._list,
                      "metadata": lambda: fake._metadata(parts[1]),
                      "filter": lambda: fake._filter(query, raw, self.headers.get("Content-Type", "")),
                      "market_status": lambda: fake._market_status(parts[2]),
                      "market_parts": lambda: fake._parts(parts[2], query, market=True)}
            if endpoint in simple:
                return self._send(*simple[endpoint]())
            if endpoint == "scrape":
                status, body, headers, fmt = fake._scrape(query, raw)
            elif endpoint == "market_download":
                status, body, fmt = fake._download(parts[2], query, market=True)
                headers = {}
            else:
                status, body, fmt = fake._download(sid, query)
                headers = {}
        ctype = "text/csv" if fmt == "csv" else "application/x-ndjson" if fmt in ("jsonl", "ndjson") \
            else "text/html" if fmt == "html" else None
        if fault and fault.kind == "drop":
            return self._send_dropped(body)
        if fault and fault.kind == "truncate":
            return self._send_truncated(body)
        if fault and fault.kind == "cut":
            return self._send_cut(body)
        if fake.chunked and status == 200:
            return self._send_chunked(body, ctype)
        self._send(status, body, headers, content_type=ctype)

    def _send(self, status: int, body: Any, headers: dict | None = None, content_type: str | None = None):
        if isinstance(body, (bytes, bytearray)):
            data, ctype = bytes(body), content_type or "application/json"
        elif isinstance(body, str):
            data, ctype = body.encode(), f"{content_type or 'text/plain'}; charset=utf-8"
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
    if parts[:1] != ["datasets"]:
        return None
    if parts[1:2] != ["v3"]:
        return _market_route(method, parts[1:])
    rest = parts[2:]
    if method == "POST" and rest in (["trigger"], ["scrape"]):
        return rest[0]
    if method == "GET" and len(rest) == 2 and rest[0] == "progress":
        return "progress"
    if method == "GET" and len(rest) == 2 and rest[0] == "snapshot":
        return "snapshot"
    if len(rest) == 3 and rest[0] == "snapshot" and (method, rest[2]) in (("GET", "parts"), ("POST", "cancel")):
        return rest[2]
    return None


def _market_route(method: str, rest: list[str]) -> str | None:
    if method == "GET" and rest == ["list"]:
        return "list"
    if method == "POST" and rest == ["filter"]:
        return "filter"
    if method == "GET" and len(rest) == 2 and rest[1] == "metadata":
        return "metadata"
    if method == "GET" and len(rest) >= 2 and rest[0] == "snapshots":
        tail = rest[2:]
        return {(): "market_status", ("download",): "market_download", ("parts",): "market_parts"}.get(tuple(tail))
    return None
