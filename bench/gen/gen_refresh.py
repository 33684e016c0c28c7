#!/usr/bin/env python3
"""The next snapshot of a product source, for `webtune refresh`: some records new, some changed, some
gone, some with only churn (price, review count), the rest the same, in a shuffled order (a refresh
diffs by key, never by position).

  gen_refresh.py --old snap1.jsonl --pool products.json --out snap2.jsonl --labels labels.jsonl \
                 --new 0.2 --changed 0.1 --gone 0.05 --churn 0.1 --seed 1 [--damage]

Shares are of the old snapshot's record count. New records come from --pool (records whose key is
not in the old snapshot). A changed record gets a rewritten description (its sentences reordered
and one sentence from another record added); churn changes only final_price and reviews_count.
--damage makes every new and changed record's description a nonsense text that contradicts its
fields (a candidate trained on it must be refused). The labels file has one line per key:
{key, status} with status new | changed | same | gone (churn-only records are `same`).
"""
import argparse
import json
import random
from pathlib import Path


def read(path: Path) -> list[dict]:
    text = path.read_text()
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]


def number(value, default: float) -> float:
    """A scraped number ("$1,299.00", "12", None) as a float, else `default`."""
    try:
        return float(str(value).replace("$", "").replace(",", ""))
    except ValueError:
        return default


def rewrite(rec: dict, other: dict, rng: random.Random) -> dict:
    sentences = [s for s in rec["description"].split(". ") if s]
    rng.shuffle(sentences)
    extra = other["description"].split(". ")[0]
    return {**rec, "description": ". ".join(sentences + [extra]).rstrip(".") + "."}


def damage(rec: dict, rng: random.Random) -> dict:
    words = "purple quantum banana 9000-year warranty made of solid moon rock for $1 only".split()
    return {**rec, "description": " ".join(rng.choice(words) for _ in range(40)) + "."}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--pool", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--key", default="asin")
    for name, default in (("new", 0.2), ("changed", 0.1), ("gone", 0.05), ("churn", 0.1)):
        ap.add_argument(f"--{name}", type=float, default=default)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--damage", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    old = read(a.old)
    n = len(old)
    keys = {r[a.key] for r in old}
    pool = [r for r in read(a.pool) if isinstance(r, dict) and r.get(a.key) and r[a.key] not in keys
            and isinstance(r.get("description"), str)]
    order = list(range(n))
    rng.shuffle(order)
    k_gone, k_changed, k_churn = round(a.gone * n), round(a.changed * n), round(a.churn * n)
    gone = set(order[:k_gone])
    changed = set(order[k_gone:k_gone + k_changed])
    churn = set(order[k_gone + k_changed:k_gone + k_changed + k_churn])
    out, labels = [], []
    for i, rec in enumerate(old):
        if i in gone:
            labels.append({"key": rec[a.key], "status": "gone"})
            continue
        if i in changed:
            rec = rewrite(rec, old[(i + 1) % n], rng)
            rec = damage(rec, rng) if a.damage else rec
            labels.append({"key": rec[a.key], "status": "changed"})
        else:
            if i in churn:
                rec = {**rec, "final_price": round(number(rec.get("final_price"), 10.0) * 1.1, 2),
                       "reviews_count": int(number(rec.get("reviews_count"), 0)) + 7}
            labels.append({"key": rec[a.key], "status": "same"})
        out.append(rec)
    new = pool[:round(a.new * n)]
    if len(new) < round(a.new * n):
        raise SystemExit(f"--pool has {len(pool)} records not in --old; {round(a.new * n)} new ones are needed")
    for rec in new:
        out.append(damage(rec, rng) if a.damage else rec)
        labels.append({"key": rec[a.key], "status": "new"})
    rng.shuffle(out)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in out))
    a.labels.write_text("".join(json.dumps(r) + "\n" for r in labels))
    print(f"{a.out}: {len(out)} records ({len(new)} new, {len(changed)} changed, {len(churn)} churn only, "
          f"{len(gone)} gone)")


if __name__ == "__main__":
    main()
