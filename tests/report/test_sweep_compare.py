"""The sweep summary's ranking and `compare`, on run directories laid out as the pipeline writes them."""
import json
from pathlib import Path

import orjson
import pytest
import yaml

from webtune.errors import WebtuneError
from webtune.report.compare import compare
from webtune.report.stage import headline
from webtune.report.sweep import sweep_summary

PROMPT = [{"role": "user", "content": "Describe the Acme mug."}]


def make_run(root: Path, name: str, domain_loss: float | None, passed=True, lr=1e-3, general_change=0.1,
             judge=None, answer="An Acme mug.") -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra/overrides.yaml").write_text(yaml.safe_dump([f"model.train.learning_rate={lr}"]))
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "demo", "runs_dir": str(root),
                                                     "model": {"name": "tiny", "train": {"learning_rate": lr}}}))
    if domain_loss is None:      # a run that never finished
        return run
    ev = {"base": {"domain": {"loss": 6.0, "perplexity": 403.4}, "general": {"loss": 5.0, "perplexity": 148.4},
                   "generation": {"chrF": 10.0, "rougeL": 8.0}},
          "tuned": {"domain": {"loss": domain_loss, "perplexity": 2.718 ** domain_loss},
                    "general": {"loss": 5.0 + general_change, "perplexity": 2.718 ** (5 + general_change)},
                    "generation": {"chrF": 20.0, "rougeL": 15.0}},
          "domain_gain": round(6.0 - domain_loss, 4), "general_change": general_change,
          "flags": [] if passed else ["general loss rose"], "passed": passed}
    if judge is not None:
        ev["judge"] = {"win_rate": judge, "ci_low": judge - 0.2, "ci_high": min(1, judge + 0.2), "pairs": 10}
    (run / "metrics.json").write_text(json.dumps({"eval": ev, "train": {"steps": 10, "loss_curve": [
        {"step": 5, "loss": 6.0}, {"step": 10, "loss": domain_loss}, {"step": 10, "eval_loss": domain_loss + 0.1}]},
        "mix": {"examples": {"train": 100}}}))
    (run / "report.html").write_text("<!doctype html>")
    (run / "eval").mkdir()
    (run / "eval/samples.jsonl").write_bytes(orjson.dumps({"prompt": PROMPT, "reference": "The Acme mug holds tea.",
                                                          "base": "mug", "tuned": answer}) + b"\n")
    return run


def test_sweep_ranks_passing_runs_first_and_unfinished_last(tmp_path):
    sweep = tmp_path / "sweeps/2026-01-01_00-00-00"
    make_run(sweep, "0_lr=0.001", 5.0, lr=1e-3)
    make_run(sweep, "1_lr=0.0003", 4.5, lr=3e-4, passed=False, general_change=0.9)   # best loss, but flagged
    make_run(sweep, "2_lr=0.0001", 4.8, lr=1e-4)
    make_run(sweep, "3_lr=0.01", None, lr=1e-2)
    rows = sweep_summary(sweep)
    assert [r["run"] for r in rows] == ["2_lr=0.0001", "0_lr=0.001", "1_lr=0.0003", "3_lr=0.01"]
    assert [r["rank"] for r in rows] == [1, 2, 3, None]
    assert rows[0]["overrides"] == ["model.train.learning_rate=0.0001"]
    assert json.loads((sweep / "summary.json").read_text())[0]["run"] == "2_lr=0.0001"
    html = (sweep / "summary.html").read_text()
    assert html.index("2_lr=0.0001/report.html") < html.index("0_lr=0.001/report.html") < html.index("1_lr=0.0003/report.html")
    assert "Best: <a href=\"2_lr=0.0001/report.html\"><b>#2</b>" in html and "flagged" in html and "unfinished" in html


def test_sweep_can_rank_by_a_metric_where_higher_is_better(tmp_path):
    make_run(tmp_path, "a", 5.0, judge=0.4)
    make_run(tmp_path, "b", 5.2, judge=0.7)
    rows = sweep_summary(tmp_path, "eval.judge.win_rate")      # a rate: higher is better without saying so
    assert [r["run"] for r in rows] == ["b", "a"]
    assert [r["run"] for r in sweep_summary(tmp_path, "judge_win_rate", higher_is_better=False)] == ["a", "b"]


def test_compare_marks_the_better_run_and_the_config_that_differs(tmp_path):
    a = make_run(tmp_path / "x", "run_a", 5.0, lr=1e-3, answer="A short Acme mug.")
    b = make_run(tmp_path / "y", "run_b", 4.0, lr=3e-4, general_change=0.3, answer="The Acme mug holds tea.")
    out = tmp_path / "compare.html"
    result = compare([a, b], out)
    rows = {r["label"]: r for r in result["rows"]}
    assert rows["domain loss (tuned)"]["best"] == 1 and rows["domain loss (tuned)"]["delta"] == -1.0
    assert rows["general change vs base"]["best"] == 0
    assert "judge win rate" not in rows                        # neither run has a judge: no empty row
    assert [d["key"] for d in result["config_diff"]] == ["model.train.learning_rate"]   # runs_dir ignored
    assert result["samples"] == 1
    html = out.read_text()
    assert "run_a vs run_b" in html and "A short Acme mug." in html and "The Acme mug holds tea." in html
    assert "<svg" in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")   # no external resource


def test_compare_names_a_run_without_metrics(tmp_path):
    a = make_run(tmp_path, "done", 5.0)
    b = make_run(tmp_path, "killed", None)
    with pytest.raises(WebtuneError, match=r"killed/metrics.json not found.*webtune resume"):
        compare([a, b], tmp_path / "c.html")


def test_headline_says_how_general_loss_moved():
    ev = {
        "base": {"domain": {"loss": 6.0, "perplexity": 403.4}, "general": {"loss": 5.0, "perplexity": 148.4}},
        "tuned": {"domain": {"loss": 5.0, "perplexity": 148.4}, "general": {"loss": 4.8, "perplexity": 121.5}},
        "domain_gain": 1.0, "general_change": -0.2, "status": "passed", "passed": True,
        "domain_gain_ci": [0.9, 1.1]}
    lines = headline(ev, max_regression=0.5)
    assert lines[0].startswith("The tuned model beats the base on domain test loss: 6.000 → 5.000")
    assert "General test loss fell by 0.200 nats" in lines[1] and "perplexity -18%" in lines[1]
    assert "within the 0.5 threshold" in lines[1]
    worse = {**ev, "domain_gain": -0.1, "general_change": 0.7, "status": "failed", "passed": False,
             "domain_gain_ci": [-0.2, -0.05],
             "tuned": {**ev["tuned"], "general": {"loss": 5.7, "perplexity": 298.9}}}
    lines = headline(worse, max_regression=0.5)
    assert "does worse than the base" in lines[0] and "rose by 0.700" in lines[1] and "above the 0.5 threshold" in lines[1]
    api = headline({"base": {}, "tuned": {}, "domain_gain": None, "general_change": None, "loss_available": False})
    assert "not available" in api[0]
