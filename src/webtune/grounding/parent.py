"""PARENT (Dhingra et al. 2019, "Handling Divergent Reference Texts when Evaluating Table-to-Text
Generation"), re-implemented: n-gram precision and recall of a text against its source (the
"table") and, when there is one, a reference.

  precision  per order n = 1..4, each n-gram of the text counts as correct if the reference has it,
             else with the probability that the source entails it (the share of its words the
             source holds: the paper's word-overlap model); geometric mean over orders.
  recall     against the reference, each reference n-gram weighted by that same entailment
             probability; against the source, the mean over its entries of LCS(entry, text) /
             len(entry); combined as rec_ref^(1-λ) · rec_src^λ with λ = 1 - the share of the
             source the reference itself mentions (the reference-adaptive weight). Without a
             reference, recall is the source recall alone.
Zero orders are smoothed with 1e-5, as the paper's code does.
"""
from __future__ import annotations

import math
from collections import Counter

SMOOTHING = 1e-5
MAX_ORDER = 4


def _counts(toks: list[str], n: int) -> Counter:
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def lcs_length(a: list, b: list) -> int:
    """The length of the longest common subsequence of two token lists (also ROUGE-L's core)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _mention(entry: list[str], toks: list[str]) -> float:
    return lcs_length(entry, toks) / len(entry) if entry else 0.0


def _geo(scores: list[float]) -> float:
    scores = [s or SMOOTHING for s in scores]
    return math.exp(sum(math.log(s) for s in scores) / len(scores))


def parent(text: list[str], entries: list[list[str]], reference: list[str] | None = None,
           max_order: int = MAX_ORDER) -> tuple[float, float, float]:
    """(precision, recall, F1) of the tokens `text` against source `entries` (token lists) and `reference`."""
    entries = [e for e in entries if e]
    table = {t for e in entries for t in e}

    def entailed(gram) -> float:
        return sum(t in table for t in gram) / len(gram)

    precs, recs = [], []
    for n in range(1, max_order + 1):
        pred = _counts(text, n)
        ref = _counts(reference, n) if reference else Counter()
        num = den = 0.0
        for gram, c in pred.items():
            in_ref = min(1.0, ref.get(gram, 0) / c)
            num += c * (in_ref + (1 - in_ref) * entailed(gram))
            den += c
        precs.append(num / den if den else 0.0)
        if reference:
            num = den = 0.0
            for gram, c in ref.items():
                w = entailed(gram)
                num += c * w * min(1.0, pred.get(gram, 0) / c)
                den += c * w
            recs.append(num / den if den else 1.0)
    precision = 0.0 if not text else _geo(precs)
    table_rec = (sum(_mention(e, text) for e in entries) / len(entries) if entries else 0.0) or SMOOTHING
    if reference:
        lam = 1.0 - (sum(_mention(e, reference) for e in entries) / len(entries) if entries else 0.0)
        recall = math.exp((1 - lam) * math.log(_geo(recs)) + lam * math.log(table_rec))
    else:
        recall = table_rec
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
