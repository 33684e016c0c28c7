"""The teacher's replies, content-addressed beside the source snapshots: `runs/.cache/teacher/`.

A reply is data, like a Bright Data snapshot: the key is the hash of everything that decides it
(what is asked: the rendered prompt, which holds the section text, and the target; the model id;
the generation settings), so a rerun, a sweep point, `reproduce` and a resume after a crash find it
and send nothing, and an edited section (or prompt, or model) misses only its own entries. Each
entry is one small JSON file written atomically the moment its reply is in, so a crash loses at most
the requests in flight. WEBTUNE_NO_CACHE does not bypass it: it holds what was paid for, not a
derived result.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..fileio import sha256_text

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
