"""Sources: where records come from.

Two steps, so the run directory keeps what was delivered and work can be sharded:
  acquire(cfg, raw_dir, allow_paid) -> local paths holding the raw data, all inside raw_dir (downloads
                           a snapshot, fetches pages, copies the user's files or streams a dataset's rows)
  iter_records(cfg, paths, shard, n_shards) -> Record | Rejection, streamed; the union over shards
                           is every record exactly once, with ids that do not depend on sharding.
`sources.cache` calls acquire once per content key (runs/.cache/source/<key>/) and links the result
into each run; `identity(cfg)` is what that key is made of. `count(cfg, paths, root)` counts what
the raw files hold at the byte level, independently of the records, for the ledger to reconcile.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Iterator

from omegaconf import OmegaConf

from ..errors import WebtuneError
from ..records import Record, Rejection

KINDS = ("files", "brightdata", "brightdata_dataset", "urls", "hf")
MODULES = {"files": "files", "brightdata": "brightdata", "brightdata_dataset": "brightdata_market", "urls": "urls",
           "hf": "general"}


def module(cfg):
    if cfg.kind not in MODULES:
        raise WebtuneError(f"source {cfg.name!r}: unknown kind {cfg.kind!r}; use one of {', '.join(KINDS)}")
    return importlib.import_module(f"{__name__}.{MODULES[cfg.kind]}")


def section(cfg):
    """The kind's own settings: cfg.files, cfg.brightdata, cfg.urls or cfg.hf."""
    return cfg.brightdata if cfg.kind == "brightdata_dataset" else cfg[cfg.kind]


def identity(cfg) -> dict:
    """What the acquired data depends on: the module's `cache_identity(section)` when it has one,
    else the whole section. Never the source name (ids carry it; the bytes do not)."""
    mod, sec = module(cfg), section(cfg)
    if hasattr(mod, "cache_identity"):
        found = mod.cache_identity(sec)
    else:
        found = OmegaConf.to_container(sec, resolve=True) if OmegaConf.is_config(sec) else dict(sec)
    fresh = cfg.get("acquisition")   # `webtune refresh`: a new acquisition, once per refresh
    return {"kind": cfg.kind, **found, **({"acquisition": fresh} if fresh else {})}


def as_requested(cfg, reads: set[str] | None):
    """The source config as it will be acquired: a module's `with_output_fields` adds the record
    fields the run reads (`reads`; Bright Data's custom_output_fields), so the cache key holds it."""
    derive = getattr(module(cfg), "with_output_fields", None)
    return derive(cfg, reads) if derive is not None else cfg


def acquire(cfg, raw_dir: Path, console=None, allow_paid: bool = True) -> list[Path]:
    kind = cfg.kind
    if kind == "files":
        from . import files
        return files.acquire(cfg.files, raw_dir)
    if kind == "brightdata":
        from . import brightdata
        return [brightdata.acquire(cfg.brightdata, cfg.name, raw_dir, console=console, allow_paid=allow_paid)]
    if kind == "brightdata_dataset":
        from . import brightdata_market
        return [brightdata_market.acquire(cfg.brightdata, cfg.name, raw_dir, console=console, allow_paid=allow_paid)]
    if kind == "urls" and cfg.urls.get("fetch", "direct") == "brightdata_crawl":
        from . import brightdata_crawl
        return brightdata_crawl.acquire(cfg.urls, cfg.brightdata, cfg.name, raw_dir, console=console,
                                        allow_paid=allow_paid)
    if kind == "urls":
        from . import urls
        return urls.acquire(cfg.urls, cfg.name, raw_dir, console=console)
    if kind == "hf":
        from . import general
        return general.acquire(cfg.hf, raw_dir, console=console)
    raise WebtuneError(f"source {cfg.name!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def reading_config(cfg, root: Path | None):
    """The source config to read a snapshot with: for files, ids are relative to `root`, the
    snapshot's copy of the original source root (so ids never name the cache or the run dir)."""
    if cfg.kind != "files" or root is None:
        return cfg
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.files.root = str(root)
    return out


def iter_records(cfg, paths: list[Path], shard: int = 0, n_shards: int = 1) -> Iterator[Record | Rejection]:
    kind = cfg.kind
    if kind == "files":
        from . import files
        yield from files.iter_records(cfg.files, cfg.name, paths, shard, n_shards, pages=getattr(cfg, "pages", None))
    elif kind in ("brightdata", "brightdata_dataset"):
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
        yield from general.iter_records(cfg.hf, cfg.name, paths, shard, n_shards)
    else:
        raise WebtuneError(f"source {cfg.name!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def count(cfg, paths: list[Path]) -> dict[str, dict]:
    """`{"<source>:<where>": {"unit": ..., "n": N}}` for every raw file: what it holds, counted at the
    byte level by a reader of its own (not the one that makes records). `n` is the number of ids
    `#1..#n` the ledger must hold for that file; None where only "at least one" is knowable."""
    from . import counting
    return counting.count(cfg, [Path(p) for p in paths])
