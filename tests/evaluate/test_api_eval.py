"""Evaluating a model tuned through the OpenAI API: generations over the real SDK against a fake
OpenAI-compatible chat endpoint of ours that serves the base and the tuned model, no loss (and the
report says so), the judge on top."""
import json

import orjson
import pytest

from tests.conftest import REPO
from tests.fakes.judge_server import FakeJudge
from webtune.evaluate import stage
from webtune.report import stage as report
from webtune.hydra_setup import compose

ENV, KEY = "WEBTUNE_TEST_OPENAI_KEY", "sk-fake-test-key"
TUNED = "ft:gpt-4o-mini-2024-07-18:webtune::abc123"
SYSTEM = {"role": "system", "content": "You write product copy."}


@pytest.fixture
def openai_run(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(ENV, KEY)
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "model").mkdir()
    convs = [[SYSTEM, {"role": "user", "content": f"Describe it.\nBrand: Brand{i}"},
              {"role": "assistant", "content": f"Brand{i} makes a fine thing."}] for i in range(5)]
    (run / "data/test.jsonl").write_bytes(b"".join(orjson.dumps({"messages": c}) + b"\n" for c in convs))
    (run / "data/general_test.jsonl").write_bytes(b"")
    (run / "model/openai_model.json").write_text(json.dumps(
        {"fine_tuned_model": TUNED, "base_model": "gpt-4o-mini-2024-07-18", "job_id": "ftjob-1", "api_key_env": ENV}))
    fake = FakeJudge(policy="echo", api_key=KEY).start()
    yield run, fake
    fake.stop()


def test_generation_metrics_through_the_chat_api_and_no_loss(openai_run):
    run, fake = openai_run
    cfg = compose(["model=openai_gpt4o_mini", f"model.base_url={fake.base_url}", f"model.api_key_env={ENV}",
                   "eval.generation_examples=4", "eval.samples=2", "eval.max_new_tokens=33"])
    out = stage.run(cfg, run)
    bodies = fake.bodies
    assert sorted({b["model"] for b in bodies}) == sorted(["gpt-4o-mini-2024-07-18", TUNED])
    assert len(bodies) == 8 and all(b["temperature"] == 0 and b["max_tokens"] == 33 for b in bodies)
    assert all(b["messages"][-1]["role"] == "user" for b in bodies)          # the reference never leaks
    ev = json.loads((run / "eval/metrics.json").read_text())
    # no loss and no judge: the run is unverified, which fails closed
    assert ev["loss_available"] is False and ev["domain_gain"] is None
    assert out["status"] == ev["status"] == "unverified" and out["passed"] is False
    assert "domain" not in ev["tuned"]
    # the fake answers "<model> answers: <last user turn>", which names the brand
    assert ev["tuned"]["checks"]["mentions:Brand: (.+)"] == {"rate": 1.0, "passed": 4, "applied": 4}
    assert ev["tuned"]["generation"]["chrF"] > 0
    samples = [orjson.loads(x) for x in (run / "eval/samples.jsonl").read_bytes().splitlines()]
    assert len(samples) == 2 and samples[0]["tuned"].startswith(f"{TUNED} answers:")
    assert len((run / "eval/generations.jsonl").read_bytes().splitlines()) == 4

    (run / "stats").mkdir()
    report.run(cfg, run)
    html = (run / "report.html").read_text()
    assert "Held-out loss is not available for a model tuned through the OpenAI API" in html
    assert "UNVERIFIED" in html
    assert json.loads((run / "metrics.json").read_text())["eval"]["status"] == "unverified"


def test_judge_on_an_api_model(openai_run, monkeypatch):
    run, fake = openai_run
    monkeypatch.setenv("WEBTUNE_TEST_JUDGE_KEY", "sk-judge-test")
    with FakeJudge(policy="keyword", keyword="ft:gpt") as judge:
        cfg = compose(["model=openai_gpt4o_mini", f"model.base_url={fake.base_url}", f"model.api_key_env={ENV}",
                       "eval.generation_examples=3", "eval.samples=3", "eval.judge.enabled=true", f"eval.judge.base_url={judge.base_url}",
                       "eval.judge.api_key_env=WEBTUNE_TEST_JUDGE_KEY"])
        out = stage.run(cfg, run)
        assert len(judge.bodies) == 6
    assert out["judge_win_rate"] == 1.0
    rows = [orjson.loads(x) for x in (run / "eval/generations.jsonl").read_bytes().splitlines()]
    assert all(r["judge"] == {"tuned_first": "tuned", "base_first": "tuned", "score": 1.0} for r in rows)


def test_a_failing_judge_keeps_the_rest_of_the_evaluation(openai_run, monkeypatch):
    run, fake = openai_run
    monkeypatch.delenv("WEBTUNE_TEST_JUDGE_KEY", raising=False)
    cfg = compose(["model=openai_gpt4o_mini", f"model.base_url={fake.base_url}", f"model.api_key_env={ENV}",
                   "eval.generation_examples=2", "eval.samples=2", "eval.judge.enabled=true",
                   "eval.judge.base_url=https://judge.example.com/v1", "eval.judge.api_key_env=WEBTUNE_TEST_JUDGE_KEY"])
    stage.run(cfg, run)
    ev = json.loads((run / "eval/metrics.json").read_text())
    assert "WEBTUNE_TEST_JUDGE_KEY is not set" in ev["judge_error"] and "judge" not in ev
    assert ev["tuned"]["generation"]["chrF"] > 0
    (run / "stats").mkdir()
    report.run(cfg, run)
    assert "The judge failed" in (run / "report.html").read_text()
