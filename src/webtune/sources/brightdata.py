"""Bright Data Web Scraper API (datasets v3): trigger once, poll, download, stream records.

Wire contract: shared/contracts/brightdata.md. A trigger bills, so it is sent at most once per run
and never retried; its snapshot id is written to the run directory before polling, so a killed run
resumes the same snapshot. Everything after the trigger (progress, download) is idempotent and
retried. The download is kept gzip-compressed as JSONL in data/raw/ whatever format was asked for.
"""
from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import ijson
import orjson
import requests
from omegaconf import DictConfig, ListConfig, OmegaConf
from requests.adapters import HTTPAdapter
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TransferSpeedColumn)
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from urllib3.util import Retry

from .. import __version__
from ..errors import WebtuneError
from ..records import Record, Rejection, record_id

USER_AGENT = f"webtune/{__version__} (+https://github.com/webtune/webtune)"
FORMATS = ("json", "jsonl", "ndjson", "csv")
STATE_FILE = "snapshot.json"
MAX_STATUS_RETRIES = 3       # per request: 25 429s within 5 minutes get the caller's IP blocked
DOWNLOAD_ATTEMPTS = 5        # a dropped or truncated download is fetched again from the start
UNANSWERED_POLLS = 10        # consecutive polls without an answer before giving up
MIN_BATCH_SIZE = 1000        # the API refuses smaller parts
CHUNK = 1 << 16
GZIP_LEVEL = 1               # 3x smaller than the download at a fraction of level 9's time
NOT_READY_KEYS = {"status", "message", "snapshot_id"}   # a 2xx "try again later" object
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")         # snapshot ids become file names


class _Transient(Exception):
    """A download attempt that failed in a way worth repeating (dropped, truncated, 5xx)."""


class _NotReady(Exception):
    """The snapshot, or this part of it, cannot be downloaded yet."""


# ---------------------------------------------------------------- public interface
def acquire(cfg: DictConfig, source_name: str, raw_dir: Path, console: Console | None = None) -> Path:
    """Get the snapshot into `raw_dir/<snapshot_id>.jsonl.gz` and return that path.

    Triggers only when neither `raw_dir/snapshot.json` (a resumed run) nor `cfg.snapshot_id`
    names a snapshot already."""
    raw_dir = Path(raw_dir)
    token = None
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        fmt = _check_format(cfg)
        state = _read_state(raw_dir)
        snapshot_id = _known_snapshot(cfg, state, raw_dir)
        if snapshot_id and (raw_dir / f"{snapshot_id}.jsonl.gz").exists():
            return raw_dir / f"{snapshot_id}.jsonl.gz"        # already downloaded: no network
        token = _token(cfg)
        console = console or Console(stderr=True)
        api = _Api(cfg, token, console)
        if snapshot_id is None:
            inputs = _load_inputs(cfg)
            snapshot_id = api.trigger(inputs)
            state = {"snapshot_id": snapshot_id, "dataset_id": cfg.dataset_id,
                     "triggered_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            _write_json_atomic(raw_dir / STATE_FILE, state)
            console.print(f"[bold]{source_name}[/]: triggered Bright Data snapshot {snapshot_id} "
                          f"({len(inputs)} inputs); saved in {raw_dir / STATE_FILE}")
        elif state is None:
            state = {"snapshot_id": snapshot_id, "dataset_id": cfg.dataset_id, "triggered_at": None}
            _write_json_atomic(raw_dir / STATE_FILE, state)
        progress = api.wait_ready(snapshot_id, raw_dir)
        state["progress"] = {k: progress[k] for k in
                             ("status", "records", "errors", "error_codes", "collection_duration")
                             if k in progress}
        _write_json_atomic(raw_dir / STATE_FILE, state)
        path, lines = api.download(snapshot_id, fmt, raw_dir)
        console.print(f"[bold]{source_name}[/]: snapshot {snapshot_id}: {lines} records"
                      f" downloaded to {path}" + ("  (the snapshot is empty)" if lines == 0 else ""))
        return path
    except WebtuneError as err:
        raise WebtuneError(_redact(f"source {source_name!r}: {err}", token)) from None


def iter_records(path: Path, source_name: str, snapshot_id: str,
                 primary_fields: Iterable[str]) -> Iterator[Record | Rejection]:
    """Stream a downloaded snapshot: one Record per data line, a Rejection for everything else.

    Ids are `<source_name>:<snapshot_id>#<1-based line>`; blank lines carry nothing and are skipped."""
    primary = list(primary_fields)
    try:
        with gzip.open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                rid = record_id(source_name, snapshot_id, n)
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    yield Rejection(rid, source_name, "malformed_json",
                                    f"{path.name} line {n}: {err}: {line[:200].decode('utf-8', 'replace')}")
                    continue
                if not isinstance(obj, dict):
                    yield Rejection(rid, source_name, "not_an_object",
                                    f"{path.name} line {n}: a JSON {type(obj).__name__}, not an object")
                elif _is_error_record(obj, primary):
                    code = obj.get("error_code") or "unknown"
                    yield Rejection(rid, source_name, f"brightdata_error:{code}", _error_detail(obj))
                else:
                    yield Record(rid, source_name, obj)
    except (OSError, EOFError) as err:
        raise WebtuneError(f"source {source_name!r}: {path} is damaged ({err}); delete it and resume "
                           "the run to download the snapshot again") from None


# ---------------------------------------------------------------- the HTTP client
class _Api:
    def __init__(self, cfg: DictConfig, token: str, console: Console):
        self.cfg, self.console = cfg, console
        self.base = cfg.base_url.rstrip("/") + "/datasets/v3"
        self.timeout = float(cfg.timeout)
        self.backoff = float(cfg.get("retry_backoff", 2.0))
        gets = Retry(total=MAX_STATUS_RETRIES + 3, connect=3, read=2, status=MAX_STATUS_RETRIES,
                     other=0, allowed_methods={"GET"}, status_forcelist={429, 500, 502, 503, 504},
                     backoff_factor=self.backoff, respect_retry_after_header=True,
                     raise_on_status=False)
        self.session = _session(token, gets)
        self.post_session = _session(token, Retry(total=0, raise_on_status=False))  # a trigger bills

    # ---- trigger: exactly one POST, never repeated
    def trigger(self, inputs: list[dict]) -> str:
        cfg = self.cfg
        params = {"dataset_id": cfg.dataset_id, "include_errors": "true" if cfg.include_errors else "false"}
        for key in ("type", "discover_by", "limit_per_input"):
            if cfg[key]:
                params[key] = str(cfg[key])
        not_retried = ("not retried automatically because each trigger bills: look for a new snapshot "
                       "in the Bright Data control panel and set brightdata.snapshot_id to it, or run again")
        try:
            resp = self.post_session.post(f"{self.base}/trigger", params=params, data=orjson.dumps(inputs),
                                          headers={"Content-Type": "application/json"},
                                          timeout=self.timeout)
        except requests.RequestException as err:
            raise WebtuneError(f"the trigger request for dataset {cfg.dataset_id} failed "
                               f"({type(err).__name__}); {not_retried}") from None
        code = resp.status_code
        if code == 429:
            raise WebtuneError(f"Bright Data refused the trigger for dataset {cfg.dataset_id} "
                               f"(429: {_body_message(resp)}); not retried automatically because a trigger "
                               "bills and repeated 429s get the IP blocked: retry the run in a few minutes")
        if code >= 500:
            raise WebtuneError(f"Bright Data answered {code} to the trigger for dataset {cfg.dataset_id} "
                               f"({_body_message(resp)}); {not_retried}")
        if code != 200:
            raise self._error(resp, "trigger", f"unknown Bright Data dataset {cfg.dataset_id!r}: "
                                               "check brightdata.dataset_id")
        try:
            snapshot_id = resp.json()["snapshot_id"]
        except (ValueError, KeyError, TypeError):
            raise WebtuneError(f"the trigger for dataset {cfg.dataset_id} answered 200 without a "
                               f"snapshot_id ({_body_message(resp)}); {not_retried}") from None
        if not isinstance(snapshot_id, str) or not _SAFE_ID.match(snapshot_id):
            raise WebtuneError(f"the trigger answered an unusable snapshot id {snapshot_id!r}; {not_retried}")
        return snapshot_id

    # ---- progress: poll until ready or failed
    def wait_ready(self, snapshot_id: str, raw_dir: Path) -> dict:
        interval, limit = float(self.cfg.poll_interval), float(self.cfg.poll_timeout)
        start = time.monotonic()
        columns = (SpinnerColumn(), TextColumn("snapshot {task.fields[id]}"),
                   TextColumn("[cyan]{task.fields[status]}"), TimeElapsedColumn(),
                   TextColumn("records: {task.fields[records]}"))
        with Progress(*columns, console=self.console) as bar:
            task = bar.add_task("poll", id=snapshot_id, status="…", records="-", total=None)
            unanswered = 0
            while True:
                body = self._progress(snapshot_id)
                unanswered = 0 if body else unanswered + 1
                if unanswered >= UNANSWERED_POLLS:
                    raise WebtuneError(f"no usable answer from {self.base}/progress/{snapshot_id} in "
                                       f"{UNANSWERED_POLLS} polls (connection errors or 5xx); check "
                                       "brightdata.base_url and the network, then resume the run")
                status = str(body.get("status", "?")) if body else "(no answer, retrying)"
                bar.update(task, status=status, records=body.get("records", "-") if body else "-")
                if status == "ready":
                    return body
                if status == "failed":
                    reason = next((body[k] for k in ("error_message", "error", "message", "failure_reason")
                                   if body.get(k)), "no reason given")
                    raise WebtuneError(f"Bright Data snapshot {snapshot_id} failed: {reason}; check "
                                       "the inputs, then start a new run (it triggers a new snapshot)")
                if time.monotonic() - start + interval > limit:
                    raise WebtuneError(
                        f"snapshot {snapshot_id} is still {status} after {limit:g}s "
                        f"(brightdata.poll_timeout); it keeps running at Bright Data and its id is "
                        f"saved in {raw_dir / STATE_FILE}: `webtune resume RUN_DIR` continues it "
                        "without triggering again")
                time.sleep(interval)

    def _progress(self, snapshot_id: str) -> dict | None:
        """The progress body, or None when this poll failed in a transient way."""
        try:
            resp = self.session.get(f"{self.base}/progress/{snapshot_id}", timeout=self.timeout)
        except requests.RequestException:
            return None
        if resp.status_code >= 500:
            return None
        if resp.status_code != 200:
            raise self._error(resp, "progress check", self._snapshot_gone(snapshot_id))
        try:
            body = resp.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    # ---- download: streamed, by parts when asked, retried, converted to jsonl.gz
    def download(self, snapshot_id: str, fmt: str, raw_dir: Path) -> tuple[Path, int]:
        final = raw_dir / f"{snapshot_id}.jsonl.gz"
        batch = int(self.cfg.batch_size or 0)
        if 0 < batch < MIN_BATCH_SIZE:
            raise WebtuneError(f"brightdata.batch_size={batch}: Bright Data needs at least "
                               f"{MIN_BATCH_SIZE} records per part (or 0 for one download)")
        if batch:
            n_parts = self._until_ready(lambda: self._parts(snapshot_id, fmt, batch))
            pieces = [(raw_dir / f".{snapshot_id}.b{batch}.p{k}.jsonl.gz", {"batch_size": batch, "part": k})
                      for k in range(1, n_parts + 1)]
        else:
            pieces = [(raw_dir / f".{snapshot_id}.whole.jsonl.gz", {})]
        lines = 0
        columns = (TextColumn("download {task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console) as bar:
            for piece, extra in pieces:
                if piece.exists():          # a finished part of an interrupted download
                    lines += _count_lines(piece)
                    continue
                label = f"{snapshot_id}" + (f" part {extra['part']}/{len(pieces)}" if extra else "")
                lines += self._until_ready(lambda: self._fetch_retrying(snapshot_id, fmt, extra, piece,
                                                                        bar, label))
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as out:        # gzip members concatenate into one valid gzip file
            for piece, _ in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
        for piece, _ in pieces:
            piece.unlink()
        return final, lines

    def _until_ready(self, fetch):
        """Repeat `fetch` while the snapshot says "not ready" (202, 409, a status object)."""
        interval, deadline = float(self.cfg.poll_interval), time.monotonic() + float(self.cfg.poll_timeout)
        while True:
            try:
                return fetch()
            except _NotReady:
                if time.monotonic() + interval > deadline:
                    raise WebtuneError(f"the snapshot stayed 'not ready' for download longer than "
                                       f"{self.cfg.poll_timeout:g}s (brightdata.poll_timeout); "
                                       "`webtune resume RUN_DIR` tries again") from None
                time.sleep(interval)

    def _parts(self, snapshot_id: str, fmt: str, batch: int) -> int:
        try:
            resp = self.session.get(f"{self.base}/snapshot/{snapshot_id}/parts",
                                    params={"format": fmt, "batch_size": batch}, timeout=self.timeout)
        except requests.RequestException as err:
            raise WebtuneError(f"could not ask Bright Data how many parts snapshot {snapshot_id} has "
                               f"({type(err).__name__}); resume the run to try again") from None
        if resp.status_code in (202, 409) or (resp.status_code == 400 and
                                              "not ready" in _body_message(resp).lower()):
            raise _NotReady()
        if resp.status_code != 200:
            raise self._error(resp, "parts request", self._snapshot_gone(snapshot_id))
        try:
            return int(resp.json()["parts"])
        except (ValueError, KeyError, TypeError):
            raise WebtuneError(f"the parts request for snapshot {snapshot_id} answered "
                               f"{_body_message(resp)!r} without a parts count") from None

    def _fetch_retrying(self, snapshot_id, fmt, extra, piece, bar, label) -> int:
        retrying = Retrying(stop=stop_after_attempt(DOWNLOAD_ATTEMPTS), reraise=True,
                            wait=wait_exponential(multiplier=self.backoff, max=60),
                            retry=retry_if_exception_type(_Transient))
        try:
            for attempt in retrying:
                with attempt:
                    return self._fetch(snapshot_id, fmt, extra, piece, bar, label)
        except _Transient as err:
            raise WebtuneError(f"downloading snapshot {snapshot_id} failed {DOWNLOAD_ATTEMPTS} times "
                               f"(last: {err}); resume the run to try again (Bright Data keeps "
                               "snapshots for 16-30 days)") from None

    def _fetch(self, snapshot_id, fmt, extra, piece, bar, label) -> int:
        """One download attempt into `piece` (via a temp file); returns the number of lines."""
        try:
            resp = self.session.get(f"{self.base}/snapshot/{snapshot_id}", params={"format": fmt, **extra},
                                    stream=True, timeout=self.timeout)
        except requests.RequestException as err:
            raise _Transient(type(err).__name__) from None
        tmp = piece.with_name(piece.name + ".tmp")
        with resp:
            code = resp.status_code
            if code in (202, 409):
                raise _NotReady()
            if code >= 500:
                raise _Transient(f"HTTP {code}: {_body_message(resp)}")
            if code == 400 and "empty" in _body_message(resp).lower():
                chunks: Iterator[bytes] = iter(())       # "Snapshot is empty": no records
            elif code != 200:
                raise self._error(resp, "download", self._snapshot_gone(snapshot_id))
            else:
                chunks = resp.iter_content(CHUNK)
            size = resp.headers.get("Content-Length")
            task = bar.add_task(label, total=int(size) if size and size.isdigit() else None)
            try:
                first = next(chunks, b"")
                if _is_status_object(first):
                    raise _NotReady()
                counted = _counting(itertools.chain([first], chunks), bar, task)
                delimited = size is not None or resp.headers.get("Transfer-Encoding") == "chunked"
                with open(tmp, "wb") as fh:
                    with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0,
                                       compresslevel=GZIP_LEVEL) as gz:
                        lines = _CONVERTERS[fmt](counted, gz, check_tail=not delimited)
                    fh.flush()
                    os.fsync(fh.fileno())
            except (requests.RequestException, ijson.JSONError, csv.Error, UnicodeDecodeError) as err:
                tmp.unlink(missing_ok=True)
                raise _Transient(f"{type(err).__name__}: {str(err)[:200]}") from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                bar.remove_task(task)
        os.replace(tmp, piece)
        return lines

    # ---- errors for people
    def _snapshot_gone(self, snapshot_id: str) -> str:
        return (f"unknown Bright Data snapshot {snapshot_id!r}: it may have expired (kept 16-30 days) "
                "or belong to another account; check brightdata.snapshot_id, or start a new run")

    def _error(self, resp: requests.Response, what: str, not_found: str) -> WebtuneError:
        code, msg, env = resp.status_code, _body_message(resp), self.cfg.api_key_env
        if code == 400:
            text = f"Bright Data rejected the {what} (400): {msg}"
        elif code == 401:
            text = f"Bright Data refused the API token on the {what} (401: {msg}): check the token in ${env}"
        elif code == 402:
            text = (f"the Bright Data account cannot pay for the {what} (402): {msg}; "
                    "add funds, then run again")
        elif code == 403:
            text = f"Bright Data denied access on the {what} (403: {msg}): check the permissions of ${env}"
        elif code == 404:
            text = f"{not_found} (404: {msg})"
        elif code == 429:
            text = (f"Bright Data is rate-limiting the {what} (429: {msg}) after {MAX_STATUS_RETRIES} "
                    "retries; wait a few minutes, then resume the run (repeated 429s get the IP blocked)")
        else:
            text = f"Bright Data answered {code} to the {what}: {msg}"
        return WebtuneError(text)


# ---------------------------------------------------------------- format converters
def _jsonl_to_gz(chunks: Iterator[bytes], gz, check_tail: bool) -> int:
    lines, tail = 0, b""
    for chunk in chunks:
        gz.write(chunk)
        lines += chunk.count(b"\n")
        cut = chunk.rfind(b"\n")
        tail = tail + chunk if cut < 0 else chunk[cut + 1:]
    if tail.strip():
        if check_tail:      # no Content-Length, no chunking: a cut-off last line is all we can see
            try:
                orjson.loads(tail)
            except orjson.JSONDecodeError:
                raise ijson.IncompleteJSONError("the body ends in the middle of a line") from None
        gz.write(b"\n")
        lines += 1
    return lines


def _json_to_gz(chunks: Iterator[bytes], gz, check_tail: bool) -> int:
    reader = io.BufferedReader(_IterReader(chunks), CHUNK)
    head = reader.peek(CHUNK).lstrip()[:1]
    if not head:
        return 0                            # an empty body: an empty snapshot
    items = ijson.items(reader, "item" if head == b"[" else "", use_float=True)
    lines = 0
    for item in items:
        gz.write(orjson.dumps(item) + b"\n")
        lines += 1
    return lines


def _csv_to_gz(chunks: Iterator[bytes], gz, check_tail: bool) -> int:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))   # long transcripts exceed the 128 KiB default
    text = io.TextIOWrapper(io.BufferedReader(_IterReader(chunks), CHUNK), encoding="utf-8-sig", newline="")
    lines = 0
    for row in csv.DictReader(text, restkey="_extra_cells"):
        gz.write(orjson.dumps({k: _csv_cell(v) for k, v in row.items()}) + b"\n")
        lines += 1
    return lines


_CONVERTERS = {"jsonl": _jsonl_to_gz, "ndjson": _jsonl_to_gz, "json": _json_to_gz, "csv": _csv_to_gz}


def _csv_cell(value: Any) -> Any:
    """CSV flattens nested fields to JSON text and nulls to empty cells: undo both."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


class _IterReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, for ijson and csv."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._left:
            self._left = next(self._chunks, None)
            if self._left is None:
                self._left = b""
                return 0
        n = min(len(buf), len(self._left))
        buf[:n], self._left = self._left[:n], self._left[n:]
        return n


# ---------------------------------------------------------------- helpers
def _session(token: str, retry: Retry) -> requests.Session:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT})
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _token(cfg: DictConfig) -> str:
    token = os.environ.get(cfg.api_key_env, "").strip()
    if not token:
        raise WebtuneError(f"the environment variable {cfg.api_key_env} (brightdata.api_key_env) is not "
                           "set: export your Bright Data API token in it")
    return token


def _check_format(cfg: DictConfig) -> str:
    fmt = str(cfg.format).lower()
    if fmt not in FORMATS:
        raise WebtuneError(f"brightdata.format={cfg.format!r} is not one of {', '.join(FORMATS)}")
    return fmt


def _read_state(raw_dir: Path) -> dict | None:
    path = raw_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        state = orjson.loads(path.read_bytes())
        if not isinstance(state, dict) or not _SAFE_ID.match(str(state.get("snapshot_id", ""))):
            raise ValueError("no usable snapshot_id")
    except ValueError as err:
        raise WebtuneError(f"{path} is damaged ({err}); put the snapshot id back in it, or set "
                           "brightdata.snapshot_id") from None
    return state


def _known_snapshot(cfg: DictConfig, state: dict | None, raw_dir: Path) -> str | None:
    given = cfg.snapshot_id
    if given is not None and not _SAFE_ID.match(str(given)):
        raise WebtuneError(f"brightdata.snapshot_id={given!r} does not look like a snapshot id (s_..., sd_...)")
    if state and given and state["snapshot_id"] != given:
        raise WebtuneError(f"brightdata.snapshot_id={given} but {raw_dir / STATE_FILE} records snapshot "
                           f"{state['snapshot_id']}: use a new run directory for another snapshot")
    return state["snapshot_id"] if state else given


def _load_inputs(cfg: DictConfig) -> list[dict]:
    if not cfg.dataset_id:
        raise WebtuneError("brightdata.dataset_id is empty: set it (gd_...), e.g. gd_l7q7dkf244hwjntr0 "
                           "for Amazon products")
    inline = OmegaConf.to_container(cfg.inputs, resolve=True) if isinstance(cfg.inputs, ListConfig) \
        else list(cfg.inputs or [])
    if inline and cfg.inputs_file:
        raise WebtuneError("set brightdata.inputs or brightdata.inputs_file, not both")
    where = [f"brightdata.inputs[{i}]" for i in range(len(inline))]
    if cfg.inputs_file:
        inline, where = _read_inputs_file(Path(cfg.inputs_file))
    inputs = []
    for item, at in zip(inline, where):
        if isinstance(item, str):
            item = {"url": item}            # a bare URL is shorthand for {url: ...}
        if not isinstance(item, dict):
            raise WebtuneError(f"{at}: an input must be an object such as {{url: https://...}}, "
                               f"got {type(item).__name__}")
        inputs.append(item)
    if not inputs:
        raise WebtuneError("no Bright Data inputs: set brightdata.inputs (a list such as "
                           "[{url: https://...}]) or brightdata.inputs_file, or brightdata.snapshot_id "
                           "to use a snapshot that exists")
    return inputs


def _read_inputs_file(path: Path) -> tuple[list, list[str]]:
    """A JSON array, or JSONL, of input objects."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WebtuneError(f"brightdata.inputs_file {path}: cannot read it ({err.strerror})") from None
    if data.lstrip()[:1] == b"[":
        try:
            items = orjson.loads(data)
        except orjson.JSONDecodeError as err:
            raise WebtuneError(f"brightdata.inputs_file {path}: not valid JSON ({err})") from None
        return items, [f"{path} item {i + 1}" for i in range(len(items))]
    items, where = [], []
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as err:
                raise WebtuneError(f"brightdata.inputs_file {path} line {n}: not valid JSON ({err})") from None
            where.append(f"{path} line {n}")
    return items, where


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _body_message(resp: requests.Response) -> str:
    """The useful part of an answer body: JSON or plain text, never assumed to be JSON."""
    text = resp.text.strip()
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        errors = body.get("errors") or body.get("validation_errors") or []
        for err in errors if isinstance(errors, list) else [errors]:
            if isinstance(err, (list, tuple)) and len(err) == 2:
                parts.append(f"field {err[0]!r}: {err[1]}")
            else:
                parts.append(str(err))
        if body.get("index") is not None:
            parts.append(f"input index {body['index']}")
        text = "; ".join(parts) or text
    text = " ".join(text.split())
    return (text[:400] + "…" if len(text) > 400 else text) or (resp.reason or "empty body")


def _is_status_object(chunk: bytes) -> bool:
    """A 2xx body that is only `{"status": ..., "message": ...}`: the snapshot is not ready."""
    head = chunk.strip()
    if not head.startswith(b"{") or len(head) > 4096:
        return False
    try:
        obj = orjson.loads(head)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and "status" in obj and set(obj) <= NOT_READY_KEYS


def _is_error_record(obj: dict, primary: list[str]) -> bool:
    if obj.get("error_code"):
        return True
    return bool(obj.get("error")) and not any(obj.get(f) not in (None, "", [], {}) for f in primary)


def _error_detail(obj: dict) -> str:
    given = obj.get("input")
    where = given.get("url") if isinstance(given, dict) and given.get("url") else given
    if not isinstance(where, str):
        where = orjson.dumps(where).decode()[:300] if where is not None else "not given"
    return f"{obj.get('error') or obj.get('error_code')} (input: {where})"


def _counting(chunks: Iterable[bytes], bar: Progress, task) -> Iterator[bytes]:
    for chunk in chunks:
        bar.advance(task, len(chunk))
        yield chunk


def _count_lines(path: Path) -> int:
    with gzip.open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
