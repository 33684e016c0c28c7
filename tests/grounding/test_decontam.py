"""Decontamination in the real mix stage: held-out examples copied into the training data leave it.
(An API model config: tokens are counted approximately, so no tokenizer loads.)"""
from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from webtune.hydra_setup import compose
from webtune.mix import mix
from webtune.mix.split import assign

PRODUCTS = Path(__file__).resolve().parents[2] / "src/webtune/examples/products.json"


def examples(n: int = 80) -> list[dict]:
    """Product examples as prepare renders them (user: the record's fields; assistant: its description)."""
    out = []
    planted = {json.loads(line)["index"] for line in PRODUCTS.with_name("products.labels.jsonl").read_text().splitlines()}
    recs = [(k, r) for k, r in enumerate(json.loads(PRODUCTS.read_text()), 1) if k - 1 not in planted]
    for k, r in recs[:n]:
        rid = f"example:products.json#{k}"
        user = f"Write a product description for this item.\nTitle: {r['title']}\nBrand: {r['brand']}\nFeatures:\n" + \
            "".join(f"- {f}\n" for f in r.get("features") or [])
        out.append({"id": f"{rid}/product_description", "record_id": rid, "source": "example", "side": "domain",
                    "template": "product_description", "group": rid,
                    "messages": [{"role": "system", "content": "You are an expert copywriter for an online store."},
                                 {"role": "user", "content": user}, {"role": "assistant", "content": r["description"]}]})
    return out


def run_mix(run_dir: Path, items: list[dict], *overrides) -> tuple[dict, list[dict]]:
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "examples.jsonl").write_bytes(b"".join(orjson.dumps(ex) + b"\n" for ex in items))
    cfg = compose(["model=openai_gpt4o_mini", "mix.general.enabled=false", "mix.test_fraction=0.15", "mix.val_fraction=0.05",
                   *overrides])
    mix.run(cfg, run_dir)
    events = [orjson.loads(x) for x in (run_dir / "ledger" / "mix" / "events.jsonl").read_bytes().splitlines()]
    return orjson.loads((run_dir / "data" / "mix.json").read_bytes()), events


def copies_into_train(originals: list[dict], seed: int = 0) -> list[dict]:
    """Each original again as a new record whose group the split puts in train."""
    out = []
    for k, ex in enumerate(originals):
        n = 0
        while assign(f"copy{k}-{n}", seed, 0.05, 0.15) != "train":
            n += 1
        rid = f"copied:leak.jsonl#{k + 1}"
        out.append({**ex, "id": f"{rid}/product_description", "record_id": rid, "source": "copied", "group": f"copy{k}-{n}"})
    return out


def contaminated(events: list[dict]) -> dict[str, str]:
    return {e["id"]: e["reason"] for e in events if e["reason"].startswith("contaminated:")}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[dict, list[dict]]:
    """The mix of the records as they are (no copies)."""
    return run_mix(tmp_path_factory.mktemp("clean"), examples())


def test_held_out_copies_in_training_are_all_removed_and_nothing_else(tmp_path, clean):
    base = examples()
    clean, events = clean
    assert contaminated(events) == {}                       # different products: nothing removed
    test_ids = set(clean["splits"]["test"])
    held = [ex for ex in base if ex["id"] in test_ids][:5]
    assert len(held) == 5

    leaky, events = run_mix(tmp_path / "leaky", base + copies_into_train(held))
    assert contaminated(events) == {f"copied:leak.jsonl#{k}": "contaminated:test" for k in range(1, 6)}
    assert leaky["splits"]["train"] == clean["splits"]["train"]   # only the copies left the training split
    assert leaky["decontam"]["removed"] == {"test": 5, "general_test": 0}
    assert not any(line.startswith('{"messages"') and "copied" in line
                   for line in (tmp_path / "leaky" / "data" / "train.jsonl").read_text().splitlines())


def test_a_benchmark_file_decontaminates_the_same_way(tmp_path, clean):
    base = examples()
    clean, _ = clean
    train_ids = clean["splits"]["train"]
    leaked = [ex for ex in base if ex["id"] in set(train_ids[:5])]
    bench = tmp_path / "shopbench.jsonl"
    bench.write_text("".join(json.dumps({"prompt": ex["messages"][1]["content"], "answer": ex["messages"][2]["content"]})
                             + "\n" for ex in leaked))
    out, events = run_mix(tmp_path / "bench", base, f"+eval.benchmarks=[{bench}]")
    assert contaminated(events) == {ex["record_id"]: "contaminated:shopbench.jsonl" for ex in leaked}
    assert set(out["splits"]["train"]) == set(train_ids) - {ex["id"] for ex in leaked}
    assert out["decontam"]["removed"]["shopbench.jsonl"] == 5
