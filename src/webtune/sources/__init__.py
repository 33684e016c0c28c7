"""Sources: where records come from.

Two steps, so the run directory keeps what was delivered and work can be sharded:
  acquire(cfg, raw_dir) -> local paths holding the raw data (downloads a snapshot, fetches pages,
                           or just resolves the user's files)
  iter_records(cfg, paths, shard, n_shards) -> Record | Rejection, streamed; the union over shards
                           is every record exactly once, with ids that do not depend on sharding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import WebtuneError
from ..records import Record, Rejection

KINDS = ("files", "brightdata", "urls", "hf")


def acquire(cfg, raw_dir: Path, console=None) -> list[Path]:
    kind = cfg.kind
    if kind == "files":
        from . import files
        return files.resolve(cfg.files)
    if kind == "brightdata":
        from . import brightdata
        return [brightdata.acquire(cfg.brightdata, cfg.name, raw_dir, console=console)]
    if kind == "urls":
        from . import urls
        return urls.acquire(cfg.urls, cfg.name, raw_dir, console=console)
    if kind == "hf":
        return []
    raise WebtuneError(f"source {cfg.name!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def iter_records(cfg, paths: list[Path], shard: int = 0, n_shards: int = 1) -> Iterator[Record | Rejection]:
    kind = cfg.kind
    if kind == "files":
        from . import files
        yield from files.iter_records(cfg.files, cfg.name, paths, shard, n_shards, pages=getattr(cfg, "pages", None))
    elif kind == "brightdata":
        from . import brightdata
        for i, path in enumerate(paths):
            snapshot_id = path.name.split(".")[0]
            for n, item in enumerate(brightdata.iter_records(path, cfg.name, snapshot_id,
                                                             list(cfg.brightdata.primary_fields))):
                if n % n_shards == shard:
                    yield item
    elif kind == "urls":
        from . import urls
        yield from urls.iter_records(cfg.urls, cfg.name, paths, shard, n_shards, pages=getattr(cfg, "pages", None))
    elif kind == "hf":
        from . import general
        yield from general.iter_records(cfg.hf, cfg.name, shard, n_shards)
    else:
        raise WebtuneError(f"source {cfg.name!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
