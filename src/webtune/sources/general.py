"""General-purpose data for the mix: anything `datasets.load_dataset` opens, row by row.

`path` may be a local file (JSON/JSONL, CSV, Parquet, text, Arrow), a local directory (data
files, or a `save_to_disk` folder), a builder name with `data_files`, or a hub name where there is
network. Rows stream (no Arrow cache for local files) and become records whose fields are the
row: a `messages` list, or question/answer columns; the template maps them into chat turns.
acquire() streams the rows once into `raw_dir/rows.jsonl.gz` (the run keeps what it read, and a hub
dataset is pinned at the revision it resolved to); iter_records() reads that file.
Record ids: `<source>:<path>#<1-based row>`.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator

import orjson

from ..config import container
from ..errors import WebtuneError
from ..records import Record, Rejection, record_id

BUILDERS = {".json": "json", ".jsonl": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet", ".txt": "text", ".arrow": "arrow"}


def open_dataset(cfg):
    """The rows of the configured split, as an iterable of dicts."""
    try:
        import datasets
    except ImportError:
        raise WebtuneError("source kind 'hf' needs the datasets package: pip install 'webtune[hf]'") from None

    if not cfg.path:
        raise WebtuneError("source.hf.path is empty: name a dataset, a local file or a directory")
    path = os.path.expanduser(cfg.path)
    try:
        saved = any(os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json"))
        if saved:
            ds = datasets.load_from_disk(path)
            return ds[cfg.split] if isinstance(ds, datasets.DatasetDict) else ds
        if os.path.isfile(path):
            builder = BUILDERS.get(Path(path).suffix.lower())
            if builder is None:
                raise WebtuneError(f"source.hf.path={cfg.path!r}: cannot tell the format from the extension; "
                                   f"use one of {', '.join(sorted(BUILDERS))}")
            return datasets.load_dataset(builder, data_files=path, split=cfg.split, streaming=True)
        return datasets.load_dataset(path, cfg.name, split=cfg.split, data_files=container(cfg.data_files),
                                     streaming=True)
    except WebtuneError:
        raise
    except KeyError as e:
        raise WebtuneError(f"source.hf: dataset {cfg.path!r} has no split {e}; set source.hf.split") from None
    except Exception as e:  # datasets raises many kinds (FileNotFound, ConnectionError, ValueError...)
        hint = " (no network here: use a local file or directory)" if isinstance(e, ConnectionError) else ""
        raise WebtuneError(f"source.hf: cannot open dataset {cfg.path!r} split {cfg.split!r}: "
                           f"{type(e).__name__}: {' '.join(str(e).split())[:300]}{hint}") from None


def cache_identity(cfg) -> dict:
    """What the rows depend on: the dataset, its configuration, split and data files, and either the
    local files' content or the hub revision the name resolves to."""
    from ..rundir import hub_revision
    from ..fileio import hash_path
    path = os.path.expanduser(cfg.path or "")
    local = bool(path) and os.path.exists(path)
    return {"path": cfg.path, "name": cfg.name, "split": cfg.split, "data_files": container(cfg.data_files),
            "content": hash_path(Path(path)) if local else None,
            "revision": None if local else hub_revision(cfg.path, "dataset")}


def acquire(cfg, raw_dir: Path, console=None) -> list[Path]:
    """Every row of the split, as JSON lines in `raw_dir/rows.jsonl.gz`."""
    where = cfg.path if not cfg.name else f"{cfg.path}/{cfg.name}"
    rows = iter(open_dataset(cfg))
    out = Path(raw_dir) / "rows.jsonl.gz"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n = 0
    with gzip.GzipFile(tmp, "wb", compresslevel=6, mtime=0) as fh:  # same rows, same bytes
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except Exception as e:  # a broken data file fails while streaming, not when opened
                raise WebtuneError(f"source.hf: {cfg.path!r} is unreadable after row {n}: "
                                   f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
            n += 1
            fh.write(orjson.dumps(row if isinstance(row, dict) else None, default=str) + b"\n")
    os.replace(tmp, out)
    if console is not None:
        console.print(f"  source.hf: {where}: {n:,} rows")
    return [out]


def iter_records(cfg, source_name: str, paths: list[Path], shard: int = 0,
                 n_shards: int = 1) -> Iterator[Record | Rejection]:
    """The rows acquire() stored, one record each (an empty or non-mapping row is rejected)."""
    where = cfg.path if not cfg.name else f"{cfg.path}/{cfg.name}"
    n = 0
    for path in paths:
        with gzip.open(path, "rb") as fh:
            for line in fh:
                n += 1
                if (n - 1) % n_shards != shard:
                    continue
                rid = record_id(source_name, where, n)
                row = orjson.loads(line)
                if not isinstance(row, dict) or not row:
                    yield Rejection(rid, source_name, "not_an_object", f"{where} row {n}: empty or not a mapping")
                    continue
                yield Record(rid, source_name, row)
