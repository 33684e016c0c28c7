"""The prepare stage after the first map: the reduce (global input order, the keeper of each
duplicate group: a `Plan`), the second map (`finish_shard`: each shard's kept examples and final
events) and the merge (`assemble`, `order_ledger`)."""
from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ..ledger import LedgerWriter
from ..textsig.dedupe import collisions, keepers
from .shardfiles import load_prefixes, load_signatures, read_candidates, read_ids


@dataclass
class Plan:
    """The reduce's verdict, one entry per candidate in global input order."""

    shard: np.ndarray        # which shard holds it
    row: np.ndarray          # its row in that shard's candidate files
    offset: np.ndarray       # byte offset of its header in cand-<shard>.jsonl
    n_examples: np.ndarray
    keeper: np.ndarray       # global index of the record kept for its group (itself when kept)
    first_copy: np.ndarray   # global index of the first record with the same normalised text
    grounding: object = None  # grounding.targets.GroundingPlan (None: prepare.grounding=off)

    def kept(self) -> np.ndarray:
        return self.keeper == np.arange(len(self.keeper))


def global_ranks(local_prefixes: list[list[list[str]]]) -> list[dict[str, int]]:
    """Per input, each id prefix's rank among every shard's prefixes of that input (sorted as text)."""
    n_inputs = max((len(p) for p in local_prefixes), default=0)
    ranks = []
    for index in range(n_inputs):
        union = sorted({w for p in local_prefixes for w in p[index]})
        ranks.append({w: r for r, w in enumerate(union)})
    return ranks


def order_keys(key: np.ndarray, prefixes: list[list[str]], ranks: list[dict[str, int]]) -> np.ndarray:
    """One shard's (input, prefix rank, #n) per candidate: its local prefix numbers made global."""
    rank = np.zeros(len(key), dtype=np.int64)
    for i, rank_of in enumerate(ranks):
        lookup = np.array([rank_of[w] for w in prefixes[i]] or [0], dtype=np.int64)
        mine = key[:, 0] == i
        rank[mine] = lookup[key[mine, 1]]
    return np.stack([key[:, 0], rank, key[:, 2]], axis=1)


def input_order(work: Path, n_shards: int, parts) -> np.ndarray:
    """Global input order: the permutation that sorts all shards' candidates (concatenated) by id."""
    local_prefixes = [load_prefixes(work, s) for s in range(n_shards)]
    ranks = global_ranks(local_prefixes)
    keys = [order_keys(part["key"], local_prefixes[s], ranks) for s, part in enumerate(parts)]
    all_keys = np.concatenate(keys) if keys else np.zeros((0, 3), dtype=np.int64)
    return np.lexsort((all_keys[:, 2], all_keys[:, 1], all_keys[:, 0]))


def reduce_signatures(cfg, work: Path, n_shards: int, gather=None) -> Plan:
    """Global exact + near dedupe over every shard of every input. The colliding groups come from
    numpy here, or from `gather(position)` (the Ray executor's groupby), where position(shard, row)
    is a candidate's global input position; `keepers` decides either way."""
    parts = [load_signatures(work, s) for s in range(n_shards)]
    order = input_order(work, n_shards, parts)
    key = np.concatenate([x["key"] for x in parts])[order]
    shard = np.concatenate([np.full(len(x["key"]), s, dtype=np.int64) for s, x in enumerate(parts)])[order]
    row = np.concatenate([np.arange(len(x["key"])) for x in parts])[order]
    n = len(order)
    d = cfg.prepare.dedupe
    keeper = first_copy = np.arange(n)
    if n and (d.exact or d.near):
        groups = _gathered(parts, order, gather) if gather else _collisions(parts, order, bool(d.near))
        keeper, first_copy = keepers(n, *groups, bool(d.exact), bool(d.near))
    return Plan(shard, row, key[:, 3], key[:, 4], keeper, first_copy, grounding_plan(cfg, work, n_shards))


def grounding_plan(cfg, work: Path, n_shards: int):
    """The vocabulary over the whole corpus (every shard's counts added up) and the policy."""
    from .mapper import grounding_policy
    policy = grounding_policy(cfg)
    if policy == "off":
        return None
    from ..grounding import VocabularyCounts
    from ..grounding.targets import GroundingPlan
    counts = VocabularyCounts()
    for s in range(n_shards):
        counts.merge(VocabularyCounts.load(work / f"vocab-{s}"))
    return GroundingPlan(policy, counts.vocabulary(), float(cfg.prepare.get("grounding_min_kept", 0.5)))


def _collisions(parts, order: np.ndarray, near: bool):
    def cat(name):
        return np.concatenate([x[name] for x in parts])[order]
    return collisions(cat("exact"), cat("bands"), cat("empty"), near)


def _gathered(parts, order: np.ndarray, gather):
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    first_row = np.cumsum([0] + [len(x["key"]) for x in parts])
    return gather(lambda s, r: position[first_row[s] + r])


def keeper_ids(work: Path, plan: Plan) -> dict[int, str]:
    """Ids of the records that duplicates name (the kept one, the first exact copy)."""
    dup = ~plan.kept()
    wanted = np.unique(np.concatenate([plan.keeper[dup], plan.first_copy[dup]]))
    out = {}
    for s in np.unique(plan.shard[wanted]):
        lines = read_ids(work, s)
        for g in wanted[plan.shard[wanted] == s]:
            out[int(g)] = lines[plan.row[g]].decode()
    return out


def duplicate_event(plan: Plan, names: dict[int, str], i: int) -> dict:
    """The rejection of candidate i, a duplicate: exact or near, and of which record."""
    k, first = int(plan.keeper[i]), int(plan.first_copy[i])
    exact = first != i
    detail = "same normalised text" if exact else "near-duplicate (MinHash LSH)"
    if exact and first != k:
        detail += f" as {names[first]}"
    return {"reason": "exact_duplicate" if exact else "near_duplicate", "detail": detail, "duplicate_of": names[k]}


def finish_shard(run_dir: Path, work: Path, shard: int, plan: Plan, names: dict[int, str]) -> dict:
    """Second map: this shard's kept examples (in input order) and every candidate's final event."""
    mine = np.flatnonzero(plan.shard == shard)
    kept, dups, per_template = defaultdict(int), defaultdict(int), defaultdict(int)
    ungrounded, lines_kept, grounding = defaultdict(int), [], _GroundingTally(plan.grounding)
    with open(work / f"examples-{shard}.jsonl", "wb") as out, \
            LedgerWriter(run_dir, "prepare", part=f"dedupe-{shard}") as ledger:
        for i, c in zip(mine.tolist(), read_candidates(work, shard, plan.offset[mine].tolist())):
            if plan.keeper[i] == i:
                lines, ids, templates = grounding.apply(c, ledger)
                out.writelines(lines)
                lines_kept.append(len(lines))
                if not lines:
                    ungrounded[c.source] += 1
                    continue
                ledger.kept(c.id, c.source, detail=c.note, example_ids=ids, step="dedupe")
                kept[c.source] += 1
                for t in templates:
                    per_template[t] += 1
            else:
                ledger.rejected(c.id, c.source, step="dedupe", **duplicate_event(plan, names, i))
                dups[c.source] += 1
    return {"kept": dict(kept), "duplicates": dict(dups), "examples": dict(per_template),
            "ungrounded": dict(ungrounded), "lines": lines_kept, "grounding": grounding.totals()}


class _GroundingTally:
    """finish_shard's grounding: each kept record's examples through the policy, its ledger
    events, and the shard's counts and phrases."""

    def __init__(self, gplan):
        self.plan = gplan
        self.stats: dict[str, int] = defaultdict(int)
        self.phrases: dict[str, int] = defaultdict(int)

    def apply(self, c, ledger) -> tuple[list[bytes], list[str], list[str]]:
        if self.plan is None:
            return c.lines, c.example_ids, c.templates
        from ..grounding.targets import apply
        done = apply(self.plan, c.lines)
        for status, reason, detail, spans in done.events:
            ledger.event(c.id, c.source, status, reason, detail, step="grounding", extra={"spans": spans})
        for k, n in done.stats.items():
            self.stats[k] += n
        for (kind, phrase), n in done.phrases.items():
            self.phrases[f"{kind}\t{phrase}"] += n
        if len(done.lines) == len(c.lines):
            return done.lines, c.example_ids, c.templates
        left = [orjson.loads(line) for line in done.lines]
        return done.lines, [ex["id"] for ex in left], [ex["template"] for ex in left]

    def totals(self) -> dict:
        return {"stats": dict(self.stats), "phrases": dict(self.phrases)}


def assemble(run_dir: Path, work: Path, n_shards: int, plan: Plan, finals: list[dict] | None = None) -> None:
    """data/examples.jsonl from the shards' parts: a concatenation when each shard holds one block of
    the input order (byte-range sharding), else a merge in input order."""
    out_path = Path(run_dir) / "data" / "examples.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kept = plan.kept()
    shard_seq = plan.shard[kept]
    changes = np.flatnonzero(np.diff(shard_seq)) + 1
    blocks = shard_seq[np.concatenate(([0], changes))].tolist() if len(shard_seq) else []
    with open(out_path, "wb") as out:
        if len(set(blocks)) == len(blocks):
            for s in blocks:
                with open(work / f"examples-{s}.jsonl", "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        else:
            _merge(out, work, n_shards, shard_seq.tolist(), _lines_kept(plan, finals))


def _lines_kept(plan: Plan, finals: list[dict] | None) -> list[int]:
    """Lines per kept record in input order: as rendered, or as grounding left them."""
    kept = plan.kept()
    n = plan.n_examples[kept].copy()
    if finals:
        shard_seq = plan.shard[kept]
        for s, final in enumerate(finals):
            if "lines" in final:
                n[shard_seq == s] = final["lines"]
    return n.tolist()


def _merge(out, work: Path, n_shards: int, shard_seq: list[int], n_examples: list[int]) -> None:
    """The kept examples in input order, taking each record's lines from the shard that holds it."""
    parts = [open(work / f"examples-{s}.jsonl", "rb") for s in range(n_shards)]
    try:
        for s, n in zip(shard_seq, n_examples):
            for _ in range(n):
                out.write(parts[s].readline())
    finally:
        for part in parts:
            part.close()


def order_ledger(run_dir: Path, inputs, n_shards: int) -> None:
    """The shards' ledger parts as one ledger/prepare/events.jsonl in input order (a record's own
    events in the order they happened), so ledger.jsonl does not depend on the shard count or engine."""
    folder = Path(run_dir) / "ledger" / "prepare"
    parts = [folder / f"{kind}{s}.jsonl" for kind in ("", "dedupe-") for s in range(n_shards)]
    index: dict[str, int] = {}
    for i, inp in enumerate(inputs):
        index.setdefault(inp.source.name, i)
    events = []
    for path in parts:
        with open(path, "rb") as fh:
            for line in fh:
                ev = orjson.loads(line)
                where, _, n = ev["id"].rpartition("#")
                events.append(((index.get(ev["source"], len(index)), where, int(n) if n.isdigit() else 0), line))
    events.sort(key=lambda e: e[0])  # stable: ties keep the map's events before the write's
    tmp = folder / "events.jsonl.tmp"
    with open(tmp, "wb") as out:
        out.writelines(line for _, line in events)
    for path in parts:
        path.unlink()
    tmp.rename(folder / "events.jsonl")
