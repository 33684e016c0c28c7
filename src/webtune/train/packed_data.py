"""The packed training data written by the mix stage, as a torch Dataset of rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class PackedRows:
    """Row i is the list of examples ({"input_ids", "labels"}) that packing put in bin i."""

    def __init__(self, path: Path, rank: int = 0, world: int = 1):
        z = np.load(path)
        self.ids, self.labels, self.offsets = z["input_ids"], z["labels"], z["offsets"]
        self.bin_items, self.bin_offsets = z["bin_items"], z["bin_offsets"]
        self.rows = list(range(rank, len(self.bin_offsets) - 1, world))  # each process its own shard

    def __len__(self) -> int:
        return len(self.rows)

    def example(self, i: int) -> dict:
        a, b = self.offsets[i], self.offsets[i + 1]
        return {"input_ids": self.ids[a:b].tolist(), "labels": self.labels[a:b].tolist()}

    def __getitem__(self, k: int) -> list[dict]:
        r = self.rows[k]
        items = self.bin_items[self.bin_offsets[r]:self.bin_offsets[r + 1]]
        return [self.example(int(i)) for i in items]

    def n_tokens(self) -> int:
        lengths = np.diff(self.offsets)
        return int(sum(lengths[self.bin_items[self.bin_offsets[r]:self.bin_offsets[r + 1]]].sum() for r in self.rows))
