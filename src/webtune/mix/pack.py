"""Best-fit-decreasing packing of examples into rows of at most `capacity` tokens.

One plan over the whole training set (TRL packs each 1,000-row map batch on its own, which
leaves ~0.3% more padding). Examples longer than a row were already cut, dropped or split by the
`mix.packing.overflow` policy (`mix.encode_split`, which writes their fates to the ledger).
Attention isolation between the examples of a row is the collator's job
(`webtune.train.collate.PackedCollator`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

def plan_bfd(lengths: np.ndarray, capacity: int) -> list[np.ndarray]:
    """Best-fit-decreasing: the indices of the examples in each bin (row).

    Every index appears exactly once; no bin holds more than `capacity` tokens. Bins come in the
    order they were opened (largest first); shuffling rows for training is the caller's business.
    Every length must be in 1..capacity (`mix.encode_split` sees to it).
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be a 1-D array, got shape {lengths.shape}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    n = len(lengths)
    if n == 0:
        return []
    bad = np.flatnonzero((lengths < 1) | (lengths > capacity))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"example {i} has {int(lengths[i])} tokens, outside 1..{capacity} "
                         f"({len(bad)} such examples); apply the overflow policy before planning")

    order = np.argsort(-lengths, kind="stable")
    # Open bins bucketed by remaining space; bit r of `free` is set while bucket r is non-empty,
    # so the best fit for an item of size s is the lowest set bit of `free >> s`.
    buckets: list[list[int]] = [[] for _ in range(capacity)]
    free = 0
    bin_of: list[int] = []
    n_bins = 0
    for s in lengths[order].tolist():
        m = free >> s
        if m:
            r = s + (m & -m).bit_length() - 1
            stack = buckets[r]
            b = stack.pop()
            if not stack:
                free ^= 1 << r
        else:
            b, r = n_bins, capacity
            n_bins += 1
        bin_of.append(b)
        r -= s
        if r:  # a full bin is never offered again
            stack = buckets[r]
            if not stack:
                free |= 1 << r
            stack.append(b)

    bins_sorted = np.array(bin_of, dtype=np.int64)
    members = order[np.argsort(bins_sorted, kind="stable")]
    counts = np.bincount(bins_sorted, minlength=n_bins)
    return np.split(members, np.cumsum(counts)[:-1])


def efficiency(lengths: np.ndarray, bins: Sequence[np.ndarray], capacity: int) -> float:
    """Share of the rows' token slots that hold real tokens: sum(lengths) / (rows * capacity)."""
    if not len(bins):
        return 0.0
    lengths = np.asarray(lengths)
    used = sum(int(lengths[b].sum()) for b in bins)
    return used / (len(bins) * capacity)
