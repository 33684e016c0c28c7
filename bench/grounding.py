#!/usr/bin/env python3
"""The grounding detector's precision and recall, per kind, on a labelled set.

  python bench/grounding.py                  # score bench/grounding_labels.jsonl
  python bench/grounding.py --write-labels   # rebuild the labelled set (deterministic) and score it

The labelled set (bench/grounding_labels.jsonl), one item a line: `source` (what the prompt shows),
`text`, `spans` (the unsupported values and attribute values a reader finds: start, end, kind,
text, why). Three parts:
  reference   the default's product descriptions (src/webtune/examples/products.json, the planted
              duplicates and malformed records left out) against their prompt (title, brand,
              features, as templates/product_description renders it). Labelled from what the
              descriptions say: a warranty's years (no field holds a warranty) and an age in a
              use ("kids aged 5 and up") that no feature states are unsupported values; uses
              ("weekend camping trips") are claims no field holds but name no field value, so they
              are not labelled as attribute values.
  injected    copies of those references with sentences added: unsupported values (a weight, a
              battery life, a discount, a customer count, a warranty, dimensions) and attribute
              values (another product's material, a colour the title does not give, another
              brand), and supported ones the detector must not flag (a warranty, weight or count
              the source states in another form: "2-year" vs "Warranty: 2 years", "3" vs "three").
  docs        hand-written answers to documentation questions against the section they come from
              (numbers written differently, versions, code identifiers real and invented).
A predicted span counts as correct when it overlaps a labelled span of the same kind; precision is
over predicted spans, recall over labelled spans. The vocabulary is learnt from every clean product
record, as prepare learns it from the corpus.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from webtune.grounding import Vocabulary, check  # noqa: E402

PRODUCTS = ROOT / "src/webtune/examples/products.json"
LABELS = ROOT / "bench/grounding_labels.jsonl"
FIELDS = ("title", "brand", "features", "description")

MATERIALS = ["bamboo", "cast iron", "borosilicate glass", "merino wool", "walnut wood", "stainless steel",
             "memory foam", "natural rubber", "ripstop nylon", "ceramic", "brushed brass", "recycled polyester"]
COLOURS = ["matte black", "brushed silver", "sage green", "navy blue", "charcoal grey", "ivory white", "terracotta",
           "ocean blue", "blush pink", "forest green", "slate grey", "sand beige", "burgundy", "sky blue"]
BRANDS = ["Harbor Lane", "Copperleaf", "Flexora", "Little Sprout", "Aurora Linen", "Wavecrest Audio", "Barkwell",
          "Solstice Light", "Nomad Trail", "Deskcraft"]
UNSUPPORTED_VALUES = [
    ("It weighs only {w} pounds.", "{w} pounds"), ("The battery lasts up to {h} hours.", "{h} hours"),
    ("Order today and save {p}%.", "{p}%"), ("Over {k},000 customers already own one.", "{k},000"),
    ("It comes with a {y}-year warranty.", "{y}-year"), ("It measures {a} x {b} inches.", "{a} x {b} inches"),
    ("It ships in {d} days.", "{d} days"), ("Each set holds {n} pieces.", "{n} pieces"),
]


def prompt(r: dict) -> str:
    """What templates/product_description's system and user turns show."""
    lines = ["You are an expert copywriter for an online store. Write clear, persuasive product descriptions.",
             "Write a product description for this item.", f"Title: {r['title']}", f"Brand: {r['brand']}"]
    if r.get("features"):
        lines += ["Features:"] + [f"- {f}" for f in r["features"]]
    return "\n".join(lines)


def clean_records() -> list[tuple[int, dict]]:
    planted = {json.loads(line)["index"] for line in PRODUCTS.with_name("products.labels.jsonl").read_text().splitlines()}
    out = []
    for i, r in enumerate(json.loads(PRODUCTS.read_text())):
        if i not in planted and isinstance(r, dict) and isinstance(r.get("description"), str):
            out.append((i + 1, r))
    return out


def span(text: str, part: str, kind: str, why: str, start_at: int = 0) -> dict:
    at = text.index(part, start_at)
    return {"start": at, "end": at + len(part), "kind": kind, "text": part, "why": why}


def reference_spans(r: dict) -> list[dict]:
    text, out = r["description"], []
    for m in re.finditer(r"(\d+)-year warranty", text):
        out.append({"start": m.start(), "end": m.start() + len(m.group(1)) + 5, "kind": "value",
                    "text": text[m.start():m.start() + len(m.group(1)) + 5], "why": "no field holds a warranty"})
    features = " ".join(r.get("features") or []).lower()
    for m in re.finditer(r"aged (\d+) and up", text):
        if m.group(0).lower() not in features:
            out.append({"start": m.start(1), "end": m.end(1), "kind": "value", "text": m.group(1),
                        "why": "an age no feature states"})
    return out


def text_so_far(r: dict, adds: list) -> str:
    return " ".join([r["description"], *(sentence for sentence, _ in adds)])


def injected(rng: random.Random, n: int, r: dict) -> dict:
    """A copy of r's description with unsupported and supported sentences added, and its labels."""
    source = prompt(r)
    title = r["title"].lower()
    own = f"{title} {' '.join(r.get('features') or [])}".lower()
    adds: list[tuple[str, list[tuple[str, str, str]]]] = []
    for template, part in rng.sample(UNSUPPORTED_VALUES, 2):
        nums = dict(w=rng.choice(["1.2", "2.5", "3.8", "6"]), h=rng.choice([7, 11, 18, 36]), p=rng.choice([15, 25, 35]),
                    k=rng.choice([2, 5, 9]), y=rng.choice([4, 6, 10]), a=rng.choice([9, 13, 17]), b=rng.choice([21, 27]),
                    d=rng.choice([4, 6, 9]), n=rng.choice([7, 14, 48]))
        adds.append((template.format(**nums), [(part.format(**nums), "value", "no field states it")]))
    material = rng.choice([m for m in MATERIALS if m not in own])
    colour = rng.choice([c for c in COLOURS if c not in own])
    brand = rng.choice([b for b in BRANDS if b.lower() not in own and b != r["brand"]])
    attr = rng.sample([(f"The handle is made from {material}.", [(material, "attribute", "another product's material")]),
                       (f"It also comes in {colour}.", [(colour, "attribute", "a colour the title does not give")]),
                       (f"It was designed together with {brand}.", [(brand, "attribute", "another brand")])], 2)
    adds += attr
    # supported: the source states it in another form; nothing to flag (numbers the text does not use otherwise)
    used = set(re.findall(r"\d+", text_so_far(r, adds)))
    y = rng.choice([n for n in (2, 3, 5, 7) if str(n) not in used])
    c = rng.choice([w for w in (("three", 3), ("eight", 8), ("twelve", 12)) if str(w[1]) not in used])
    source += f"\nWarranty: {y} years\nPieces: {c[1]}"
    adds.append((f"It is covered by a {y}-year warranty and comes as a set of {c[0]}.", []))
    if " " in title:
        own_colour = r["title"].rsplit(",", 1)[-1].strip()
        adds.append((f"The {own_colour.lower()} finish suits any room.", []))
    rng.shuffle(adds)
    text = r["description"]
    spans = reference_spans(r)
    for sentence, parts in adds:
        at = len(text) + 1
        text += " " + sentence
        for part, kind, why in parts:
            spans.append(span(text, part, kind, why, at))
    return {"id": f"injected:products.json#{n}", "part": "injected", "source": source, "text": text,
            "spans": sorted(spans, key=lambda s: s["start"])}


DOCS = [  # (section text the prompt and answer come from, answer, [(span, kind, why)])
    ("The maximum number of bytes in a string or BLOB in SQLite is defined by the preprocessor macro SQLITE_MAX_LENGTH. "
     "The default value of this macro is 1 billion (1 thousand million or 1,000,000,000).",
     "A BLOB can hold up to 1,000,000,000 bytes by default; the limit is SQLITE_MAX_LENGTH.", []),
    ("The maximum number of bytes in a string or BLOB in SQLite is defined by the preprocessor macro SQLITE_MAX_LENGTH. "
     "The default value of this macro is 1 billion (1 thousand million or 1,000,000,000).",
     "The maximum size of a BLOB in SQLite is 1024 bytes.", [("1024 bytes", "value", "the limit is 1 billion")]),
    ("The maximum number of bytes in a string or BLOB in SQLite is defined by the preprocessor macro SQLITE_MAX_LENGTH.",
     "Call sqlite3_blob_size() to read the maximum, or set SQLITE_MAX_BLOB_SIZE at compile time.",
     [("sqlite3_blob_size", "attribute", "an invented function"), ("SQLITE_MAX_BLOB_SIZE", "attribute", "an invented macro")]),
    ("json.dumps(obj, *, skipkeys=False, ensure_ascii=True, indent=None) serializes obj to a JSON formatted str. "
     "If indent is a non-negative integer or string, JSON array elements and object members will be pretty-printed "
     "with that indent level.",
     "Use json.dumps(obj, indent=4) to pretty-print; ensure_ascii=True escapes non-ASCII characters.", []),
    ("json.dumps(obj, *, skipkeys=False, ensure_ascii=True, indent=None) serializes obj to a JSON formatted str.",
     "json.dumps takes a sort_keys_strict flag and a max_depth of 32.",
     [("sort_keys_strict", "attribute", "no such parameter"), ("max_depth", "attribute", "no such parameter"),
      ("32", "value", "no depth is stated")]),
    ("Changed in version 3.8: The default protocol is 4. It was first introduced in Python 3.4.",
     "Since Python 3.8 the default pickle protocol is 4 (added in 3.4).", []),
    ("Changed in version 3.8: The default protocol is 4. It was first introduced in Python 3.4.",
     "Since Python 3.10 the default pickle protocol is 5.", [("3.10", "value", "the version is 3.8"),
                                                             ("5", "value", "the protocol is 4")]),
    ("The timeout argument defaults to 30 seconds; a value of None waits forever.",
     "By default it waits half a minute (30 seconds) before giving up.", []),
    ("The timeout argument defaults to 30 seconds; a value of None waits forever.",
     "The default timeout is 60 seconds, and the retry delay is 250 ms.",
     [("60 seconds", "value", "the default is 30"), ("250 ms", "value", "no delay is stated")]),
    ("os.path.join(path, *paths) joins one or more path segments intelligently.",
     "Join segments with os.path.join(path, *paths), or with os.path.concat for two of them.",
     [("os.path.concat", "attribute", "no such function")]),
    ("Released on March 3, 2024, version 2.1.0 removed the legacy loader.",
     "Version 2.1.0 (2024-03-03) removed the legacy loader.", []),
    ("Released on March 3, 2024, version 2.1.0 removed the legacy loader.",
     "Version 2.2.0, released on April 9, 2024, removed the legacy loader.",
     [("2.2.0", "value", "the version is 2.1.0"), ("April 9, 2024", "value", "the date is March 3")]),
]


def docs_items() -> list[dict]:
    out = []
    for n, (source, text, parts) in enumerate(DOCS, 1):
        out.append({"id": f"docs#{n}", "part": "docs", "source": source, "text": text,
                    "spans": [span(text, p, k, why) for p, k, why in parts]})
    return out


def build_labels(n_refs: int = 120, n_injected: int = 120) -> list[dict]:
    rng = random.Random(27)
    recs = clean_records()
    picked = sorted(rng.sample(recs, n_refs), key=lambda x: x[0])
    items = [{"id": f"reference:products.json#{k}", "part": "reference", "source": prompt(r), "text": r["description"],
              "spans": reference_spans(r)} for k, r in picked]
    for k, r in sorted(rng.sample(recs, n_injected), key=lambda x: x[0]):
        items.append(injected(rng, k, r))
    return items + docs_items()


def score(items: list[dict], vocab: Vocabulary) -> tuple[dict, float]:
    tally: dict = {}
    start = time.process_time()   # CPU time: wall time on a shared machine says little
    for item in items:
        found = check(item["text"], item["source"], vocab=vocab).spans
        for part in (item["part"], "all"):
            for kind in ("value", "attribute"):
                t = tally.setdefault((part, kind), {"gold": 0, "pred": 0, "tp_pred": 0, "tp_gold": 0})
                gold = [s for s in item["spans"] if s["kind"] == kind]
                pred = [s for s in found if s.kind == kind]
                t["gold"] += len(gold)
                t["pred"] += len(pred)
                t["tp_pred"] += sum(any(p.start < g["end"] and g["start"] < p.end for g in gold) for p in pred)
                t["tp_gold"] += sum(any(p.start < g["end"] and g["start"] < p.end for p in pred) for g in gold)
    return tally, (time.process_time() - start) / (len(items) or 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-labels", action="store_true", help="rebuild bench/grounding_labels.jsonl first")
    args = ap.parse_args()
    if args.write_labels:
        LABELS.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in build_labels()))
    items = [json.loads(line) for line in LABELS.read_text().splitlines()]
    vocab = Vocabulary.fit({k: r.get(k) for k in FIELDS} for _, r in clean_records())
    tally, per_item = score(items, vocab)
    table = Table(title=f"grounding detector on {len(items)} labelled texts ({len(vocab)} vocabulary phrases; "
                        f"{per_item * 1000:.2f} ms CPU per check)")
    for col in ("part", "kind", "labelled", "found", "precision", "recall"):
        table.add_column(col, justify="left" if col in ("part", "kind") else "right")
    for (part, kind), t in tally.items():
        p = t["tp_pred"] / t["pred"] if t["pred"] else float("nan")
        r = t["tp_gold"] / t["gold"] if t["gold"] else float("nan")
        table.add_row(part, kind, str(t["gold"]), str(t["pred"]), f"{p:.3f}", f"{r:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
