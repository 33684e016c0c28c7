"""Local files as a source: JSON, JSONL, CSV, HTML pages, VTT and SRT transcripts.

Everything streams (ijson for JSON arrays, line by line for JSONL, row by row for CSV), so a file
of any size reads in bounded memory. Bad input becomes a Rejection naming file, line and problem;
it never raises and is never dropped. Record ids: `<source>:<path relative to root>#<n>` where n
is the 1-based line (JSONL), row (CSV, header = row 0), array index (JSON) or window (1 for a
whole page or transcript).

Sharding: the union over shards is every record exactly once and ids never depend on the shard
count. A JSONL file is split by byte range (each worker reads only its part); other formats are
dealt out by item (JSON, CSV) or by file (HTML, transcripts) modulo the shard count.

Hostile input (docs/hostile-input.md): every file is opened by `fileio.open_input` (a `.gz`
decompressed, a byte-order mark skipped); a JSON item nesting deeper than `json_scan.MAX_DEPTH` is a
`too_deep` rejection, found on ijson's event stream before the item is built; folders and `**` globs
are walked by `paths.walk`, which follows no link out of the folder and none into a folder it has seen.
"""
from __future__ import annotations

import codecs
import csv
import io
import os
import re
import sys
from pathlib import Path
from typing import Iterator

import orjson

from ..config import plain
from ..errors import WebtuneError
from ..fileio import atomic_path, compressed, damaged, open_input, uncompressed_name
from ..paths import locate, safe_glob, walk
from ..records import Record, Rejection, record_id
from .json_scan import MAX_DEPTH, JsonValues, TooDeep, json_items, too_deep

SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv",
            ".html": "html", ".htm": "html", ".xhtml": "html", ".vtt": "vtt", ".srt": "srt"}
FORMATS = ("auto", "json", "jsonl", "csv", "html", "vtt", "srt")
_GLOB_CHARS = re.compile(r"[*?\[]")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # cells over the default 131,072 characters


# ---------------------------------------------------------------- resolving paths
def resolve(cfg) -> list[Path]:
    """The files named by `cfg.paths` (files, directories, globs), sorted, each once."""
    if cfg.format not in FORMATS:
        raise WebtuneError(f"source.files.format={cfg.format!r} is not one of {', '.join(FORMATS)}")
    if not cfg.paths:
        raise WebtuneError("source.files.paths is empty: list the files, directories or globs to read")
    found: set[Path] = set()
    for spec in cfg.paths:
        spec = str(locate(spec))   # the working directory's file, else the shipped one
        if _GLOB_CHARS.search(spec):
            links: list[Path] = []
            matches = _readable(spec, [Path(p) for p in safe_glob(spec, links) if os.path.isfile(p)], links, cfg.format)
            if not matches:
                raise WebtuneError(f"source.files.paths: {spec!r} matches no files webtune reads")
            found.update(matches)
        elif os.path.isdir(spec):
            files, links = walk(spec)
            matches = _readable(spec, files, links, cfg.format)
            if not matches:
                raise WebtuneError(f"source.files.paths: directory {spec!r} holds no "
                                   f"{'/'.join(sorted(set(SUFFIXES.values()))) if cfg.format == 'auto' else cfg.format} files")
            found.update(matches)
        elif os.path.isfile(spec):
            found.add(Path(spec))
        else:
            raise WebtuneError(f"source.files.paths: {spec!r} does not exist (relative paths start at {os.getcwd()})")
    paths = sorted(p.resolve() for p in found)
    for p in paths:
        format_of(p, cfg.format)  # fail now on a file whose format we cannot tell
    return paths


def layout(cfg) -> tuple[Path, dict[str, Path], str]:
    """(base, {path relative to base: file}, the source root relative to base): base is the
    deepest folder holding every file and the root, so a copy keeps ids relative to the root."""
    paths = resolve(cfg)
    root = base_dir(cfg, paths)
    base = Path(os.path.commonpath([str(root)] + [str(p.parent) for p in paths]))
    return base, {relative(p, base): p for p in paths}, relative(root, base)


def cache_identity(cfg) -> dict:
    """What a files snapshot is made of: each file's content, where it lies, where the root is."""
    from ..fileio import sha256_file
    _, files, root = layout(cfg)
    return {"root": root, "files": {rel: sha256_file(p) for rel, p in files.items()}}


def acquire(cfg, raw_dir: Path) -> list[Path]:
    """Copy the files into raw_dir at their place relative to the root (so the run keeps what it read
    even if the originals change); returns the copies, in resolve order."""
    import shutil
    _, files, _ = layout(cfg)
    out = []
    for rel, src in files.items():
        dst = Path(raw_dir) / rel
        with atomic_path(dst) as tmp:   # a fresh file: never written through a hard link
            shutil.copyfile(src, tmp)
        out.append(dst)
    return out


_TOLD: set[str] = set()


def _readable(spec: str, files: list[Path], links: list[Path], fmt: str) -> list[Path]:
    """The files of a folder or glob whose format we can read; what is left out is said once."""
    keep = [p for p in files if fmt != "auto" or _suffix(p) in SUFFIXES]
    other = sorted({p.name for p in files} - {p.name for p in keep})
    notes = []
    if other:
        notes.append(f"{len(other)} file(s) of no format webtune reads ({', '.join(other[:5])}"
                     f"{', ...' if len(other) > 5 else ''}; set source.files.format to read them as one)")
    if links:
        notes.append(f"{len(links)} link(s) leading out of the folder ({', '.join(p.name for p in links[:5])}"
                     f"{', ...' if len(links) > 5 else ''}; name their targets in source.files.paths to read them)")
    for note in notes:
        line = f"source.files.paths {spec!r}: skipped {note}"
        if line not in _TOLD:
            _TOLD.add(line)
            from ..console import log
            log(f"[yellow]{line}")
    return keep


def _suffix(path: Path) -> str:
    """`.jsonl` for `a.jsonl` and `a.jsonl.gz` alike: a compressed file is read as what it holds."""
    return Path(uncompressed_name(path)).suffix.lower()


def format_of(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    try:
        return SUFFIXES[_suffix(path)]
    except KeyError:
        raise WebtuneError(f"cannot tell the format of {path} from its extension; set source.files.format "
                           f"to one of {', '.join(FORMATS[1:])}") from None


def base_dir(cfg, paths: list[Path]) -> Path:
    if cfg.root:
        return locate(cfg.root).resolve()
    if not paths:
        return Path.cwd()
    return Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths]))


def relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base)).as_posix()


# ---------------------------------------------------------------- records
def iter_records(cfg, source_name: str, paths: list[Path], shard: int = 0,
                 n_shards: int = 1, pages=None) -> Iterator[Record | Rejection]:
    """Every record (or rejection) of this shard, file by file in the given order. `pages`
    (source.pages) says whether an HTML page is one record or its sections' sub-records."""
    from .pages import settings
    cfg, pages = plain(cfg), settings(pages)
    base = base_dir(cfg, paths)
    turn = _Turns(shard, n_shards)
    for file_no, path in enumerate(paths):
        path = Path(path)
        rel = relative(path, base)
        fmt = format_of(path, cfg.format)
        damage = damaged(path)
        if damage:   # a cut or corrupt .gz: one rejection, from the shard that owns the file
            if file_no % n_shards == shard:
                yield Rejection(record_id(source_name, rel, 1), source_name, "corrupt_compressed",
                                f"{rel}: the compressed stream is damaged ({damage}); nothing was read from it")
        elif fmt == "jsonl":
            yield from _jsonl(cfg, source_name, path, rel, shard, n_shards)
        elif fmt == "json":
            yield from _json(cfg, source_name, path, rel, turn)
        elif fmt == "csv":
            yield from _csv(cfg, source_name, path, rel, turn)
        elif file_no % n_shards == shard:  # one page or transcript per file: deal out files
            if fmt == "html":
                yield from _html(cfg, source_name, path, rel, pages)
            else:
                yield from _transcript(cfg, source_name, path, rel, fmt)


class _Turns:
    """Deals items out to shards by a running count over all files, so small files spread too."""

    def __init__(self, shard: int, n_shards: int):
        self.shard, self.n, self.k = shard, n_shards, -1

    def mine(self) -> bool:
        self.k += 1
        return self.k % self.n == self.shard


def _too_large(cfg, size: int) -> str | None:
    if cfg.max_record_bytes and size > cfg.max_record_bytes:
        return f"{size:,} bytes, over source.files.max_record_bytes={cfg.max_record_bytes:,}"
    return None


def _empty(source: str, rel: str) -> Rejection:
    return Rejection(record_id(source, rel, 1), source, "empty_file", f"{rel}: the file is empty")


# ---------------------------------------------------------------- JSONL
def _jsonl(cfg, source: str, path: Path, rel: str, shard: int, n_shards: int) -> Iterator[Record | Rejection]:
    if not _has_content(path):  # every shard asks: blank lines are then no records
        if shard == 0:
            yield _empty(source, rel)
        return
    if compressed(path):  # no byte ranges in a compressed stream: lines dealt out modulo the shards
        yield from _jsonl_lines(cfg, source, path, rel, 0, None, (shard, n_shards))
        return
    size = path.stat().st_size
    yield from _jsonl_lines(cfg, source, path, rel, size * shard // n_shards, size * (shard + 1) // n_shards, None)


def _jsonl_lines(cfg, source, path, rel, start, end, deal) -> Iterator[Record | Rejection]:
    """The lines of [start, end) (a line belongs to the range holding its first byte), or with `deal`
    (shard, n) every n-th line of the whole file."""
    limit, prefix, loads, JSONDecodeError = cfg.max_record_bytes, f"{source}:{rel}#", orjson.loads, orjson.JSONDecodeError
    with open_input(path) as fh:
        if start > 0:
            # A line belongs to the shard holding its first byte: skip the line running into `start`.
            fh.seek(start - 1)
            fh.readline()
        pos = fh.tell()
        line_no = _count_newlines(path, pos) if start > 0 else 0
        for line in fh:  # the hot loop: kept flat, helpers only for the rare bad line
            if end is not None and pos >= end:
                break
            pos += len(line)
            line_no += 1
            if deal and line_no % deal[1] != deal[0]:
                continue
            if limit and len(line) > limit:
                yield Rejection(prefix + str(line_no), source, "too_large",
                                f"{rel} line {line_no}: {_too_large(cfg, len(line))}")
                continue
            try:
                obj = loads(line)
            except JSONDecodeError as e:
                yield (_bad_line(source, rel, line_no, line, e) if line.strip() else
                       Rejection(prefix + str(line_no), source, "blank_line", f"{rel} line {line_no}: blank"))
                continue
            if type(obj) is not dict:
                yield Rejection(prefix + str(line_no), source, "not_an_object",
                                f"{rel} line {line_no}: a JSON {type(obj).__name__}, not an object")
            elif line.count(b"[") + line.count(b"{") > MAX_DEPTH and too_deep(obj):  # counts: memchr speed
                yield _too_deep(source, rel, f"line {line_no}", record_id(source, rel, line_no))
            else:
                yield Record(prefix + str(line_no), source, obj)


def _too_deep(source: str, rel: str, where: str, rid: str) -> Rejection:
    return Rejection(rid, source, "too_deep", f"{rel} {where}: JSON nested deeper than {MAX_DEPTH} levels")




def _has_content(path: Path) -> bool:
    with open_input(path) as fh:
        while chunk := fh.read(1 << 16):
            if chunk.strip():
                return True
    return False


def _count_newlines(path: Path, upto: int) -> int:
    n = 0
    with open(path, "rb") as fh:
        while upto > 0:
            chunk = fh.read(min(upto, 1 << 22))
            if not chunk:
                break
            n += chunk.count(b"\n")
            upto -= len(chunk)
    return n


def _bad_line(source: str, rel: str, line_no: int, line: bytes, error: Exception) -> Rejection:
    rid = record_id(source, rel, line_no)
    if "depth limit" in str(error):   # orjson's own cap (1,024 levels), past ours
        return _too_deep(source, rel, f"line {line_no}", rid)
    if "UTF-8" in str(error):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as u:
            return Rejection(rid, source, "invalid_utf8", f"{rel} line {line_no}: invalid UTF-8 at byte {u.start}")
    return Rejection(rid, source, "malformed_json", f"{rel} line {line_no}: {error}")


# ---------------------------------------------------------------- JSON
def _json(cfg, source: str, path: Path, rel: str, turn: _Turns) -> Iterator[Record | Rejection]:
    import ijson

    first = _first_byte(path)
    if first is None:
        if turn.mine():
            yield _empty(source, rel)
        return
    if first == b"[":
        key = None           # the reader takes a top-level array whatever json_key says
    elif first == b"{":
        key = cfg.json_key or ""   # no json_key: one object, one record
    else:
        if turn.mine():
            yield Rejection(record_id(source, rel, 1), source, "malformed_json",
                            f"{rel}: expected a JSON array or object, found {first!r}")
        return
    index = 0
    with open_input(path) as raw:
        values = JsonValues(_MarkBadUtf8(raw), key)
        try:
            for index, obj in enumerate(values, 1):
                if not turn.mine():
                    continue
                rid = record_id(source, rel, index)
                if type(obj) is TooDeep:
                    yield _too_deep(source, rel, f"item {index}", rid)
                    continue
                if not isinstance(obj, dict):
                    yield Rejection(rid, source, "not_an_object",
                                    f"{rel} item {index}: a JSON {type(obj).__name__}, not an object")
                    continue
                dumped = orjson.dumps(obj)
                if _BAD_MARK in dumped:
                    yield Rejection(rid, source, "invalid_utf8", f"{rel} item {index}: invalid UTF-8 bytes")
                    continue
                too_large = _too_large(cfg, len(dumped))
                if too_large:
                    yield Rejection(rid, source, "too_large", f"{rel} item {index}: {too_large}")
                    continue
                yield Record(rid, source, obj)
        except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError) as e:
            # The rest of the file cannot be read: one rejection says where it broke.
            if turn.mine():
                stop = json_items(path, key or None).broke_at
                where = f"at byte {stop:,}" if stop is not None else "near its end"
                yield Rejection(record_id(source, rel, index + 1), source, "malformed_json",
                                f"{rel}: reading stopped {where}, after item {index} ({type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}); nothing after it could be read")
            return
    if index == 0 and key and not values.found_key and turn.mine():
        yield Rejection(record_id(source, rel, 1), source, "missing_json_key",
                        f"{rel}: no array at key {cfg.json_key!r} (source.files.json_key)")


# Invalid UTF-8 inside a JSON array would stop the parser and lose every later item; instead each
# bad byte becomes a private-use character, and the item holding it is rejected on its own.
_BAD_CHAR = "\U0010fffd"
_BAD_MARK = _BAD_CHAR.encode()
codecs.register_error("webtune_mark", lambda e: (_BAD_CHAR, e.end))


class _MarkBadUtf8:
    """A binary reader for ijson that passes valid UTF-8 through and marks invalid bytes."""

    def __init__(self, raw):
        self.raw, self.decoder = raw, codecs.getincrementaldecoder("utf-8")("webtune_mark")

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson probes with read(0) to learn bytes or str
            return b""
        chunk = self.raw.read(n if n > 0 else -1)
        return self.decoder.decode(chunk, final=not chunk).encode()


def _first_byte(path: Path) -> bytes | None:
    with open_input(path) as fh:
        while chunk := fh.read(1 << 16):
            stripped = chunk.lstrip(b" \t\r\n")
            if stripped:
                return stripped[:1]
    return None


# ---------------------------------------------------------------- CSV
def _csv(cfg, source: str, path: Path, rel: str, turn: _Turns) -> Iterator[Record | Rejection]:
    list_fields = set(cfg.csv_list_fields)
    number_fields = set(getattr(cfg, "csv_number_fields", None) or [])
    sep = cfg.csv_list_separator
    try:
        codecs.lookup(cfg.encoding)
    except LookupError:
        raise WebtuneError(f"source.files.encoding={cfg.encoding!r} is not a known encoding") from None
    with io.TextIOWrapper(open_input(path), encoding=cfg.encoding, errors="surrogateescape", newline="") as fh:
        tsv = _suffix(path) == ".tsv" and cfg.csv_delimiter == ","  # a .tsv with the default delimiter
        reader = csv.reader(fh, delimiter="\t" if tsv else cfg.csv_delimiter)
        try:
            header = next(reader, None)
        except csv.Error as e:
            header, err = None, e
        else:
            err = None
        if not header:
            if turn.mine():
                yield (_empty(source, rel) if err is None else
                       Rejection(record_id(source, rel, 0), source, "malformed_csv", f"{rel} header: {err}"))
            return
        header = [h.strip() for h in header]
        row_no = 0
        while True:
            row_no += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                if turn.mine():
                    yield Rejection(record_id(source, rel, row_no), source, "malformed_csv",
                                    f"{rel} row {row_no} (line {reader.line_num}): {e}")
                continue
            if not turn.mine():
                continue
            yield _csv_row(cfg, source, rel, row_no, header, row, list_fields, number_fields, sep)


def _csv_row(cfg, source, rel, row_no, header, row, list_fields, number_fields, sep) -> Record | Rejection:
    rid = record_id(source, rel, row_no)
    if not row or (len(row) == 1 and not row[0].strip()):
        return Rejection(rid, source, "empty_row", f"{rel} row {row_no}: empty")
    if len(row) != len(header):
        return Rejection(rid, source, "wrong_column_count",
                         f"{rel} row {row_no}: {len(row)} cells, the header has {len(header)}")
    joined = "\x00".join(row)
    size = len(joined)
    if not joined.isascii():  # the fast common case skips the check below
        try:  # undecodable bytes were kept as lone surrogates (errors="surrogateescape"): they cannot encode
            size = len(joined.encode("utf-8"))
        except UnicodeEncodeError:
            return Rejection(rid, source, "invalid_encoding",
                             f"{rel} row {row_no}: bytes that are not valid {cfg.encoding}")
    too_large = _too_large(cfg, size)
    if too_large:
        return Rejection(rid, source, "too_large", f"{rel} row {row_no}: {too_large}")
    fields = dict(zip(header, row))
    for name in list_fields:
        cell = fields.get(name)
        if cell is not None:
            fields[name] = [part.strip() for part in cell.split(sep)] if cell.strip() else []
    for name in number_fields:
        if name in fields:
            fields[name] = _number(fields[name])
    return Record(rid, source, fields)


def _number(cell: str):
    """'12' -> 12, '9.5' -> 9.5; '' -> None; anything else stays text for validation to judge."""
    cell = cell.strip()
    if not cell:
        return None
    try:
        return int(cell)
    except ValueError:
        try:
            return float(cell)
        except ValueError:
            return cell


# ---------------------------------------------------------------- HTML and transcripts
def _read(path: Path) -> bytes:
    with open_input(path) as fh:
        return fh.read()


def _html(cfg, source: str, path: Path, rel: str, pages) -> Iterator[Record | Rejection]:
    """One page: its record, or its sections' sub-records (`<page id>/s<N>`), or why there is none."""
    from .html import extract
    from .pages import page_records

    rid = record_id(source, rel, 1)
    size = path.stat().st_size
    too_large = _too_large(cfg, size)
    if too_large:
        yield Rejection(rid, source, "too_large", f"{rel}: {too_large}")
        return
    page = extract(_read(path))
    if page.fields is None:
        yield Rejection(rid, source, page.reason, f"{rel}: {page.detail}")
        return
    page.fields["file"] = rel
    yield from page_records(rid, source, page.fields, pages, page.repairs)


def _transcript(cfg, source: str, path: Path, rel: str, fmt: str) -> Iterator[Record | Rejection]:
    from . import transcripts as tr

    group = f"{source}:{rel}"
    size = path.stat().st_size
    too_large = _too_large(cfg, size)
    if too_large:
        yield Rejection(record_id(source, rel, 1), source, "too_large", f"{rel}: {too_large}")
        return
    try:
        segments = tr.parse(_read(path), fmt)
    except tr.TranscriptError as e:
        yield Rejection(record_id(source, rel, 1), source, e.reason, f"{rel}: {e.detail}")
        return
    title = tr.title_from_name(path.stem)
    parts = tr.windows(segments, cfg.window_seconds)
    for n, window in enumerate(parts, 1):
        fields = tr.window_fields(title, window, n, len(parts))
        fields["file"] = rel
        yield Record(record_id(source, rel, n), source, fields, group=group)
