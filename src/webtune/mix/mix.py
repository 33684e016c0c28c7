"""The mix stage: split, tokenize, balance domain and general data by tokens, pack.

Writes data/{train,val,test,general_test}.jsonl (lines exactly {"messages": [...]}),
data/packed/{train,val}.npz (token ids, labels, the packing plan) and data/mix.json (what went
where, the realised mix), plus ledger events for every example it places or drops.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import orjson

from ..console import log
from ..errors import WebtuneError
from ..paths import locate
from ..fileio import atomic_path, iter_jsonl as read_jsonl
from ..ledger import LedgerWriter
from .decontam import decontaminate, read_benchmark
from .split import assign, require_domain_test, require_domain_train
from .refresh_split import freeze_old_test, placement

SPLIT_FILES = {"train": "data/train.jsonl", "val": "data/val.jsonl", "test": "data/test.jsonl"}


def write_messages(path: Path, examples) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for ex in examples:
            fh.write(orjson.dumps({"messages": ex["messages"]}) + b"\n")


def run(cfg, run_dir: Path, console=None) -> dict:
    m = cfg.mix
    examples = list(read_jsonl(run_dir / "data/examples.jsonl"))
    has_general_test = m.general.enabled and len(m.general.test_files) > 0
    splits = {"train": [], "val": [], "test": []}
    place = placement(cfg, run_dir)   # a refresh keeps the promoted version's splits
    for ex in examples:
        test_fraction = 0.0 if (ex["side"] == "general" and has_general_test) else m.test_fraction
        split = assign(ex["group"], m.seed, m.val_fraction, test_fraction)
        split = place.split_of(ex, split) if place else split
        if split is not None:
            splits[split].append(ex)
    require_domain_test(splits, examples, m.test_fraction, m.seed, log=log)
    require_domain_train(splits, log=log)
    general_test = []
    for path in (m.general.test_files if m.general.enabled else []):
        general_test += [{"messages": r["messages"]} for r in read_jsonl(locate(path))]

    counter = TokenCounter(cfg)
    ledger = LedgerWriter(run_dir, "mix")
    splits["train"], decontam = decontaminate(splits["train"], held_out_sets(cfg, splits["test"], general_test),
                                              m.decontam, cfg.prepare.dedupe, ledger)
    if place:
        freeze_old_test(run_dir)
        for ex, reason, detail in place.left_out:
            ledger.rejected(ex["record_id"], ex["source"], reason, detail, example_ids=[ex["id"]], step="mix")
    train = encode_split(splits["train"], counter, m, ledger)
    val = encode_split(splits["val"], counter, m, ledger)
    train, mix_stats = balance(train, m, ledger)
    if not any(ex["side"] == "domain" for ex in train):
        raise WebtuneError("no domain examples reached the training split: check the ledger "
                           "(`webtune ledger RUN`) for why records were rejected")
    for split, items in (("train", train), ("val", val)):
        for ex in items:
            ledger.kept(ex["record_id"], ex["source"], detail=f"split={split}", example_ids=[ex["id"]], step="mix")
    for ex in splits["test"]:
        ledger.kept(ex["record_id"], ex["source"], detail="split=test", example_ids=[ex["id"]], step="mix")
    ledger.close()

    (run_dir / "data").mkdir(exist_ok=True)
    write_messages(run_dir / SPLIT_FILES["train"], train)
    write_messages(run_dir / SPLIT_FILES["val"], val)
    write_messages(run_dir / SPLIT_FILES["test"], [ex for ex in splits["test"] if ex["side"] == "domain"])
    write_messages(run_dir / "data/general_test.jsonl",
                   general_test or [ex for ex in splits["test"] if ex["side"] == "general"])
    packing = {}
    if counter.tokenizer is not None:
        packing = {split: pack_split(items, m, run_dir / "data/packed" / f"{split}.npz")
                   for split, items in (("train", train), ("val", val))}
    stats = {"examples": {k: len(v) for k, v in splits.items()}, "mix": mix_stats, "packing": packing,
             "token_count": counter.method, "decontam": decontam}
    (run_dir / "data/mix.json").write_bytes(orjson.dumps(
        {**stats, "splits": {"train": [ex["id"] for ex in train], "val": [ex["id"] for ex in val],
                             "test": [ex["id"] for ex in splits["test"]]}}, option=orjson.OPT_INDENT_2))
    return stats


def held_out_sets(cfg, test: list[dict], general_test: list[dict]) -> dict[str, list[dict]]:
    """What evaluate scores: the domain test set, the general test set, each eval.benchmarks file."""
    sets = {"test": [ex for ex in test if ex["side"] == "domain"],
            "general_test": general_test or [ex for ex in test if ex["side"] == "general"]}
    for path in cfg.eval.get("benchmarks") or []:
        sets[Path(path).name] = read_benchmark(path)
    return sets


class TokenCounter:
    """Exact token ids with the model's tokenizer; for an API model, an approximation (chars / 4)."""

    def __init__(self, cfg):
        self.tokenizer = None
        self.method = "approximate: characters / 4"
        if cfg.model.kind == "hf":
            from ..chat.tokenize import ChatTokenizer, load_tokenizer
            self.tokenizer = ChatTokenizer(load_tokenizer(cfg.model), cfg.model.name_or_path)
            self.method = f"exact: tokenizer of {cfg.model.tokenizer or cfg.model.name_or_path}"

    def encode(self, messages):
        if self.tokenizer is not None:
            return self.tokenizer.encode(messages)
        n = sum(len(msg["content"]) for msg in messages) // 4 + 4 * len(messages)
        return [0] * n, None


def encode_split(examples: list[dict], counter, m, ledger) -> list[dict]:
    """Tokenize; apply the over-length policy (truncate, drop or split) with ledger reasons."""
    out = []
    limit = m.max_seq_len
    for ex in examples:
        ids, labels = counter.encode(ex["messages"])
        if len(ids) <= limit or counter.tokenizer is None:
            out.append({**ex, "input_ids": ids, "labels": labels})
            continue
        policy = m.packing.overflow
        detail = f"{len(ids)} tokens > max_seq_len {limit}"
        if policy == "drop":
            ledger.rejected(ex["record_id"], ex["source"], "too_long", detail, example_ids=[ex["id"]], step="pack")
        elif policy == "truncate":
            ledger.repaired(ex["record_id"], ex["source"], "truncated", detail, step="pack")
            out.append({**ex, "input_ids": ids[:limit], "labels": labels[:limit]})
        elif policy == "split":
            ledger.repaired(ex["record_id"], ex["source"], "split", detail, step="pack")
            for k, start in enumerate(range(0, len(ids), limit)):
                out.append({**ex, "id": f"{ex['id']}~{k + 1}", "input_ids": ids[start:start + limit],
                            "labels": labels[start:start + limit]})
        else:
            raise WebtuneError(f"mix.packing.overflow={policy!r}: use truncate, drop or split")
    return out


def n_tokens(ex: dict) -> int:
    return len(ex["input_ids"])


def balance(train: list[dict], m, ledger) -> tuple[list[dict], dict]:
    """Hit the general share in tokens: take general examples in a seeded order until the target."""
    domain = [ex for ex in train if ex["side"] == "domain"]
    general = [ex for ex in train if ex["side"] == "general"]
    d_tokens = sum(map(n_tokens, domain))
    share = m.general_share if m.general.enabled else 0.0
    target = round(share / (1 - share) * d_tokens) if share < 1 else sum(map(n_tokens, general))
    order = general[:]
    random.Random(m.seed).shuffle(order)
    chosen, total, passes = [], 0, 0
    while total < target:
        progressed = False
        for ex in order:
            if total >= target:
                break
            if total + n_tokens(ex) - target > target - total:  # overshoots more than it helps
                continue
            chosen.append(ex if passes == 0 else {**ex, "id": f"{ex['id']}+{passes}"})
            total += n_tokens(ex)
            progressed = True
        passes += 1
        if m.short_policy != "oversample" or not progressed:
            break
    chosen_ids = {ex["id"] for ex in chosen}
    for ex in general:
        if ex["id"] not in chosen_ids:
            ledger.rejected(ex["record_id"], ex["source"], "general_share_reached",
                            f"target {target} general tokens", example_ids=[ex["id"]], step="mix")
    g_tokens = sum(map(n_tokens, chosen))
    mixed = domain + chosen
    random.Random(m.seed + 1).shuffle(mixed)
    stats = {"target_general_share": share, "realised_general_share": round(g_tokens / max(1, d_tokens + g_tokens), 4),
             "domain": {"examples": len(domain), "tokens": d_tokens},
             "general": {"examples": len(chosen), "tokens": g_tokens, "available_examples": len(general),
                         "available_tokens": sum(map(n_tokens, general))},
             "short_policy": m.short_policy}
    return mixed, stats


def pack_split(items: list[dict], m, path: Path) -> dict:
    """Token ids and labels of every example, flat, with the best-fit-decreasing plan."""
    from .pack import efficiency, plan_bfd
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([n_tokens(ex) for ex in items], dtype=np.int64)
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((t for ex in items for t in ex["input_ids"]), dtype=np.int32, count=int(offsets[-1]))
    labels = np.fromiter((t for ex in items for t in ex["labels"]), dtype=np.int32, count=int(offsets[-1]))
    if m.packing.enabled:
        bins = plan_bfd(lengths, m.max_seq_len)
    else:
        bins = [np.array([i]) for i in range(len(items))]
    bin_offsets = np.zeros(len(bins) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in bins], out=bin_offsets[1:])
    bin_items = np.concatenate(bins).astype(np.int64) if bins else np.zeros(0, dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:   # a file object: savez adds no ".npz"
        np.savez(fh, input_ids=ids, labels=labels, offsets=offsets, bin_items=bin_items, bin_offsets=bin_offsets)
    eff = float(efficiency(lengths, bins, m.max_seq_len)) if len(items) else 0.0
    return {"examples": len(items), "rows": len(bins), "tokens": int(offsets[-1]),
            "loss_tokens": int((labels != -100).sum()), "efficiency": round(eff, 5)}
