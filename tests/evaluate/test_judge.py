"""The LLM judge against a fake OpenAI-compatible endpoint of our own, over real HTTP."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.fakes.judge_server import FakeJudge
from webtune.config import JudgeConfig
from webtune.errors import WebtuneError
from webtune.evaluate import judge

KEY_ENV = "WEBTUNE_TEST_JUDGE_KEY"
PROMPTS = [[{"role": "system", "content": "You write product copy."},
            {"role": "user", "content": f"Describe product {i}. Brand: Acme"}] for i in range(6)]
REFS = [f"The Acme product {i} is great." for i in range(6)]


def cfg(fake: FakeJudge | None, **kw):
    base = {"enabled": True, "model": "judge-model", "base_url": fake.base_url if fake else None,
            "api_key_env": KEY_ENV, "max_pairs": 10, "price_per_1k_tokens": 0.001}
    c = OmegaConf.structured(JudgeConfig)
    OmegaConf.set_struct(c, False)   # max_retries, concurrency: judge settings the config may not declare yet
    return OmegaConf.merge(c, {**base, **kw})


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-judge-test")


def test_keyword_judge_prefers_tuned_and_both_orders_are_asked(key, capsys):
    base = ["A fine product, long and wordy but vague." for _ in PROMPTS]
    tuned = ["Acme made it." for _ in PROMPTS]          # shorter, but names the brand
    with FakeJudge(policy="keyword", keyword="Acme") as fake:
        out = judge.judge_pairs(cfg(fake, rubric="Prefer the answer that names the brand."), PROMPTS, REFS, base, tuned)
        asked = fake.answers_asked()
        bodies = fake.bodies
    assert out["pairs"] == 6 and out["calls"] == 12 == len(asked)
    assert sorted(asked).count(("Acme made it.", base[0])) == 6      # tuned as A ...
    assert sorted(asked).count((base[0], "Acme made it.")) == 6      # ... and as B, for every pair
    assert out["win_rate"] == 1.0 and out["wins"] == 6 and out["losses"] == 0
    assert out["ci_high"] == 1.0 and 0.55 < out["ci_low"] < 0.65     # Wilson, n=6, all wins: 0.61
    assert out["order_agreement"] == 1.0
    assert all(b["model"] == "judge-model" and b["temperature"] == 0 for b in bodies)
    assert "Acme" in bodies[0]["messages"][1]["content"]            # the prompt reached the judge
    assert "Prefer the answer that names the brand." in bodies[0]["messages"][0]["content"]   # the rubric
    assert all(a == "Bearer sk-judge-test" for a in fake.auth)
    assert out["tokens"]["prompt"] > 0 and out["cost_usd"] > 0


def test_plan_and_estimate_are_printed_before_the_calls(key, capsys):
    with FakeJudge(policy="keyword") as fake:
        judge.judge_pairs(cfg(fake), PROMPTS[:3], REFS[:3], ["a"] * 3, ["bb"] * 3)
    err = capsys.readouterr().err
    assert "3 pairs x 2 orders = 6 calls to judge-model" in err
    assert "estimated $" in err


def test_position_bias_cancels_out(key):
    with FakeJudge(policy="first") as fake:   # always answers "A"
        out = judge.judge_pairs(cfg(fake), PROMPTS, REFS, ["base"] * 6, ["tuned"] * 6)
    assert out["win_rate"] == 0.5 and out["ties"] == 6
    assert out["order_agreement"] == 0.0 and out["first_position_rate"] == 1.0


def test_longer_base_wins_when_no_keyword(key):
    with FakeJudge(policy="keyword", keyword="") as fake:
        out = judge.judge_pairs(cfg(fake), PROMPTS[:4], REFS[:4], ["a much longer base answer"] * 4, ["short"] * 4)
    assert out["win_rate"] == 0.0 and out["losses"] == 4
    assert out["ci_low"] == 0.0 and out["ci_high"] < 0.5


def test_unreadable_replies_count_as_ties_and_are_reported(key):
    with FakeJudge(policy="garbage") as fake:
        out = judge.judge_pairs(cfg(fake), PROMPTS[:2], REFS[:2], ["x"] * 2, ["y"] * 2)
    assert out["unparsed"] == 4 and out["win_rate"] == 0.5


def test_max_pairs_limits_the_calls(key):
    with FakeJudge() as fake:
        out = judge.judge_pairs(cfg(fake, max_pairs=2), PROMPTS, REFS, ["a"] * 6, ["b"] * 6)
        assert len(fake.bodies) == 4
    assert out["pairs"] == 2


def test_missing_key_names_the_env_var(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    c = cfg(None, base_url="https://judge.example.com/v1")
    with pytest.raises(WebtuneError, match=f"eval.judge.api_key_env: environment variable {KEY_ENV} is not set"):
        judge.judge_pairs(c, PROMPTS, REFS, ["a"] * 6, ["b"] * 6)


def test_wrong_key_and_server_errors_are_one_line(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with FakeJudge() as fake:
        with pytest.raises(WebtuneError, match=f"answered 401.*check the key in {KEY_ENV}"):
            judge.judge_pairs(cfg(fake, max_retries=0), PROMPTS[:1], REFS[:1], ["a"], ["b"])
    monkeypatch.setenv(KEY_ENV, "sk-judge-test")
    with FakeJudge() as fake:
        fake.fail_next = [500]                 # the SDK's own retry gets past one 500
        out = judge.judge_pairs(cfg(fake, max_retries=1, concurrency=1), PROMPTS[:1], REFS[:1], ["a"], ["bb"])
    assert out["win_rate"] == 1.0


def test_parse_verdict_and_wilson():
    assert judge.parse_verdict('{"winner": "B", "reason": "x"}') == "B"
    assert judge.parse_verdict('Sure.\n```json\n{"winner": "tie"}\n```') == "tie"
    assert judge.parse_verdict("A") == "A" and judge.parse_verdict("(b)") == "B"
    assert judge.parse_verdict("both are fine") is None
    low, high = judge.wilson(5, 10)
    assert abs(low - 0.2366) < 1e-3 and abs(high - 0.7634) < 1e-3
    assert judge.wilson(0, 0) == (0.0, 1.0)
