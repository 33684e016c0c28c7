"""Train/validation/test split by a stable hash of each example's group.

Examples sharing a group (windows of one transcript, one page's url, a near-duplicate cluster)
always land in the same split, and the assignment depends only on the group and the seed.
"""
from __future__ import annotations

import xxhash


def assign(group: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    u = xxhash.xxh64_intdigest(f"{seed}\0{group}".encode()) / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"
