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
import io
from pathlib import Path

import orjson

from ..config import plain
from ..fileio import damaged, open_input
from .json_scan import json_items

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
    fc = plain(cfg.files)
    base = files.base_dir(fc, paths)
    out = {}
    for path in paths:
        fmt = files.format_of(path, fc.format)
        key = f"{cfg.name}:{files.relative(path, base)}"
        if damaged(path):
            out[key] = entry("files", 1)          # a damaged .gz: its one corrupt_compressed rejection
        elif fmt == "jsonl":
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
    with open_input(path) as fh:
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
    with open_input(path) as fh:
        return sum(1 for line in fh if b"-->" in line)


def _csv_entry(path: Path, fc) -> dict:
    with io.TextIOWrapper(open_input(path), encoding=fc.encoding, errors="surrogateescape", newline="") as fh:
        tsv = path.name.lower().removesuffix(".gz").endswith(".tsv")
        reader = csv.reader(fh, delimiter="\t" if tsv else fc.csv_delimiter)
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
