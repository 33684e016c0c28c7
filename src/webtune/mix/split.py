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


def require_domain_test(splits: dict[str, list[dict]], examples: list[dict], test_fraction: float, seed: int,
                        log=print) -> None:
    """Never train a model that cannot be evaluated: when no domain example drew the test split (a 3-input
    scrape gives 3 records, and 0.9^3 of the time none draws it), a tiny source gets a minimum test set
    (the one split group closest to drawing it, said in the log) as long as another group is left to
    train on; otherwise, or with mix.test_fraction=0, it is refused before any training."""
    from ..errors import WebtuneError
    if any(ex["side"] == "domain" for ex in splits["test"]):
        return
    domain = [ex for ex in examples if ex["side"] == "domain"]
    records, groups = len({ex["record_id"] for ex in domain}), sorted({ex["group"] for ex in domain})
    placed = {ex["group"] for split in ("train", "val") for ex in splits[split] if ex["side"] == "domain"}
    if test_fraction > 0 and len(placed) >= 2:
        group = min(sorted(placed), key=lambda g: xxhash.xxh64_intdigest(f"{seed}\0{g}".encode()))
        for split in ("train", "val"):
            moved = [ex for ex in splits[split] if ex["group"] == group and ex["side"] == "domain"]
            splits[split] = [ex for ex in splits[split] if not (ex["group"] == group and ex["side"] == "domain")]
            splits["test"] += moved
        log(f"  mix: no domain example drew the test split ({records} records in {len(groups)} split groups, "
            f"mix.test_fraction={test_fraction}): group {group!r} is held out as a minimum test set")
        return
    raise WebtuneError(f"mix: no domain example drew the test split ({records} domain records in {len(groups)} "
                       f"split groups, mix.test_fraction={test_fraction}, mix.seed={seed}), so the tuned model "
                       f"could not be evaluated: raise mix.test_fraction, try another mix.seed, or add records")


def require_domain_train(splits: dict[str, list[dict]], log=print) -> None:
    """A tiny source whose groups left out of the test split all drew validation (2 records: one held out
    for test, the other drawn to validation 10% of the time) trains on them instead: a model trained on no
    domain example is worthless, a validation split without one only loses the validation loss."""
    if any(ex["side"] == "domain" for ex in splits["train"]):
        return
    moved = [ex for ex in splits["val"] if ex["side"] == "domain"]
    if moved:
        splits["val"] = [ex for ex in splits["val"] if ex["side"] != "domain"]
        splits["train"] += moved
        log(f"  mix: no domain example drew the training split; the {len(moved)} drawn to validation "
            f"train instead (a tiny source: add records to have a validation loss too)")
