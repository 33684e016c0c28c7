"""The grounding detector on product records shaped like the default's, and on documentation text."""
from __future__ import annotations

import json

import pytest

from webtune.grounding import Vocabulary, check
from webtune.grounding.values import values

REPO_PRODUCTS = __import__("pathlib").Path(__file__).resolve().parents[2] / "src/webtune/examples/products.json"


@pytest.fixture(scope="module")
def products() -> list[dict]:
    return [r for r in json.loads(REPO_PRODUCTS.read_text())
            if isinstance(r, dict) and "title" in r and isinstance(r.get("description"), str)]


@pytest.fixture(scope="module")
def vocab(products) -> Vocabulary:
    return Vocabulary.fit({k: r.get(k) for k in ("title", "brand", "features", "description")} for r in products)


def prompt(r: dict) -> str:
    return "\n".join([f"Title: {r['title']}", f"Brand: {r['brand']}", *[f"- {f}" for f in r.get("features") or []]])


@pytest.mark.parametrize("text, support, found", [
    ("backs it with a 3-year warranty", "warranty: 3 years", []),
    ("backs it with a 3-year warranty", "warranty: 2 years", ["3-year"]),
    ("now $1,000", "price: 1000", []),
    ("holds ten pockets", "10 pockets", []),
    ("holds twelve pockets", "10 pockets", ["twelve"]),
    ("SQLite 3.45.1 since March 3, 2024", "version 3.45.1 released 2024-03-03", []),
    ("SQLite 3.44.0", "version 3.45.1", ["3.44.0"]),
    ("a 1500W motor and 20% off", "1500 W; 20 percent", []),
    ("1. Open the file\n2. Save it", "", []),
    ("the part B0TGVZ95FX and sqlite3_open", "", []),
])
def test_values_normalised_and_supported(text, support, found):
    f = check(text, support)
    assert [s.text for s in f.spans if s.kind == "value"] == found


def test_a_value_span_points_at_the_text():
    text = "Every order ships within 5 days."
    f = check(text, "ships fast")
    (span,) = f.spans
    assert (span.kind, text[span.start:span.end]) == ("value", "5 days")
    assert f.unsupported_values == 1 and f.unsupported_attributes == 0


def test_vocabulary_learns_values_and_skips_ordinary_words(vocab):
    for value in ("stainless steel", "blush pink", "copperleaf", "cast iron", "bamboo"):
        assert value in vocab, value
    for word in ("home", "good", "travel", "the", "every"):   # uses and marketing words, not attribute values
        assert word not in vocab, word


def test_invented_material_colour_and_brand_are_caught(products, vocab):
    r = next(p for p in products if "Foam Roller" in p["title"] and "Flexora" in p["brand"])
    text = (f"The {r['brand']} foam roller is made from the finest bamboo, in blush pink, "
            "with a 10-year warranty from Copperleaf.")
    f = check(text, prompt(r), vocab=vocab)
    found = {(s.kind, s.text.lower()) for s in f.spans}
    assert {("attribute", "bamboo"), ("value", "10-year"), ("attribute", "copperleaf")} <= found
    assert ("attribute", "blush pink") in found or "blush pink" in r["title"].lower()
    assert f.unsupported_values == 1


def test_the_records_own_fields_support_its_text(products, vocab):
    """A description that only repeats its record: nothing found (title words, brand, colour)."""
    r = products[0]
    text = f"The {r['title']} by {r['brand']}."
    assert check(text, prompt(r), vocab=vocab).spans == []
    assert check(text, r, vocab=vocab).spans == []   # a dict source: the record's fields


def test_code_identifiers_not_in_the_source_are_caught():
    src = "Use sqlite3_open_v2() with the SQLITE_OPEN_READONLY flag; see os.path.join."
    f = check("Call sqlite3_open_v2() with SQLITE_OPEN_READONLY.", src)
    assert f.spans == []
    f = check("Call sqlite3_blob_size() to get the size.", src)
    assert [(s.kind, s.text) for s in f.spans] == [("attribute", "sqlite3_blob_size")]


def test_coverage_and_parent(products, vocab):
    r = products[0]
    full = check(r["description"], r, vocab=vocab, fields=["title", "brand"], reference=r["description"])
    assert full.coverage is not None and full.coverage >= 0.5
    p, rec, f1 = full.parent
    off = check("Completely unrelated words about nothing here at all.", r, fields=["title", "brand"],
                reference=r["description"])
    assert off.coverage == 0.0
    assert p > off.parent[0] and f1 > off.parent[2] and 0 < p <= 1 and 0 < rec <= 1


def test_vocabulary_round_trips_and_is_deterministic(tmp_path, products):
    a = Vocabulary.fit(products[:80])
    a.save(tmp_path / "v.json")
    b = Vocabulary.load(tmp_path / "v.json")
    assert b.fields == a.fields and len(b) == len(a)
    c = Vocabulary.fit(products[:80])
    c.save(tmp_path / "c.json")
    assert (tmp_path / "c.json").read_bytes() == (tmp_path / "v.json").read_bytes()


def test_values_keys():
    keys = [(v.number, v.unit) for v in values("2-year, 2 years, 1,000, ten, $49.99, 20 percent")]
    assert keys == [("2", "year"), ("2", "year"), ("1000", None), ("10", None), ("49.99", "$"), ("20", "%")]
