"""Paired evidence on real runs (the shared tiny run, tests/evaluate/conftest.py): a candidate worse than
the promoted version, answers produced elsewhere, and a split that leaves no domain test example."""
import json
import shutil

import orjson
import pytest

from tests.conftest import FIXTURES, SMALL, webtune
from webtune.deploy import registry as registry_api
from webtune.model_comparison import compare
from webtune.hydra_setup import load_run_config, setup

pytestmark = pytest.mark.timeout(1800)   # the shared fixture is a whole run: minutes on a busy 2-core machine


def rows(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def one_line(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr[-2000:]
    return lines[0]


def test_a_candidate_worse_than_the_promoted_version_says_so_and_is_not_promoted(tiny_run, tmp_path):
    """The tuned run is promoted; a candidate whose model is the untrained base (a real, worse model) is
    evaluated with eval.compare_to: its paired comparison against the promoted version fails it, lists the
    items, shows them in the report, and `models promote` refuses it without --force."""
    registry = tmp_path / "registry"
    registry_api.promote(registry, "shop", registry_api.register(registry, "shop", tiny_run), force=True)
    candidate = tmp_path / "candidate"
    shutil.copytree(tiny_run, candidate, symlinks=True)
    shutil.rmtree(candidate / "model")
    shutil.copytree(FIXTURES / "tiny_model", candidate / "model")
    r = webtune("eval", str(candidate), "eval.compare_to=shop", f"registry.path={registry}", "eval.judge.enabled=false")
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads((candidate / "eval/metrics.json").read_text())
    assert ev["status"] == "failed" and not ev["passed"]
    assert any("significantly worse than the promoted" in f for f in ev["flags"]), ev["flags"]
    loss = ev["evidence"]["tuned_vs_promoted"]["domain_loss"]
    assert loss["significant"] == "worse" and loss["low"] > 0 and loss["n"] == ev["n_domain_scored"]
    held_out = {x["id"] for x in rows(candidate / "eval/items.jsonl") if x["set"] == "domain"}
    assert loss["worse_items"] and set(loss["worse_items"]) <= held_out
    assert "promoted" in ev and "promoted" in rows(candidate / "eval/generations.jsonl")[0]   # the third column
    html = (candidate / "report.html").read_text()
    assert "tuned vs promoted" in html and loss["worse_items"][0] in html and "FLAGGED" in html
    assert "beats the base" not in (candidate / "metrics.json").read_text()
    # the same comparison as a function (`webtune refresh` calls it), on the scores evaluate cached
    setup()
    same = compare(candidate, registry / "shop" / "v1" / "model", cfg=load_run_config(candidate))
    assert "domain_loss" in same["worse"] and same["worse_items"]["domain_loss"] == loss["worse_items"]
    assert same["comparisons"]["domain_loss"]["diff"] == loss["diff"] and same["n"]["domain"] == loss["n"]

    assert registry_api.register(registry, "shop", candidate) == 2
    r = webtune("models", "promote", "shop", "2", "--registry", str(registry))
    assert r.returncode != 0 and "significantly worse than the promoted" in one_line(r.stderr)
    assert json.loads((registry / "shop/current.json").read_text())["version"] == 1
    assert registry_api.promote(registry, "shop", 2, force=True)["version"] == 2


def test_answers_from_elsewhere_are_scored_by_prompt_id_and_an_unknown_id_is_one_line(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    generated = rows(run / "eval/generations.jsonl")
    invented = "Made from 100% merino wool, with a 5-year warranty."
    answers = tmp_path / "hosted.jsonl"
    answers.write_text("".join(json.dumps({"id": g["id"], "answer": invented if k == 0 else g["reference"]}) + "\n"
                               for k, g in enumerate(generated)))
    r = webtune("eval", str(run), "--answers", str(answers))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((run / "eval/answers/hosted.json").read_text())
    assert out["n"] == len(generated) and out["answers"]["generation"]["chrF"] > out["tuned"]["generation"]["chrF"]
    assert {"answers_vs_base", "answers_vs_tuned"} <= set(out["evidence"])
    assert out["evidence"]["answers_vs_tuned"]["chrF"]["n"] == len(generated)
    first = out["items"][0]
    assert first["id"] == generated[0]["id"] and first["unsupported_values"] == 1
    assert {"5-year", "100%"} & {s["text"] for s in first["spans"]}
    # coverage of the template's grounding_fields (title, brand, features): none in the invented answer
    assert first["coverage"] == 0 and all(i["coverage"] > 0 for i in out["items"][1:])
    assert json.loads((run / "eval/metrics.json").read_text())["tuned"]["grounding"]["coverage"]["n"] == len(generated)
    assert "answers from" in r.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"id": pid, "answer": "x"}) + "\n" for pid in (generated[0]["id"], "0000nothere")))
    r = webtune("eval", str(run), "--answers", str(bad))
    line = one_line(r.stderr)
    assert r.returncode != 0 and f"{bad} line 2" in line and "0000nothere" in line


def test_mix_refuses_a_split_with_no_domain_test_example_before_training(tmp_path):
    runs = tmp_path / "runs"
    r = webtune("run", f"runs_dir={runs}", *SMALL, "mix.test_fraction=0")
    line = one_line(r.stderr.split("mix: running", 1)[-1])
    assert r.returncode != 0 and "no domain example drew the test split" in line
    assert "domain records" in line and "mix.test_fraction=0.0" in line
    [run] = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert not (run / "model").exists() and not (run / "data/train.jsonl").exists()
