"""The prepare stage's first map: one shard of every input through the steps (steps.py), its
candidates and signatures written for the reduce (shardfiles.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import plain
from ..ledger import LedgerWriter
from .clean import Cleaner
from ..textsig.dedupe import Signer
from .filters import Filters
from .render import load_tasks
from .steps import (Clean, Filter, FilterWords, InputPlan, Learn, Parse, Render, Serialize, Shard, Sign, Timer,
                    Validate, Write, batched)


@dataclass
class PrepareInput:
    """One input of the stage. `read(source, paths, shard, n_shards)` yields its records and
    rejections (`sources.iter_records`, handed in by the caller: a stage imports no other stage)."""

    side: str            # "domain" | "general"
    source: object       # SourceConfig (DictConfig)
    template: object     # TemplateConfig (DictConfig): its tasks
    paths: list[Path]    # from sources.acquire
    read: Callable       # sources.iter_records


@dataclass
class Setup:
    """What a map worker builds once (on Ray, once per actor) and reuses for every shard it maps."""

    p: object                # cfg.prepare as plain namespaces
    cleaner: Cleaner
    filters: Filters
    signer: Signer
    tasks: list              # per input: its template's tasks


def setup(cfg, inputs: list[PrepareInput]) -> Setup:
    p = plain(cfg.prepare)
    return Setup(p, Cleaner(p.clean), Filters(p.filters), Signer(p.dedupe), [load_tasks(i.template) for i in inputs])


def map_shard(cfg, run_dir: Path, work: Path, inputs: list[PrepareInput], shard: int, n_shards: int,
              progress=None, ready: Setup | None = None) -> dict:
    """Everything per record up to dedupe, for one shard of every input. Returns counts and timings."""
    ready = ready or setup(cfg, inputs)
    p, timer, counts = ready.p, Timer(), {}
    plans = [input_plan(ready, i, inp, counts) for i, inp in enumerate(inputs)]
    with LedgerWriter(run_dir, "prepare", part=f"{shard}") as ledger:
        at = Shard(ledger, timer, shard, n_shards)
        docs = Parse(at, progress)(plans)
        docs = Clean(at, ready.cleaner)(docs)
        docs = Validate(at)(docs)
        docs = Filter(at, ready.filters, p.filters.length_field, bool(p.filters.mask_pii))(docs)
        docs = Render(at, bool(p.validate_output))(docs)
        learnt = None
        if grounding_policy(cfg) != "off":
            from ..grounding import VocabularyCounts
            learnt = VocabularyCounts()
            docs = Learn(at, learnt)(docs)
        docs = Serialize(at)(docs)
        batches = FilterWords(at, ready.filters)(batched(docs))
        batches = Sign(at, ready.signer)(batches)
        write = Write(at, work, ready.signer.bands)
        for _ in write(batches):
            pass
        write.finish(plans)
        if learnt is not None:
            learnt.save(work / f"vocab-{shard}")
    return {"counts": counts, "seconds": dict(timer.seconds)}


def grounding_policy(cfg) -> str:
    name = cfg.prepare.get("grounding") or "off"
    return str(getattr(name, "value", name))


def input_plan(ready: Setup, index: int, inp: PrepareInput, counts: dict) -> InputPlan:
    """What the steps read about one input; inputs of one source share its counts."""
    tasks = ready.tasks[index]
    length_field = ready.p.filters.length_field
    needed = list(dict.fromkeys(f for t in tasks for f in t.fields))
    dedupe_fields = list(ready.p.dedupe.fields or needed)
    return InputPlan(
        index=index, side=inp.side, source=inp.source, paths=inp.paths, read=inp.read, tasks=tasks, needed=needed,
        dedupe_fields=dedupe_fields, clean_fields=fields_to_clean(tasks, length_field, dedupe_fields),
        same_text=bool(length_field) and dedupe_fields == [length_field],  # filters and dedupe read one text
        group_field=inp.source.get("group_field"),
        counts=counts.setdefault(inp.source.name, {"in": 0, "rejected": 0}), prefixes={})


def fields_to_clean(tasks, length_field, dedupe_fields) -> list[str] | None:
    """By default clean what the examples, filters and dedupe read; every field if a template's
    variables cannot be known (it includes another file)."""
    if any(t.variables is None for t in tasks):
        return None
    names = [f for t in tasks for f in sorted(t.variables) + t.fields] + dedupe_fields
    return list(dict.fromkeys(names + ([length_field] if length_field else [])))
