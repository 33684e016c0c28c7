"""The prepare stage as map -> reduce -> map, so a distributed engine could run it unchanged.

  map     (one task per shard; mapper.map_shard)  every shard reads its share of every input
          (`sources.iter_records(..., shard, n_shards)`) and runs the steps of steps.py on each
          record: Parse -> Clean -> Validate -> Filter -> Render -> Serialize, then per batch
          FilterWords -> Sign; it writes (shardfiles.py)
            ledger/prepare/<shard>.jsonl   repairs and rejections (one final event per rejected record)
            tmp/prepare/cand-<shard>.jsonl the surviving records' rendered examples
            tmp/prepare/sig-<shard>.npz    per survivor: its id's order key, exact hash, LSH band hashes
  reduce  (one task; reduce.reduce_signatures)  loads every shard's signatures (~140 bytes a
          record), puts them in global input order and finds exact and near duplicates across all
          inputs, domain and general alike; the first record of each group is kept (a `Plan`).
  map     (one task per shard; reduce.finish_shard)  streams its candidates in input order: kept
          records' examples go to tmp/prepare/examples-<shard>.jsonl with their `kept` event (and
          example_ids), duplicates get a `rejected` event naming the kept record
          (ledger/prepare/dedupe-<shard>.jsonl). `assemble` concatenates the parts into
          data/examples.jsonl (or merges them, when a source deals records out round-robin).

Input order is (input index, then the record id's `<source>:<where>` part as text, then its
`#<n>` number): ids never depend on the shard count (a source contract), so neither does the order,
the keeper of a duplicate group or data/examples.jsonl, which is byte-identical for any number of
workers. For files that is file by file (sorted paths), then line, row or item.

`prepare.executor=local` runs the maps on `prepare.workers` local processes (executors/local.py);
`prepare.executor=ray` runs the same functions on Ray Data (executors/ray_data.py), its groupby
handing the colliding groups to the same `dedupe.keepers`. Either way `order_ledger` leaves the
ledger events in input order, so data/examples.jsonl and ledger.jsonl are the same bytes.
"""
from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path

from ..errors import WebtuneError
from .executors import Outcome
from .executors.local import run_local
from .mapper import PrepareInput
from .reduce import assemble, order_ledger
from .render import load_tasks

__all__ = ["PrepareInput", "run", "executor_name"]


def executor_name(cfg) -> str:
    name = cfg.prepare.get("executor") or "local"
    return str(getattr(name, "value", name))  # a str or an Enum member


def _executor(cfg):
    name = executor_name(cfg)
    if name == "local":
        return run_local
    if name == "ray":
        from .executors.ray_data import run_ray
        return run_ray
    raise WebtuneError(f"prepare.executor={name!r}: use local or ray")


def run(cfg, run_dir: Path, inputs: list[PrepareInput], console=None) -> dict:
    """The prepare stage: writes data/examples.jsonl and ledger/prepare/events.jsonl; returns stats."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    work = run_dir / "tmp" / "prepare"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(run_dir / "ledger" / "prepare", ignore_errors=True)
    work.mkdir(parents=True)
    for inp in inputs:  # template errors surface once, here, not once per worker
        load_tasks(inp.template)
    done = _executor(cfg)(cfg, run_dir, work, inputs, console)
    t0 = time.perf_counter()
    assemble(run_dir, work, done.shards, done.plan, done.finals)
    if done.plan.grounding is not None:   # evaluate checks answers with the same vocabulary
        done.plan.grounding.vocab.save(run_dir / "data" / "grounding_vocab.json")
    order_ledger(run_dir, inputs, done.shards)
    done.seconds["write"] = done.seconds.get("write", 0.0) + time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    try:
        (run_dir / "tmp").rmdir()
    except OSError:
        pass
    return _stats(cfg, inputs, done, time.perf_counter() - started)


def _stats(cfg, inputs: list[PrepareInput], done: Outcome, total: float) -> dict:
    sources = _source_counts(inputs, done)
    n_in = sum(c["in"] for c in sources.values())
    return {
        "sources": sources,
        "examples": _summed(final["examples"] for final in done.finals),
        "duplicates": int((~done.plan.kept()).sum()),
        "executor": executor_name(cfg),
        "workers": done.workers,
        "shards": done.shards,
        "seconds": {"total": round(total, 3), **{k: round(v, 3) for k, v in done.seconds.items()}},
        "worker_seconds": {k: round(v, 3) for k, v in sorted(_summed(st["seconds"] for st in done.mapped).items())},
        "records_per_s": round(n_in / total, 1) if total > 0 else None,
        **_grounding(done),
        **done.extra,
    }


def _grounding(done: Outcome) -> dict:
    """prepare.grounding's counts by kind and fate, and the commonest unsupported phrases with advice."""
    if done.plan.grounding is None:
        return {}
    from collections import Counter

    from ..grounding.targets import summary
    totals = [final.get("grounding") or {} for final in done.finals]
    stats = Counter(_summed(t.get("stats", {}) for t in totals))
    phrases = Counter({tuple(k.split("\t", 1)): n for k, n in _summed(t.get("phrases", {}) for t in totals).items()})
    return {"grounding": summary(stats, phrases, done.plan.grounding.policy)
            | {"vocabulary": len(done.plan.grounding.vocab)}}


def _summed(dicts) -> dict:
    out: dict = defaultdict(int)
    for d in dicts:
        for name, n in d.items():
            out[name] += n
    return dict(out)


def _source_counts(inputs: list[PrepareInput], done: Outcome) -> dict[str, dict]:
    """Per source: in, kept, rejected (map rejections plus duplicates), checked to add up."""
    sources: dict[str, dict] = {}
    for inp in inputs:
        sources.setdefault(inp.source.name, {"side": inp.side, "in": 0, "kept": 0, "rejected": 0})
    for st in done.mapped:
        for name, c in st["counts"].items():
            sources[name]["in"] += c["in"]
            sources[name]["rejected"] += c["rejected"]
            for key in ("pages_by_headings", "pages_by_size", "page_sections"):   # pages cut into sections
                if key in c:
                    sources[name][key] = sources[name].get(key, 0) + c[key]
    for final in done.finals:
        for name, n in final["kept"].items():
            sources[name]["kept"] += n
        for name, n in final["duplicates"].items():
            sources[name]["rejected"] += n
        for name, n in final.get("ungrounded", {}).items():   # every example dropped by prepare.grounding
            sources[name]["rejected"] += n
    for name, c in sources.items():
        if c["in"] != c["kept"] + c["rejected"]:
            raise WebtuneError(f"prepare: source {name!r} does not reconcile ({c['in']} in, {c['kept']} kept, "
                               f"{c['rejected']} rejected); this is a bug, please report it")
    return sources
