"""The per-record ledger: stages append events, the runner folds them into one line per record.

Event: {id, source, stage, status: kept|rejected|repaired, reason, detail, duplicate_of, example_ids}.
A record's final fate is its last kept/rejected event; repairs on the way are listed with it.
Sections of a page (`<page id>/s<N>`) fold into the page's one line: kept if any section is kept,
with each section's fate under `sections`. The fold is then reconciled against what the sources
counted in their raw files (sources.json `counts`), file by file, so a dropped record fails the run.
"""
from __future__ import annotations

import collections
import re
import sys
from pathlib import Path
from typing import IO, Iterable, Iterator

import orjson

from .errors import WebtuneError
from .fileio import atomic_path

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
              step: str | None = None, extra: dict | None = None) -> None:
        ev = {"id": id, "source": source, "stage": step or self.stage, "status": status, "reason": reason}
        if detail:
            ev["detail"] = detail[:500]
        if duplicate_of:
            ev["duplicate_of"] = duplicate_of
        if example_ids:
            ev["example_ids"] = example_ids
        if extra:
            ev.update(extra)      # e.g. the teacher's per-question fates
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


def iter_events(run_dir: Path, stages: Iterable[str], cut_ok: bool = False) -> Iterator[dict]:
    """Events in pipeline order: stage by stage, each stage's part files in name order. `cut_ok`: a
    stage that raised may have left its last line half written; skip it rather than fail."""
    folder = Path(run_dir) / "ledger"
    for stage in stages:
        paths = sorted((folder / stage).glob("*.jsonl")) or sorted(folder.glob(f"{stage}-*.jsonl"))
        for path in paths:
            with open(path, "rb") as fh:
                for line in fh:
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError:
                        if not (cut_ok and not line.endswith(b"\n")):
                            raise


_SECTION = re.compile(r"^(.*#\d+)/s(\d+)$")


def fold(run_dir: Path, stages: Iterable[str], read: dict[str, dict] | None = None) -> dict:
    """Write `ledger.jsonl` (one line per input record, its final fate) and return the counts.

    `read` is what the sources counted (`{"<source>:<where>": {"n", "first", "unit"}}`); every id
    `#first..#first+n-1` of each file must have exactly one line, and no line may name an id
    outside them. Raises naming the file and the ids otherwise."""
    lines = group_sections(final_fates(run_dir, stages))
    out = Path(run_dir) / "ledger.jsonl"
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        for ev in lines.values():
            fh.write(orjson.dumps(ev) + b"\n")
    counts = summarize_iter(lines.values())
    sections = summarize_sections(lines.values())
    if sections["sources"]:   # what a page's sections lost: its own line is kept while any section is
        counts["sections"] = sections
    if read:
        counts["files"] = reconcile(lines, read)
    return counts


def final_fates(run_dir: Path, stages: Iterable[str], cut_ok: bool = False) -> dict[str, dict]:
    """{record id: its last kept/rejected event, with the repairs on the way}."""
    final: dict[str, dict] = {}
    repairs: dict[str, list[str]] = collections.defaultdict(list)
    for ev in iter_events(run_dir, stages, cut_ok):
        if ev["status"] == REPAIRED:
            repairs[ev["id"]].append(ev["reason"])
        else:
            if "questions" in final.get(ev["id"], {}) and "questions" not in ev:
                ev["questions"] = final[ev["id"]]["questions"]   # the teacher's per-question fates stay with it
            final[ev["id"]] = ev
    for rid, ev in final.items():
        if rid in repairs:
            ev["repairs"] = repairs[rid]
    return final


def group_sections(final: dict[str, dict]) -> dict[str, dict]:
    """One line per input record: a page's sections (`<page>/s<N>`) become the page's line."""
    lines: dict[str, dict] = {}
    sections: dict[str, list[dict]] = collections.defaultdict(list)
    for rid, ev in final.items():
        m = _SECTION.match(rid)
        if m:
            sections[m.group(1)].append({**ev, "section": int(m.group(2))})
            lines.setdefault(m.group(1), None)
        else:
            lines[rid] = ev
    for page, parts in sections.items():
        parts.sort(key=lambda e: e["section"])
        lines[page] = _page_line(page, parts, lines.get(page))
    return lines


def _page_line(page: str, parts: list[dict], own: dict | None) -> dict:
    kept = [p for p in parts if p["status"] == KEPT]
    lead = kept[0] if kept else next(p for p in parts if p["status"] == REJECTED)
    line = {"id": page, "source": lead["source"], "stage": lead["stage"],
            "status": KEPT if kept else REJECTED, "reason": lead.get("reason", "")}
    examples = [x for p in kept for x in p.get("example_ids", [])]
    if examples:
        line["example_ids"] = examples
    line["sections"] = [{k: v for k, v in p.items() if k not in ("source",)} for p in parts]
    if own is not None:  # an event about the page as a whole, besides its sections
        line["page"] = own
    return line


def reconcile(lines: dict[str, dict], read: dict[str, dict]) -> dict[str, dict]:
    """Per file: what the source counted and how many ledger lines name it; raises on a mismatch."""
    seen: dict[str, set[int]] = collections.defaultdict(set)
    stray = []
    for rid in lines:
        where, _, number = rid.rpartition("#")
        if where in read and number.isdigit():
            seen[where].add(int(number))
        elif read and any(where.startswith(k.split(":", 1)[0] + ":") for k in read):
            stray.append(rid)
    if stray:
        raise WebtuneError(f"ledger: {len(stray)} line(s) name no file the source read (first: {stray[0]}); "
                           f"this is a bug, please report it")
    per_file = {}
    for where, c in read.items():
        got = seen.get(where, set())
        want = set(range(c.get("first", 1), c.get("first", 1) + c["n"])) if c["n"] is not None else None
        missing = sorted(want - got) if want is not None else ([] if got else [c.get("first", 1)])
        extra = sorted(got - want) if want is not None else []
        if missing or extra:
            what = (f"missing {', '.join(f'#{i}' for i in missing[:5])}" if missing else
                    f"unexpected {', '.join(f'#{i}' for i in extra[:5])}")
            raise WebtuneError(f"ledger: {where}: the source read {c['n'] if c['n'] is not None else 'some'} "
                               f"{c['unit']}, the ledger has {len(got)} line(s) ({what}); a record was dropped "
                               f"without an event: this is a bug, please report it")
        per_file[where] = {"unit": c["unit"], "read": c["n"] if c["n"] is not None else len(got), "ledger": len(got)}
    return per_file


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


def section_fates(line: dict) -> Iterator[dict]:
    """A page line's sections, each as a line of its own (its id `<page>/s<N>`, its page's source)."""
    for sec in line.get("sections", []):
        yield {**sec, "source": line["source"], "page": line["id"]}


def summarize_sections(lines: Iterable[dict]) -> dict:
    """Per source: pages with sections, their sections kept and rejected; rejected sections per
    (source, stage, reason). The page counts hide them: a page is kept if any section is."""
    sources: dict[str, dict] = {}
    reasons: collections.Counter = collections.Counter()
    for line in lines:
        if "sections" not in line:
            continue
        c = sources.setdefault(line["source"], {"pages": 0, "sections": 0, "kept": 0, "rejected": 0})
        c["pages"] += 1
        for sec in line["sections"]:
            c["sections"] += 1
            c[sec["status"]] += 1
            if sec["status"] == REJECTED:
                reasons[(line["source"], sec["stage"], sec.get("reason", ""))] += 1
    return {"sources": sources,
            "reasons": [{"source": s, "stage": st, "reason": r, "count": n}
                        for (s, st, r), n in sorted(reasons.items(), key=lambda kv: -kv[1])]}


def read_ledger(run_dir: Path) -> Iterator[dict]:
    """ledger.jsonl; for a run that stopped before its ledger stage (a stage raised), the stages'
    events folded here, so `webtune ledger RUN` answers the error that pointed at it."""
    path = Path(run_dir) / "ledger.jsonl"
    if path.exists():
        with open(path, "rb") as fh:
            for line in fh:
                yield orjson.loads(line)
        return
    stages = stages_with_events(run_dir)
    if not stages:
        raise WebtuneError(f"{path} not found: is {run_dir} a finished webtune run directory?")
    print(f"{run_dir} stopped before its ledger stage: its {', '.join(stages)} events are folded here "
          f"(not reconciled with the source counts)", file=sys.stderr)
    yield from group_sections(final_fates(run_dir, stages, cut_ok=True)).values()


def stages_with_events(run_dir: Path) -> list[str]:
    """The stages that wrote events, in the order they ran (their folders' oldest event file first)."""
    folder = Path(run_dir) / "ledger"
    found = {d.name: min(f.stat().st_mtime_ns for f in files)
             for d in (folder.iterdir() if folder.is_dir() else []) if d.is_dir() and (files := list(d.glob("*.jsonl")))}
    return sorted(found, key=found.get)
