"""The refresh stage: which records are new, changed, the same or gone since the promoted version.

Both acquisitions are read with this run's `source.key_field` and `source.churn_fields`, so a user
can name the key at refresh time. Writes

  data/refresh/diff.jsonl   one line per key: {key, status, id, old_id, old_split}
  data/refresh/diff.json    the counts, and the promoted version the diff is against

and the mix stage reads the first to place each record (see mix/refresh_split.py).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from ..errors import WebtuneError
from ..fileio import atomic_path, read_json, write_json
from ..mix.refresh_split import DIFF, SUMMARY
from ..records import Rejection
from .keys import content_hash, record_key

STATUSES = ("new", "changed", "same", "gone")


def promoted_run(refresh) -> Path:
    """The run directory the promoted version (`refresh.model`, in `refresh.version_dir`) was registered
    from: its data and config."""
    vdir = Path(refresh["version_dir"])
    source = read_json(vdir / "source.json", {}) or {}
    run_dir = Path(source.get("run_dir") or "")
    if not source.get("run_dir") or not (run_dir / "config.yaml").exists():
        raise WebtuneError(f"{refresh['model']}: its run directory {run_dir} (from {vdir / 'source.json'}) is "
                           f"gone; a refresh diffs against the promoted run's data")
    return run_dir


def index(inputs, key_field: str | None, churn: set[str]) -> dict[str, dict]:
    """key -> {id, hash} of every domain record of the raw inputs ((side, source, paths), as
    stages.raw_inputs gives them); the first of a repeated key wins, a repeat gets `~2`, `~3`... so
    no record is lost from the diff."""
    from .. import sources
    out: dict[str, dict] = {}
    for side, src, paths in inputs:
        if side != "domain":
            continue
        for item in sources.iter_records(src, paths):
            if isinstance(item, Rejection):
                continue
            key = base = record_key(item.id, item.fields, key_field, churn)
            n = 1
            while key in out:
                n += 1
                key = f"{base}~{n}"
            out[key] = {"id": item.id, "hash": content_hash(item.fields, churn)}
    return out


def old_splits(run_dir: Path) -> dict[str, str]:
    """record id -> the split its examples were in (train, val or test) in the promoted run."""
    mix = read_json(run_dir / "data/mix.json", {}) or {}
    out = {}
    for split, ids in (mix.get("splits") or {}).items():
        for eid in ids:
            rid = eid.rsplit("/", 1)[0]
            out.setdefault(rid, split)
    return out


def diff(old: dict[str, dict], new: dict[str, dict], splits: dict[str, str]) -> list[dict]:
    rows = []
    for key, rec in new.items():
        before = old.get(key)
        status = "new" if before is None else "same" if before["hash"] == rec["hash"] else "changed"
        rows.append({"key": key, "status": status, "id": rec["id"], "old_id": before and before["id"],
                     "old_split": before and splits.get(before["id"])})
    rows += [{"key": key, "status": "gone", "id": None, "old_id": rec["id"], "old_split": splits.get(rec["id"])}
             for key, rec in old.items() if key not in new]
    return rows


def run(cfg, run_dir: Path, raw_inputs) -> dict:
    """The diff of this run's raw data against the promoted run's; `raw_inputs(cfg, run_dir)` reads a run's."""
    from ..hydra_setup import load_run_config
    key_field, churn = cfg.source.get("key_field"), set(cfg.source.get("churn_fields") or [])
    old_dir = promoted_run(cfg.refresh)
    old_cfg = load_run_config(old_dir)
    rows = diff(index(raw_inputs(old_cfg, old_dir), key_field, churn),
                index(raw_inputs(cfg, run_dir), key_field, churn), old_splits(old_dir))
    path = run_dir / DIFF
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row) + b"\n")
    counts = Counter(r["status"] for r in rows)
    summary = {"against": cfg.refresh.model, "against_run": str(old_dir), "key_field": key_field,
               "churn_fields": sorted(churn), "counts": {s: counts.get(s, 0) for s in STATUSES}}
    write_json(run_dir / SUMMARY, summary)
    return summary
