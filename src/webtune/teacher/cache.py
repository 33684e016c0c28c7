"""The teacher's replies, content-addressed beside the source snapshots: `runs/.cache/teacher/`.

A reply is data, like a Bright Data snapshot: the key is the hash of everything that decides it
(what is asked: the rendered prompt, which holds the section text, and the target; the model id;
the generation settings), so a rerun, a sweep point, `reproduce` and a resume after a crash find it
and send nothing, and an edited section (or prompt, or model) misses only its own entries. Each
entry is one small JSON file written atomically the moment its reply is in, so a crash loses at most
the requests in flight. WEBTUNE_NO_CACHE does not bypass it: it holds what was paid for, not a
derived result.

A run also records the replies it used in its directory (`data/teacher_replies.jsonl`, a prepare
output, one line per request in input order), as it links its source snapshot into data/raw/:
`webtune reproduce` seeds its scratch cache from that record, so it sends no request even where the
cache is gone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import orjson

from ..fileio import atomic_path, sha256_text

CACHE = Path(".cache") / "teacher"
FORMAT = 1      # bump when the meaning of an entry changes


def cache_root(runs_dir) -> Path:
    return Path(runs_dir) / CACHE


def request_key(**what) -> str:
    return sha256_text(json.dumps({"format": FORMAT, **what}, sort_keys=True, ensure_ascii=False))


class ReplyCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self.path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):   # missing, or a torn file from a killed writer: ask again
            return None

    def put(self, key: str, entry: dict) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(entry)}.tmp")
        tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


def write_record(path: Path, used: list[tuple[str, str, str, dict]]) -> None:
    """A run's record of the replies it used: (key, kind, example id, cache entry), in input order."""
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        for key, kind, example, entry in used:
            out.write(orjson.dumps({"key": key, "kind": kind, "example": example, "entry": entry}) + b"\n")


def seed_from_record(record: Path, cache: ReplyCache) -> int:
    """Put every reply of a run's record into `cache` (fresh files); how many."""
    n = 0
    with open(record, "rb") as fh:
        for line in fh:
            item = orjson.loads(line)
            cache.put(item["key"], item["entry"])
            n += 1
    return n
