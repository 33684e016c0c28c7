"""`webtune refresh NAME`: the diff by key, the warm start, the decision and its exit code, on the toy
model, with snapshots that bench/gen/gen_refresh.py derives from the embedded default's records."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, webtune

GEN = REPO / "bench/gen/gen_refresh.py"
PRODUCTS = REPO / "src/webtune/examples/products.json"
# A LoRA on the toy model; v1 is trained briefly so that a refresh that trains longer is better.
MODEL = [f"model.name_or_path={FIXTURES / 'tiny_model'}", "model.name=tiny-fixture", "model.method=lora",
         "model.lora.r=8", "model.train.learning_rate=5e-3", "model.train.batch_tokens=1024",
         "mix.max_seq_len=512", "mix.general.enabled=false", "mix.test_fraction=0.3", "eval.generation_examples=2",
         "eval.samples=2", "eval.max_new_tokens=8", "prepare.workers=1"]


def clean_products(n: int) -> list[dict]:
    records = json.loads(PRODUCTS.read_text())
    return [r for r in records if isinstance(r, dict) and r.get("asin") and isinstance(r.get("description"), str)][:n]


def source(path: Path) -> list[str]:
    return ["source.name=shop", f"source.files.paths=[{path}]", "source.key_field=asin",
            "source.churn_fields=[final_price,reviews_count]"]


def next_snapshot(old: Path, out: Path, *extra: str) -> dict[str, str]:
    labels = out.with_suffix(".labels.jsonl")
    subprocess.run([sys.executable, str(GEN), "--old", str(old), "--pool", str(PRODUCTS), "--out", str(out),
                    "--labels", str(labels), *extra], check=True, capture_output=True)
    return {r["key"]: r["status"] for r in map(json.loads, labels.read_text().splitlines())}


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    """shop@v1: a run on 120 products, registered and promoted."""
    work = tmp_path_factory.mktemp("refresh")
    snap1 = work / "snap1.jsonl"
    snap1.write_text("".join(json.dumps(r) + "\n" for r in clean_products(120)))
    r = webtune("run", "source=files", *source(snap1), *MODEL, "model.train.max_steps=12", cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = next(p for p in (work / "runs").iterdir() if p.name.endswith("shop_product_description"))
    for args in (("register", "shop", str(run_dir)), ("promote", "shop", "1", "--force")):
        r = webtune("models", *args, cwd=work)
        assert r.returncode == 0, r.stdout + r.stderr
    return work, snap1, run_dir


def refresh(work: Path, *args: str) -> subprocess.CompletedProcess:
    return webtune("refresh", "shop", *args, cwd=work)


def current(work: Path) -> int:
    return json.loads((work / "runs/registry/shop/current.json").read_text())["version"]


def test_dry_run_diff_counts_by_key_and_churn_is_same(promoted):
    work, snap1, _ = promoted
    snap2 = work / "snap2.jsonl"
    labels = next_snapshot(snap1, snap2, "--new", "0.2", "--changed", "0.1", "--gone", "0.05", "--churn", "0.1")
    want = {s: sum(1 for v in labels.values() if v == s) for s in ("new", "changed", "same", "gone")}
    assert want == {"new": 24, "changed": 12, "same": 102, "gone": 6}
    r = refresh(work, "--dry-run", *source(snap2))
    assert r.returncode == 3, r.stdout + r.stderr
    out = " ".join((r.stdout + r.stderr).split())
    assert "24 new, 12 changed, 102 same, 6 gone (key: asin)" in out
    assert "nothing was paid, trained or promoted" in out
    # without churn_fields, the 12 churn-only records are changes too
    r = refresh(work, "--dry-run", *source(snap2), "source.churn_fields=[]")
    assert "24 new, 24 changed, 90 same, 6 gone" in " ".join((r.stdout + r.stderr).split())
    assert current(work) == 1 and not (work / "runs/registry/shop/v2").exists()


def test_an_adapter_that_does_not_fit_is_refused_before_training(promoted):
    work, snap1, _ = promoted
    for override, says in (("model.lora.r=4", "the adapter has r=8, the config asks for 4"),
                           (f"model.name_or_path={FIXTURES}", "trained on another base model")):
        r = refresh(work, *source(snap1), override)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], r.stderr
    assert not list((work / "runs").glob("*_refresh"))   # nothing was started


def read_json(path: Path):
    return json.loads(path.read_text())


def test_a_better_candidate_starts_warm_and_is_promoted(promoted):
    work, snap1, v1_run = promoted
    snap2 = work / "snap2b.jsonl"
    next_snapshot(snap1, snap2, "--new", "0.4", "--changed", "0.1", "--gone", "0.05", "--churn", "0.1")
    r = refresh(work, *source(snap2), "model.train.max_steps=12")
    assert r.returncode == 0, r.stdout + r.stderr
    run = next((work / "runs").glob("*_refresh"))
    decision = read_json(run / "promotion.json")
    assert decision["promoted"] and decision["candidate"] == "shop@v2" and current(work) == 2
    assert decision["diff"] == {"new": 48, "changed": 12, "same": 102, "gone": 6}
    assert decision["evidence"]["domain_loss"]["significant"] == "better"
    # warm: the candidate's first step starts from the promoted adapter's loss, not the base's
    first = lambda d: read_json(d / "stats/train.json")["loss_curve"][0]["loss"]   # noqa: E731
    assert first(run) < first(v1_run) - 0.3
    # the old set is the promoted version's test set, byte for byte; unchanged records were replayed in part
    assert (run / "data/test_old.jsonl").read_bytes() == (v1_run / "data/test.jsonl").read_bytes()
    ledger = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    reasons = {ev.get("reason") for ev in ledger}
    assert {"refresh:not_replayed", "refresh:old_test"} <= reasons
    history = read_json(work / "runs/registry/shop/current.json")
    assert history["version"] == 2 and history["from"] == 1
    logged = [json.loads(x) for x in (work / "runs/registry/shop/refreshes.jsonl").read_text().splitlines()]
    assert logged[-1]["promoted"] and logged[-1]["diff"]["new"] == 48
    shown = webtune("models", "show", "shop", cwd=work)
    said = " ".join((shown.stdout + shown.stderr).split())   # the console writes to stderr
    assert "refreshes:" in said and "promoted shop@v2 (48 new, 12 changed, 6 gone)" in said


def test_a_candidate_trained_on_damaged_data_is_refused(promoted):
    work, _, _ = promoted
    before = current(work)
    snap2 = work / "snap2b.jsonl"
    snap3 = work / "snap3.jsonl"
    next_snapshot(snap2, snap3, "--new", "0.3", "--changed", "0.2", "--damage", "--seed", "3")
    r = refresh(work, *source(snap3), "model.train.max_steps=12", "model.train.learning_rate=3e-2")
    assert r.returncode == 3, r.stdout + r.stderr
    run = sorted((work / "runs").glob("*_refresh"))[-1]
    decision = read_json(run / "promotion.json")
    assert not decision["promoted"] and current(work) == before
    assert any("significantly worse" in reason and "old_loss" in reason for reason in decision["reasons"]), decision
