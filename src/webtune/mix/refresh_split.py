"""Where a refresh puts each record: the promoted version's test set stays frozen, the new test set
holds only new and changed records, and unchanged training records are replayed at a share.

  same     old train/val: replayed into the same split with probability `replay_share` (seeded by
           its key), else left out (`refresh:not_replayed`); old test: left out of training, it is
           in the frozen old test set (`refresh:old_test`)
  changed  its old split (an old test record's new version joins the new test set, never training)
  new      split by a hash of its key, like any record
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import xxhash

from ..fileio import read_json
from .split import assign

DIFF = "data/refresh/diff.jsonl"      # written by the refresh stage (webtune/refresh/diff.py)
SUMMARY = "data/refresh/diff.json"
OLD_TEST = "data/test_old.jsonl"


def read_diff(run_dir: Path) -> dict[str, dict]:
    """record id -> its diff row, for the records of this acquisition."""
    path = Path(run_dir) / DIFF
    if not path.exists():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {r["id"]: r for r in rows if r["id"] is not None}


class Placement:
    def __init__(self, cfg, run_dir: Path):
        self.rows = read_diff(run_dir)
        self.share = float(cfg.refresh.replay_share)
        self.m = cfg.mix
        self.left_out: list[tuple[dict, str, str]] = []   # (example, reason, detail) for the ledger

    def split_of(self, ex: dict, default: str) -> str | None:
        """The example's split, or None when the refresh leaves it out (then `left_out` says why)."""
        row = self.rows.get(ex["record_id"]) if ex["side"] == "domain" else None
        if row is None:
            return default
        old = row["old_split"]
        if row["status"] == "new" or old is None:
            return assign(row["key"], self.m.seed, self.m.val_fraction, self.m.test_fraction)
        if row["status"] == "changed":
            return old
        if old == "test":
            self.left_out.append((ex, "refresh:old_test", f"unchanged, in the frozen test set of {row['old_id']}"))
            return None
        if self.replayed(row["key"]):
            return old
        self.left_out.append((ex, "refresh:not_replayed", f"unchanged since the promoted version; replay_share "
                                                          f"{self.share}"))
        return None

    def replayed(self, key: str) -> bool:
        return xxhash.xxh64_intdigest(f"{self.m.seed}\0replay\0{key}".encode()) / 2**64 < self.share


def placement(cfg, run_dir: Path) -> Placement | None:
    """The refresh's placement in a refresh run, else None (an ordinary split)."""
    return Placement(cfg, run_dir) if cfg.get("refresh") and cfg.refresh.get("model") else None


def freeze_old_test(run_dir: Path) -> None:
    """The promoted version's test set, verbatim: the `old` set every refresh is judged on."""
    against = Path(read_json(Path(run_dir) / SUMMARY)["against_run"])
    shutil.copyfile(against / "data/test.jsonl", Path(run_dir) / OLD_TEST)
