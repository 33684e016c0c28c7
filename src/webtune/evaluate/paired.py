"""Paired evidence: one per-item score of two models on the same held-out items, as a difference with a
95% interval, whether it is significant, and the items that got worse.

Scores come as {item id: value}; only the items both models have are compared, so a per-item score
is a paired sample. Three kinds:

- `mean`: a continuous score per item (chrF, ROUGE-L, PARENT F); the difference of the means.
- `ratio`: a sum per item over a weight per item (held-out loss: nats summed over an example's assistant
  tokens, and their count); the difference of the weighted means, the number the aggregate loss gives.
- `binary`: pass/fail per item (a task check, "states no unsupported value"); the difference in rates.

The interval is a seeded paired bootstrap (resample items, recompute the statistic; percentiles), so
it reproduces exactly. A continuous difference is significant when its interval leaves out 0 and at
least `MIN_ITEMS` items were compared (a bootstrap of 2 items can exclude 0 by chance: 3 resamples);
a pass/fail difference when McNemar's exact test on the discordant items says so (a handful of
discordant items is where a bootstrap interval is too narrow).
"""
from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
MIN_ITEMS = 10        # fewer items than this never make a continuous difference significant
WORST_LISTED = 10     # items listed per measure where the new model did worst


def mcnemar_exact(newly_failing: int, newly_passing: int) -> float:
    """Two-sided exact McNemar p-value: the discordant items as a fair coin's binomial."""
    n = newly_failing + newly_passing
    if n == 0:
        return 1.0
    k = min(newly_failing, newly_passing)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def bootstrap(diffs: np.ndarray, weights: np.ndarray | None, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of sum(diffs)/sum(weights) (or the mean) over items resampled with replacement."""
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for start in range(0, resamples, 500):   # 500 resamples at a time bounds memory on large test sets
        idx = rng.integers(0, len(diffs), size=(min(500, resamples - start), len(diffs)))
        d = diffs[idx].sum(1)
        stats[start:start + len(idx)] = d / (weights[idx].sum(1) if weights is not None else len(diffs))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def compare(measure: str, old: dict, new: dict, *, kind: str = "mean", higher_is_better: bool = True,
            weights: dict | None = None, seed: int = 0, resamples: int = 2000, old_label: str = "base",
            new_label: str = "tuned") -> dict:
    """The paired comparison of `new` against `old` on one measure (see the module doc).

    Returns {measure, kind, n, old, new, diff (new - old), low, high, higher_is_better, p (binary only),
    significant: "better" | "worse" | None, worse_items}: `worse_items` are, for pass/fail, the ids the
    new model fails where the old one passed; otherwise the ids where it did worst, worst first."""
    ids = sorted(i for i in old.keys() & new.keys() if old[i] is not None and new[i] is not None)
    out = {"measure": measure, "kind": kind, "old_label": old_label, "new_label": new_label, "n": len(ids),
           "higher_is_better": higher_is_better, "old": None, "new": None, "diff": None, "low": None,
           "high": None, "significant": None, "worse_items": []}
    if not ids:
        return out
    a = np.array([float(old[i]) for i in ids])
    b = np.array([float(new[i]) for i in ids])
    w = np.array([float(weights[i]) for i in ids]) if kind == "ratio" else None
    total = w.sum() if w is not None else len(ids)
    sign = 1 if higher_is_better else -1
    out.update(old=round(float(a.sum() / total), 4), new=round(float(b.sum() / total), 4),
               diff=round(float((b - a).sum() / total), 4))
    if len(ids) >= 2:
        low, high = bootstrap(b - a, w, resamples, seed)
        out.update(low=round(low, 4), high=round(high, 4))
    if kind == "binary":
        bad = 0.0 if higher_is_better else 1.0
        failing = [i for i, x, y in zip(ids, a, b) if x != bad and y == bad]
        passing = sum(1 for x, y in zip(a, b) if x == bad and y != bad)
        out.update(p=round(mcnemar_exact(len(failing), passing), 4), newly_failing=len(failing),
                   newly_passing=passing, worse_items=failing)
        if out["p"] < 1 - CONFIDENCE:
            out["significant"] = "worse" if len(failing) > passing else "better"
        return out
    per_item = (b - a) / (w if w is not None else 1.0) * sign     # negative: the new model did worse here
    order = [k for k in np.argsort(per_item, kind="stable") if per_item[k] < 0][:WORST_LISTED]
    out["worse_items"] = [ids[k] for k in order]
    if len(ids) >= MIN_ITEMS and out["low"] is not None:
        if out["low"] > 0 or out["high"] < 0:
            out["significant"] = "better" if (out["low"] > 0) == higher_is_better else "worse"
    return out


def describe(c: dict, unit: str = "") -> str:
    """One line: 'chrF 25.6 -> 49, +23.4 (95% CI +18.1 to +28.7, n=12): tuned significantly better than base'."""
    if c["diff"] is None:
        return f"{c['measure']}: no items to compare"
    ci = f"95% CI {c['low']:+.3g} to {c['high']:+.3g}, " if c["low"] is not None else ""
    p = f", McNemar p={c['p']:.3g}" if c["kind"] == "binary" else ""
    verdict = {"better": "significantly better than", "worse": "significantly worse than"}.get(
        c["significant"], "too few items to tell from" if c["kind"] != "binary" and c["n"] < MIN_ITEMS
        else f"worse, by less than its margin {c['within_margin']:g}, than" if c.get("within_margin")
        else "not significantly different from")
    return (f"{c['measure']} {c['old']:.4g} -> {c['new']:.4g}{unit}, {c['diff']:+.3g} ({ci}n={c['n']}{p}): "
            f"{c['new_label']} {verdict} {c['old_label']}")
