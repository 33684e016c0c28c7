"""The per-record ledger: stages append events, the runner folds them into one line per record.

Event: {id, source, stage, status: kept|rejected|repaired, reason, detail, duplicate_of, example_ids}.
A record's final fate is its last kept/rejected event; repairs on the way are listed with it.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import IO, Iterable, Iterator

import orjson

from .errors import WebtuneError

KEPT, REJECTED, REPAIRED = "kept", "rejected", "repaired"


class LedgerWriter:
    """Appends a stage's events to `ledger/<stage>/<part>.jsonl` (one file per worker).

    `step` names the sub-step in each event (prepare's parse, clean, filter...); default the stage.
    """

    def __init__(self, run_dir: Path, stage: str, part: str = "events"):
        self.stage = stage
        folder = Path(run_dir) / "ledger" / stage
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{part}.jsonl"
        self._fh: IO[bytes] = open(self.path, "wb")

    def event(self, id: str, source: str, status: str, reason: str = "", detail: str = "",
              duplicate_of: str | None = None, example_ids: list[str] | None = None,
              step: str | None = None) -> None:
        ev = {"id": id, "source": source, "stage": step or self.stage, "status": status, "reason": reason}
        if detail:
            ev["detail"] = detail[:500]
        if duplicate_of:
            ev["duplicate_of"] = duplicate_of
        if example_ids:
            ev["example_ids"] = example_ids
        self._fh.write(orjson.dumps(ev) + b"\n")

    def kept(self, id, source, **kw):
        self.event(id, source, KEPT, **kw)

    def rejected(self, id, source, reason, detail="", **kw):
        self.event(id, source, REJECTED, reason, detail, **kw)

    def repaired(self, id, source, reason, detail="", **kw):
        self.event(id, source, REPAIRED, reason, detail, **kw)

    def close(self):
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iter_events(run_dir: Path, stages: Iterable[str]) -> Iterator[dict]:
    """Events in pipeline order: stage by stage, each stage's part files in name order."""
    folder = Path(run_dir) / "ledger"
    for stage in stages:
        paths = sorted((folder / stage).glob("*.jsonl")) or sorted(folder.glob(f"{stage}-*.jsonl"))
        for path in paths:
            with open(path, "rb") as fh:
                for line in fh:
                    yield orjson.loads(line)


def fold(run_dir: Path, stages: Iterable[str]) -> dict:
    """Write `ledger.jsonl` (one line per input record, its final fate) and return the counts.

    Raises if, for any source, records in != kept + rejected.
    """
    final: dict[str, dict] = {}
    repairs: dict[str, list[str]] = collections.defaultdict(list)
    for ev in iter_events(run_dir, stages):
        if ev["status"] == REPAIRED:
            repairs[ev["id"]].append(ev["reason"])
        else:
            final[ev["id"]] = ev
    out = Path(run_dir) / "ledger.jsonl"
    tmp = out.with_suffix(".jsonl.tmp")
    counts = summarize_iter(final.values())
    with open(tmp, "wb") as fh:
        for rid, ev in final.items():
            if rid in repairs:
                ev["repairs"] = repairs[rid]
            fh.write(orjson.dumps(ev) + b"\n")
    tmp.replace(out)
    for source, c in counts["sources"].items():
        if c["in"] != c["kept"] + c["rejected"]:
            raise WebtuneError(f"ledger does not reconcile for source {source!r}: {c['in']} records in, "
                               f"{c['kept']} kept + {c['rejected']} rejected; this is a bug, please report it")
    return counts


def summarize_iter(events: Iterable[dict]) -> dict:
    """Counts per source and per (stage, reason) from final-fate lines."""
    sources: dict[str, dict] = {}
    reasons: collections.Counter = collections.Counter()
    for ev in events:
        c = sources.setdefault(ev["source"], {"in": 0, "kept": 0, "rejected": 0})
        c["in"] += 1
        c[ev["status"]] += 1
        if ev["status"] == REJECTED:
            reasons[(ev["source"], ev["stage"], ev["reason"])] += 1
    return {"sources": sources,
            "reasons": [{"source": s, "stage": st, "reason": r, "count": n}
                        for (s, st, r), n in sorted(reasons.items(), key=lambda kv: -kv[1])]}


def read_ledger(run_dir: Path) -> Iterator[dict]:
    path = Path(run_dir) / "ledger.jsonl"
    if not path.exists():
        raise WebtuneError(f"{path} not found: is {run_dir} a finished webtune run directory?")
    with open(path, "rb") as fh:
        for line in fh:
            yield orjson.loads(line)
