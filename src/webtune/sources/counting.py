"""What each raw file holds, counted at the byte level by readers of their own.

The ledger stage checks the final ledger against these counts, file by file: every line, array
item, CSV row, page or snapshot record a file holds must have exactly one ledger line (`#1..#n`),
so a record the parser dropped without an event fails the run instead of vanishing. The counters
share no code with the parsers in files.py / brightdata.py / urls.py / general.py: JSONL lines are
newline bytes, JSON array items come from a small tokenizer over the bytes (not ijson), CSV rows
from a bare csv.reader pass, transcript cues from their `-->` timing lines.
"""
from __future__ import annotations

import csv
import gzip
import mmap
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

BLANK = b" \t\r\n\xef\xbb\xbf"


def entry(unit: str, n: int | None, first: int = 1) -> dict:
    """n ids `#first..#first+n-1` expected (n None: at least one, numbered from `first`)."""
    return {"unit": unit, "n": n, "first": first}


def count(cfg, paths: list[Path]) -> dict[str, dict]:
    counter = {"files": _files, "brightdata": _brightdata, "brightdata_dataset": _brightdata, "urls": _urls,
               "hf": _hf}[cfg.kind]
    return counter(cfg, paths)


# ---------------------------------------------------------------- per kind
def _files(cfg, paths: list[Path]) -> dict[str, dict]:
    from . import files
    fc = files.plain(cfg.files)
    base = files._base(fc, paths)
    out = {}
    for path in paths:
        fmt = files.format_of(path, fc.format)
        key = f"{cfg.name}:{files.relative(path, base)}"
        if fmt == "jsonl":
            out[key] = entry("lines", jsonl_lines(path))
        elif fmt == "json":
            out[key] = _json_entry(path, fc.json_key)
        elif fmt == "csv":
            out[key] = _csv_entry(path, fc)
        elif fmt == "html":
            out[key] = entry("pages", 1)
        else:
            out[key] = {**entry("windows", None), "cues": cues(path)}
    return out


def _brightdata(cfg, paths: list[Path]) -> dict[str, dict]:
    return {f"{cfg.name}:{Path(p).name.split('.')[0]}": entry("records", gz_lines(p))
            for p in paths if Path(p).name.endswith(".jsonl.gz")}


def _urls(cfg, paths: list[Path]) -> dict[str, dict]:
    out = {}
    for path in (Path(p) for p in paths if Path(p).name == "index.jsonl"):
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    out[f"{cfg.name}:{orjson.loads(line)['url']}"] = entry("pages", 1)
    return out


def _hf(cfg, paths: list[Path]) -> dict[str, dict]:
    where = cfg.hf.path if not cfg.hf.name else f"{cfg.hf.path}/{cfg.hf.name}"
    return {f"{cfg.name}:{where}": entry("rows", sum(gz_lines(p) for p in paths))}


# ---------------------------------------------------------------- byte-level counters
def jsonl_lines(path: Path) -> int:
    """Lines of a JSONL file (a last line without a newline counts); an empty file is one record
    (its `empty_file` rejection)."""
    n, last, content = 0, b"\n", False
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
            content = content or bool(chunk.strip(BLANK))
    if not content:
        return 1
    return n + (last != b"\n")


def gz_lines(path: Path) -> int:
    n, last = 0, b"\n"
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def cues(path: Path) -> int:
    """Timing lines (`00:00:01.000 --> 00:00:02.000`) of a VTT or SRT file."""
    with open(path, "rb") as fh:
        return sum(1 for line in fh if b"-->" in line)


def _csv_entry(path: Path, fc) -> dict:
    with open(path, encoding="utf-8-sig" if fc.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
              else fc.encoding, errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else fc.csv_delimiter)
        try:
            header = next(reader, None)
        except csv.Error:
            return entry("rows", 1, first=0)  # the header row itself is the rejection
        if not header:
            return entry("rows", 1)           # an empty file: one `empty_file` rejection
        n = 0
        while True:
            try:
                next(reader)
            except StopIteration:
                return entry("rows", n)
            except csv.Error:
                pass
            n += 1


def _json_entry(path: Path, key: str | None) -> dict:
    found = json_items(path, key)
    if found.n is None:
        return entry("objects", 1)            # one object, empty, or not JSON: one record or rejection
    return {**entry("items", found.n + (found.broke_at is not None)), "complete": found.n,
            "broke_at": found.broke_at}


# ---------------------------------------------------------------- JSON array items
@dataclass
class JsonItems:
    n: int | None               # complete items of the array (None: the file holds no such array)
    broke_at: int | None        # byte offset where the bytes stop being valid JSON (None: intact)


_TOKEN = re.compile(rb'\s*(?:("(?:[^"\\]|\\.)*")|([\[\]{},:])|(-?[0-9][0-9eE.+-]*|true|false|null)|(\S))', re.S)


def json_items(path: Path, key: str | None = None) -> JsonItems:
    """The complete items of the top-level array (or of the array at `key` of the top-level
    object), by a tokenizer over the bytes; where the JSON breaks, the offset of the break."""
    size = Path(path).stat().st_size
    if size == 0:
        return JsonItems(None, None)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        start = 3 if mm[:3] == b"\xef\xbb\xbf" else 0
        return _Scan(key).run(_TOKEN.finditer(mm, start), size)


class _Scan:
    """A small state machine: brackets must match; inside the counted array, items and commas
    must alternate. Items are counted as they complete."""

    def __init__(self, key: str | None):
        self.key, self.stack, self.target = key, [], None
        self.n, self.expect_item, self.seen_array = 0, True, False
        self.last_key, self.after_colon = None, False

    def run(self, tokens, size: int) -> JsonItems:
        for m in tokens:
            if not self.step(m):
                return JsonItems(self.n if self.seen_array else None, m.start(m.lastindex))
        if self.stack:  # the file ends inside the array: truncated
            return JsonItems(self.n if self.seen_array else None, size)
        return JsonItems(self.n if self.seen_array else None, None)

    def step(self, m) -> bool:
        string, punct, scalar, bad = m.groups()
        if bad is not None:
            return False
        depth = len(self.stack)
        if self.target is not None and depth == self.target:
            return self._in_array(string, punct, scalar)
        if punct in (b"[", b"{"):
            self._open(punct, depth)
        elif punct in (b"]", b"}"):
            return self._close(punct, depth)
        elif depth == 1 and self.stack[0] == "{":
            self._object_member(string, punct)
        elif depth == 0 and self.seen_array:
            return False  # something after the array closed
        return True

    def _open(self, punct: bytes, depth: int) -> None:
        self.stack.append(punct.decode())
        top_array = depth == 0 and punct == b"["  # the reader takes a top-level array whatever json_key says
        keyed = (depth == 1 and punct == b"[" and self.after_colon and self.key is not None
                 and self.last_key == self.key and not self.seen_array)
        if top_array or keyed:
            self.target, self.seen_array, self.expect_item = depth + 1, True, True
        self.after_colon = False

    def _close(self, punct: bytes, depth: int) -> bool:
        if not self.stack or {"]": "[", "}": "{"}[punct.decode()] != self.stack[-1]:
            return False
        self.stack.pop()
        if self.target is not None and len(self.stack) == self.target:
            self.n += 1  # a container item just completed
            self.expect_item = False
        return True

    def _object_member(self, string, punct) -> None:
        if punct == b":":
            self.after_colon = True
        elif string is not None and not self.after_colon:
            self.last_key = orjson.loads(string)
        else:
            self.after_colon = False

    def _in_array(self, string, punct, scalar) -> bool:
        if punct == b"]":
            if self.expect_item and self.n > 0:
                return False  # `[1,]`
            self.stack.pop()
            self.target = None
            return True
        if punct == b",":
            if self.expect_item:
                return False
            self.expect_item = True
            return True
        if not self.expect_item or punct in (b"}", b":"):
            return False
        if punct in (b"[", b"{"):
            self.stack.append(punct.decode())
            return True
        self.n += 1  # a string or scalar item
        self.expect_item = False
        return True
