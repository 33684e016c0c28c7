"""Decontamination: training examples that overlap a held-out set leave the training split.

A training example is contaminated by a held-out set (the domain test set, the general test set,
each file in `eval.benchmarks`) when it shares with one of its examples
  - word n-grams (`mix.decontam.ngram`, 13 by default, as GPT-3 and most since): at least
    `mix.decontam.min_share` of the held-out example's n-grams (0: any one of them, GPT-3's rule),
    words normalised as prepare's dedupe does (lower case, ASCII punctuation dropped); a text
    shorter than n words is one n-gram, so a short question copied whole is found too; or
  - a near-duplicate MinHash signature (textsig/dedupe.py's Signer: LSH bands at
    `mix.decontam.threshold` Jaccard of word 5-shingles) or the same normalised text.
Only the user and assistant turns are compared (a shared system prompt is not contamination). Why a
share and not any one n-gram by default: on the default's product records, whose feature bullets
recur across products of a kind, "any shared 13-gram" removed 141 of 442 training examples that
are different products; at a 0.5 share none is removed, while a copied test example shares 100%
(bench/RESULTS.md). Only the training side shrinks; each removed example gets `contaminated:<set>` in the
ledger, naming the held-out example and the shared words.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import WebtuneError
from ..fileio import iter_jsonl
from ..paths import locate

_DROP = str.maketrans("", "", string.punctuation)


@dataclass
class Overlap:
    index: int          # the training example's position
    set: str            # the held-out set's name
    other: str          # the held-out example's id (or line)
    how: str            # what they share


def text_of(messages: list[dict]) -> str:
    return "\n".join(m.get("content") or "" for m in messages if m.get("role") != "system")


def normal_words(text: str) -> list[str]:
    return text.lower().translate(_DROP).split()


def read_benchmark(path: str) -> list[dict]:
    """A benchmark file: JSONL of {"messages": [...]} or {"prompt", "answer"} (or completion/response)."""
    found = locate(path)
    if not Path(found).is_file():
        raise WebtuneError(f"eval.benchmarks: {path} not found; give JSONL files of messages or prompt/answer")
    out = []
    for n, rec in enumerate(iter_jsonl(found), 1):
        if isinstance(rec, dict) and isinstance(rec.get("messages"), list):
            messages = rec["messages"]
        elif isinstance(rec, dict) and isinstance(rec.get("prompt"), str):
            answer = next((rec[k] for k in ("answer", "completion", "response", "output") if isinstance(rec.get(k), str)), "")
            messages = [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": answer}]
        else:
            raise WebtuneError(f"{path}:{n}: expected {{\"messages\": [...]}} or {{\"prompt\", \"answer\"}}")
        out.append({"id": f"{Path(path).name}#{n}", "messages": messages})
    return out


def find(train: list[dict], held_out: dict[str, list[dict]], cfg, signer_cfg) -> list[Overlap]:
    """The training examples that overlap a held-out example (the first overlap of each)."""
    from ..textsig.dedupe import Signer

    names = [name for name, items in held_out.items() if items]
    held = [(name, ex) for name in names for ex in held_out[name]]
    if not train or not held:
        return []
    texts = [text_of(ex["messages"]) for ex in train] + [text_of(ex["messages"]) for _, ex in held]
    found = _shared_ngrams(texts, len(train), held, cfg)
    if float(cfg.threshold) > 0:
        _near(found, texts, len(train), held, cfg, signer_cfg, Signer)
    return [found[i] for i in sorted(found)]


def _shared_ngrams(texts: list[str], n_train: int, held, cfg) -> dict[int, Overlap]:
    """Training examples holding at least `min_share` of some held-out example's word n-grams
    (at least one n-gram when min_share is 0)."""
    from ..textsig.dedupe import shingle_hashes
    from ..textsig.words import analyse

    k = int(cfg.ngram)
    words = analyse(texts)
    grams, offsets = shingle_hashes(words.hashes, words.counts, k)
    sizes = np.diff(offsets.astype(np.int64))
    owner = np.repeat(np.arange(len(texts)), sizes)
    held_grams = np.unique(grams[owner >= n_train])
    where = np.flatnonzero((owner < n_train) & np.isin(grams, held_grams))
    if not len(where):
        return {}
    holders: dict[int, set[int]] = {}
    for g, o in zip(grams[owner >= n_train].tolist(), owner[owner >= n_train].tolist()):
        holders.setdefault(g, set()).add(o - n_train)
    n_held = {j: len(set(grams[offsets[n_train + j]:offsets[n_train + j + 1]].tolist())) for j in range(len(held))}
    shared: dict[tuple[int, int], set[int]] = {}
    first_at: dict[tuple[int, int], int] = {}
    for pos in where.tolist():
        i, g = int(owner[pos]), int(grams[pos])
        for j in holders[g]:
            shared.setdefault((i, j), set()).add(g)
            first_at.setdefault((i, j), pos)
    found: dict[int, Overlap] = {}
    need = float(cfg.min_share)
    for (i, j), gs in sorted(shared.items()):
        share = len(gs) / max(1, n_held[j])
        if i in found or share < need or not gs:
            continue
        start = first_at[(i, j)] - int(offsets[i])
        said = " ".join(normal_words(texts[i])[start:start + k])
        found[i] = Overlap(i, held[j][0], held[j][1].get("id", f"#{j + 1}"),
                           f"shares {share:.0%} of its word {k}-grams (“{said}” ...)")
    return found


def _near(found: dict, texts: list[str], n_train: int, held, cfg, signer_cfg, Signer) -> None:
    sig = {"exact": True, "near": True, "shingle": int(signer_cfg.shingle), "num_perm": int(signer_cfg.num_perm),
           "threshold": float(cfg.threshold), "engine": str(signer_cfg.engine)}
    exact, bands, empty = Signer(SimpleNamespace(**sig)).sign(texts)
    lookup: dict[tuple[int, int], int] = {}
    for j in range(len(held) - 1, -1, -1):          # the first held-out example wins
        row = n_train + j
        if empty[row]:
            continue
        lookup[(-1, int(exact[row]))] = j
        for b, h in enumerate(bands[row].tolist()):
            lookup[(b, h)] = j
    for i in range(n_train):
        if i in found or empty[i]:
            continue
        j = lookup.get((-1, int(exact[i])))
        how = "the same normalised text"
        if j is None:
            j = next((lookup[(b, h)] for b, h in enumerate(bands[i].tolist()) if (b, h) in lookup), None)
            how = f"a near-duplicate (MinHash, Jaccard ≳ {float(cfg.threshold):g})"
        if j is not None:
            found[i] = Overlap(i, held[j][0], held[j][1].get("id", f"#{j + 1}"), how)


def decontaminate(train: list[dict], held_out: dict[str, list[dict]], cfg, signer_cfg, ledger) -> tuple[list[dict], dict]:
    """`train` without its contaminated examples (ledger `contaminated:<set>`), and the counts per set."""
    if not cfg.enabled:
        return train, {}
    overlaps = find(train, held_out, cfg, signer_cfg)
    gone = {o.index for o in overlaps}
    counts = {name: 0 for name in held_out}
    for o in overlaps:
        ex = train[o.index]
        counts[o.set] += 1
        ledger.rejected(ex["record_id"], ex["source"], f"contaminated:{o.set}", f"{o.how} with {o.other}",
                        example_ids=[ex["id"]], step="decontam")
    kept = [ex for i, ex in enumerate(train) if i not in gone]
    return kept, {"removed": counts, "ngram": int(cfg.ngram), "min_share": float(cfg.min_share),
                  "threshold": float(cfg.threshold), "held_out": {name: len(items) for name, items in held_out.items()}}
