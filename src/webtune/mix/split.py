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


def require_domain_test(test: list[dict], examples: list[dict], test_fraction: float, seed: int) -> None:
    """Refuse, before any training, a split that leaves the domain no test example: evaluate would find
    it only after the model has trained (a 3-input scrape gives 3 records, and 0.9^3 of the time none
    of them draws the test split)."""
    from ..errors import WebtuneError
    if any(ex["side"] == "domain" for ex in test):
        return
    domain = [ex for ex in examples if ex["side"] == "domain"]
    records, groups = len({ex["record_id"] for ex in domain}), len({ex["group"] for ex in domain})
    raise WebtuneError(f"mix: no domain example drew the test split ({records} domain records in {groups} "
                       f"split groups, mix.test_fraction={test_fraction}, mix.seed={seed}), so the tuned model "
                       f"could not be evaluated: raise mix.test_fraction, try another mix.seed, or add records")
