"""Best-fit-decreasing packing of examples into rows of at most `capacity` tokens.

One plan over the whole training set (TRL packs each 1,000-row map batch on its own, which
leaves ~0.3% more padding). Examples longer than a row are first cut, dropped or split by the
`mix.packing.overflow` policy (`apply_overflow`), whose fates the caller writes to the ledger.
Attention isolation between the examples of a row is the collator's job
(`webtune.train.collate.PackedCollator`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

OVERFLOW_POLICIES = ("truncate", "drop", "split")


def plan_bfd(lengths: np.ndarray, capacity: int) -> list[np.ndarray]:
    """Best-fit-decreasing: the indices of the examples in each bin (row).

    Every index appears exactly once; no bin holds more than `capacity` tokens. Bins come in the
    order they were opened (largest first); shuffling rows for training is the caller's business.
    Every length must be in 1..capacity (run `apply_overflow` first).
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


@dataclass
class Overflow:
    """What the overflow policy did: the pieces to pack, and the fate of each over-length example.

    Piece i is tokens `start[i]:start[i] + length[i]` of example `example[i]`.
    """

    policy: str
    capacity: int
    source_lengths: np.ndarray  # tokens per input example
    example: np.ndarray         # per piece: the example it comes from
    start: np.ndarray           # per piece: its first token in that example
    length: np.ndarray          # per piece: its tokens (1..capacity)
    over: np.ndarray            # indices of the examples longer than capacity

    def fates(self) -> Iterator[tuple[int, str, str, str]]:
        """(example index, ledger status, reason, detail) for each over-length example."""
        cap = self.capacity
        for i in self.over.tolist():
            n = int(self.source_lengths[i])
            if self.policy == "drop":
                yield i, "rejected", "too_long", f"{n} tokens > max_seq_len {cap} (mix.packing.overflow=drop)"
            elif self.policy == "truncate":
                yield i, "repaired", "truncated", f"{n} tokens cut to max_seq_len {cap}, {n - cap} lost"
            else:
                k = -(-n // cap)
                yield i, "repaired", "split", f"{n} tokens split into {k} pieces of <= {cap}"

    @property
    def tokens_lost(self) -> int:
        return int(self.source_lengths.sum() - self.length.sum())


def apply_overflow(lengths: np.ndarray, capacity: int, policy: str) -> Overflow:
    """Cut examples longer than `capacity` into pieces that fit, per policy.

    truncate: keep the first `capacity` tokens; drop: leave the example out;
    split: consecutive pieces of `capacity` tokens (the last one shorter), packed independently.
    """
    if policy not in OVERFLOW_POLICIES:
        raise ValueError(f"unknown overflow policy {policy!r}: use one of {', '.join(OVERFLOW_POLICIES)} "
                         "(mix.packing.overflow)")
    lengths = np.asarray(lengths, dtype=np.int64)
    empty = np.flatnonzero(lengths < 1)
    if len(empty):
        raise ValueError(f"example {int(empty[0])} has no tokens ({len(empty)} such examples)")
    idx = np.arange(len(lengths))
    over = np.flatnonzero(lengths > capacity)
    if policy == "truncate":
        example, start, length = idx, np.zeros(len(idx), np.int64), np.minimum(lengths, capacity)
    elif policy == "drop":
        keep = lengths <= capacity
        example, start, length = idx[keep], np.zeros(int(keep.sum()), np.int64), lengths[keep]
    else:
        pieces = -(-lengths // capacity)
        example = np.repeat(idx, pieces)
        first = np.cumsum(pieces) - pieces             # index of each example's first piece
        k = np.arange(len(example)) - np.repeat(first, pieces)  # piece number within its example
        start = k * capacity
        length = np.minimum(lengths[example] - start, capacity)
    return Overflow(policy, capacity, lengths, example, start, length, over)


@dataclass
class Packed:
    """Packed rows ready for `PackedCollator`, with what the report and metrics.json need."""

    rows: list[list[dict]]
    overflow: Overflow
    efficiency: float
    pieces_without_loss: int = 0  # pieces (often split-off prompt parts) with no token to learn from

    def stats(self) -> dict:
        o = self.overflow
        return {"rows": len(self.rows), "examples": len(o.source_lengths), "pieces": len(o.length),
                "tokens": int(o.length.sum()), "capacity": o.capacity, "efficiency": self.efficiency,
                "overflow_policy": o.policy, "over_length": len(o.over), "tokens_lost": o.tokens_lost,
                "pieces_without_loss": self.pieces_without_loss}


def pack_examples(examples: Sequence[dict], capacity: int, policy: str = "truncate") -> Packed:
    """Pack `{"input_ids": [...], "labels": [...]}` examples into rows with best-fit-decreasing.

    Each row is a list of (possibly cut) examples; over-length ones follow `policy`, and
    `packed.overflow.fates()` says what happened to each for the ledger.
    """
    for i, ex in enumerate(examples):
        if len(ex["input_ids"]) != len(ex["labels"]):
            raise ValueError(f"example {i}: input_ids has {len(ex['input_ids'])} tokens but labels "
                             f"has {len(ex['labels'])}")
    lengths = np.fromiter((len(ex["input_ids"]) for ex in examples), np.int64, len(examples))
    ov = apply_overflow(lengths, capacity, policy)
    bins = plan_bfd(ov.length, capacity)
    ex_of, start_of, len_of = ov.example.tolist(), ov.start.tolist(), ov.length.tolist()
    rows, no_loss = [], 0
    for b in bins:
        row = []
        for p in b.tolist():
            ex, a = examples[ex_of[p]], start_of[p]
            z = a + len_of[p]
            labels = list(ex["labels"][a:z])
            no_loss += all(t == -100 for t in labels[1:])  # the first label is never a target
            row.append({"input_ids": list(ex["input_ids"][a:z]), "labels": labels})
        rows.append(row)
    return Packed(rows, ov, efficiency(ov.length, bins, capacity), no_loss)
