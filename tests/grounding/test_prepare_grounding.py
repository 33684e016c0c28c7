"""prepare.grounding on real JSONL files through the whole prepare stage: trim, drop, flag, off."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from webtune.grounding import VocabularyCounts
from webtune.prepare import run

from ..prepare.conftest import domain_input, finals, prepare_cfg, read_jsonl, templates, words, write_jsonl  # noqa: F401 (a fixture)

MATERIALS = ["bamboo", "cast iron", "stainless steel", "walnut wood"]
COLOURS = ["Blush Pink", "Navy Blue", "Forest Green"]
NOUNS = ["cutting board", "skillet", "spice rack"]


def shop_records() -> list[dict]:
    recs = []
    for i in range(24):
        material, colour, noun = MATERIALS[i % 4], COLOURS[i % 3], NOUNS[i % 3]
        text = f"The Harbor {noun} is made from {material} in {colour.lower()}. " + words(i, 8).capitalize() + "."
        if i % 4 == 1:
            text += f" Harbor backs every {noun} with a {2 + i % 3}-year warranty."
        if i % 6 == 2:
            text += f" Its handle is made from {MATERIALS[(i + 1) % 4]}."
        recs.append({"title": f"Harbor {material.title()} {noun.title()}, {colour}", "brand": "Harbor",
                     "description": text, "features": ["EASY CLEAN: Wipes clean with a damp cloth."]})
    return recs


@pytest.fixture
def shop(tmp_path):
    return write_jsonl(tmp_path / "data" / "shop.jsonl", shop_records())


def prepare(tmp_path, shop, templates, policy: str, workers: int = 1, name: str = "run"):
    cfg = prepare_cfg(workers=workers)
    OmegaConf.update(cfg, "prepare.grounding", policy)
    run_dir = tmp_path / name
    stats = run(cfg, run_dir, [domain_input(shop, templates)])
    return run_dir, stats


def grounding_events(run_dir) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for part in sorted((run_dir / "ledger" / "prepare").glob("*.jsonl")):
        for ev in read_jsonl(part):
            if ev["reason"].startswith("ungrounded:"):
                out.setdefault(ev["id"].split("#")[1], []).append(ev)
    return out


def test_trim_removes_the_unsupported_sentences_and_says_so(tmp_path, shop, templates):
    run_dir, stats = prepare(tmp_path, shop, templates, "trim")
    targets = {ex["record_id"].split("#")[1]: ex["messages"][-1]["content"]
               for ex in read_jsonl(run_dir / "data" / "examples.jsonl")}
    assert len(targets) == 24                        # trimmed, none dropped
    assert not any("warranty" in t for t in targets.values())
    assert not any("handle" in t for t in targets.values())
    assert all(t.startswith("The Harbor ") for t in targets.values())  # the supported sentences stay
    found = grounding_events(run_dir)
    warranty = {str(i + 1) for i in range(24) if i % 4 == 1}
    handle = {str(i + 1) for i in range(24) if i % 6 == 2}
    assert {n for n, evs in found.items() if any(e["reason"] == "ungrounded:value" for e in evs)} == warranty
    assert {n for n, evs in found.items() if any(e["reason"] == "ungrounded:attribute" for e in evs)} == handle
    ev = next(e for e in found["2"] if e["reason"] == "ungrounded:value")
    (span,) = ev["spans"]
    assert ev["status"] == "repaired" and span["kind"] == "value" and span["text"] == "3-year"
    g = stats["grounding"]
    assert (g["checked"], g["touched"], g["trimmed"], g["dropped"]) == (24, len(warranty | handle), len(warranty | handle), 0)
    assert g["common"][0]["phrase"] == "N-year warranty" and g["common"][0]["targets"] == len(warranty)
    assert "add the field to the prompt template, or leave them trimmed" in g["common"][0]["advice"]
    assert (run_dir / "data" / "grounding_vocab.json").is_file()


def test_drop_rejects_the_record_and_flag_keeps_it(tmp_path, shop, templates):
    run_dir, stats = prepare(tmp_path, shop, templates, "drop", name="drop")
    fate = finals(run_dir)
    dropped = {rid.split("#")[1] for rid, ev in fate.items() if ev["status"] == "rejected"}
    assert dropped == set(grounding_events(run_dir))
    assert all(fate[f"shop:shop.jsonl#{n}"]["reason"].startswith("ungrounded:") for n in dropped)
    assert stats["sources"]["shop"]["kept"] == 24 - len(dropped)
    assert len(read_jsonl(run_dir / "data" / "examples.jsonl")) == 24 - len(dropped)

    run_dir, stats = prepare(tmp_path, shop, templates, "flag", name="flag")
    texts = [ex["messages"][-1]["content"] for ex in read_jsonl(run_dir / "data" / "examples.jsonl")]
    assert sum("warranty" in t for t in texts) == 6 and stats["grounding"]["flagged"] == len(dropped)


def test_off_checks_nothing(tmp_path, shop, templates):
    run_dir, stats = prepare(tmp_path, shop, templates, "off", name="off")
    assert not grounding_events(run_dir) and "grounding" not in stats
    assert not (run_dir / "data" / "grounding_vocab.json").exists()


def test_the_vocabulary_does_not_depend_on_how_the_corpus_is_sharded(tmp_path):
    """Each shard's counts add up to the one-pass counts, so the reduce's vocabulary (and every
    decision made with it) is the same for any worker count (prepare's whole output: checked by md5
    for 1, 2 and 3 workers in bench/RESULTS.md)."""
    recs = shop_records()
    whole = VocabularyCounts()
    for r in recs:
        whole.add(r)
    for n in (2, 3):
        parts = [VocabularyCounts() for _ in range(n)]
        for k, r in enumerate(recs):
            parts[k % n].add(r)
        for k, part in enumerate(parts):
            part.save(tmp_path / f"vocab-{n}-{k}")
        merged = VocabularyCounts()
        for k in range(n):
            merged.merge(VocabularyCounts.load(tmp_path / f"vocab-{n}-{k}"))
        merged.vocabulary().save(tmp_path / f"merged-{n}.json")
        whole.vocabulary().save(tmp_path / "whole.json")
        assert (tmp_path / f"merged-{n}.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
