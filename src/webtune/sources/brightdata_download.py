"""Downloading a Bright Data snapshot (scraper or marketplace) into `<snapshot_id>.jsonl.gz`.

Streamed, whole or by parts, each part written to a temp file and renamed, so a dropped, cut or
truncated answer is fetched again and finished parts of an interrupted download are kept. "Not
ready" in any of its documented shapes (202, 409, a 400 saying so, a 2xx status object) is waited
out, even after the status said ready. Whatever format was asked for, the result is JSONL in gzip.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import ijson
import orjson
import requests
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..console import progress
from ..errors import WebtuneError
from .brightdata_http import Client, body_message

FORMATS = ("json", "jsonl", "ndjson", "csv")
DOWNLOAD_ATTEMPTS = 5        # a dropped or truncated download is fetched again from the start
MIN_BATCH_SIZE = 1000        # the API refuses smaller parts
CHUNK = 1 << 16
GZIP_LEVEL = 1               # 3x smaller than the download at a fraction of level 9's time
NOT_READY_KEYS = {"status", "message", "snapshot_id"}   # a 2xx "try again later" object


class _Transient(Exception):
    """A download attempt that failed in a way worth repeating (dropped, truncated, 5xx)."""


class _NotReady(Exception):
    """The snapshot, or this part of it, cannot be downloaded yet."""


class Downloader:
    """`data_path` / `parts_path`: the endpoint paths with `{id}` (scraper and marketplace differ)."""

    def __init__(self, client: Client, console: Console, data_path: str, parts_path: str,
                 interval: float, before_request: Callable[[], None] = lambda: None):
        self.client, self.console, self.cfg = client, console, client.cfg
        self.data_path, self.parts_path = data_path, parts_path
        self.interval, self.before_request = interval, before_request
        self.backoff = float(self.cfg.get("retry_backoff", 2.0))

    def download(self, snapshot_id: str, fmt: str, raw_dir: Path) -> tuple[Path, int]:
        final = raw_dir / f"{snapshot_id}.jsonl.gz"
        batch = int(self.cfg.batch_size or 0)
        if 0 < batch < MIN_BATCH_SIZE:
            raise WebtuneError(f"source.brightdata.batch_size={batch}: Bright Data needs at least "
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
        with progress(*columns, console=self.console) as bar:
            for piece, extra in pieces:
                if piece.exists():          # a finished part of an interrupted download
                    lines += count_lines(piece)
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
        deadline = time.monotonic() + float(self.cfg.poll_timeout)
        while True:
            try:
                return fetch()
            except _NotReady:
                if time.monotonic() + self.interval > deadline:
                    raise WebtuneError(f"the snapshot stayed 'not ready' for download longer than "
                                       f"{self.cfg.poll_timeout:g}s (source.brightdata.poll_timeout); "
                                       "`webtune resume RUN_DIR` tries again") from None
                time.sleep(self.interval)

    def _parts(self, snapshot_id: str, fmt: str, batch: int) -> int:
        self.before_request()
        try:
            resp = self.client.request("GET", self.parts_path.format(id=snapshot_id), "parts request",
                                       params={"format": fmt, "batch_size": batch})
        except requests.RequestException as err:
            raise WebtuneError(f"could not ask Bright Data how many parts snapshot {snapshot_id} has "
                               f"({type(err).__name__}); resume the run to try again") from None
        if resp.status_code in (202, 409) or (resp.status_code == 400 and
                                              "not ready" in body_message(resp).lower()):
            raise _NotReady()
        if resp.status_code != 200:
            raise self.client.error(resp, "parts request", snapshot_gone(snapshot_id))
        try:
            return int(resp.json()["parts"])
        except (ValueError, KeyError, TypeError):
            raise WebtuneError(f"the parts request for snapshot {snapshot_id} answered "
                               f"{body_message(resp)!r} without a parts count") from None

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
        self.before_request()
        try:
            resp = self.client.request("GET", self.data_path.format(id=snapshot_id), "download",
                                       params={"format": fmt, **extra}, stream=True)
        except requests.RequestException as err:
            raise _Transient(type(err).__name__) from None
        tmp = piece.with_name(piece.name + ".tmp")
        with resp:
            code = resp.status_code
            if code in (202, 409) or (code == 400 and "not ready" in body_message(resp).lower()):
                raise _NotReady()
            if code >= 500:
                raise _Transient(f"HTTP {code}: {body_message(resp)}")
            if code == 400 and "empty" in body_message(resp).lower():
                chunks: Iterator[bytes] = iter(())       # "Snapshot is empty": no records
            elif code != 200:
                raise self.client.error(resp, "download", snapshot_gone(snapshot_id))
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
                lines = write_gz(tmp, lambda gz: CONVERTERS[fmt](counted, gz, check_tail=not delimited))
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


def snapshot_gone(snapshot_id: str) -> str:
    return (f"unknown Bright Data snapshot {snapshot_id!r}: it may have expired (kept 16-30 days) "
            "or belong to another account; check source.brightdata.snapshot_id, or start a new run")


def write_gz(path: Path, fill: Callable[[Any], int]) -> int:
    """`fill(gz)` writes JSONL into a reproducible gzip stream at `path`; returns its line count."""
    with open(path, "wb") as fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=GZIP_LEVEL) as gz:
            lines = fill(gz)
        fh.flush()
        os.fsync(fh.fileno())
    return lines


def save_inline(body: bytes, raw_dir: Path, prefix: str) -> tuple[Path, str, int]:
    """Records that came inline (a sync scrape's 200: NDJSON, a JSON array, one object or nothing)
    as `<prefix><hash of the body>.jsonl.gz`; returns the path, that id and the record count."""
    snapshot_id = prefix + hashlib.sha256(body).hexdigest()[:16]
    final = raw_dir / f"{snapshot_id}.jsonl.gz"
    tmp = final.with_name(final.name + ".tmp")
    lines = write_gz(tmp, lambda gz: _json_to_gz(iter([body]), gz, check_tail=False))
    os.replace(tmp, final)
    return final, snapshot_id, lines


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
    items = ijson.items(reader, "item" if head == b"[" else "", use_float=True, multiple_values=head != b"[")
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


CONVERTERS = {"jsonl": _jsonl_to_gz, "ndjson": _jsonl_to_gz, "json": _json_to_gz, "csv": _csv_to_gz}


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


def _counting(chunks: Iterable[bytes], bar, task) -> Iterator[bytes]:
    for chunk in chunks:
        bar.advance(task, len(chunk))
        yield chunk


def count_lines(path: Path) -> int:
    with gzip.open(path, "rb") as fh:
        return sum(1 for _ in fh)
