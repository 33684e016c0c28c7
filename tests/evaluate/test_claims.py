"""The judge's claim-check mode (eval.judge.mode=claims) on a copy of the shared tiny run, against our
fake OpenAI-compatible judge on 127.0.0.1: each model's answer is sent once with what its prompt shows,
its claims land per item with a paired comparison the gate reads, and an unreadable reply is asked once
more and then left unscored without failing the evaluation."""
import json
import shutil

import orjson
import pytest

from tests.conftest import webtune
from tests.evaluate.conftest import JUDGE_KEY_ENV
from tests.fakes.judge_server import FakeJudge, block
from webtune.evaluate.claims import parse_claims

pytestmark = pytest.mark.timeout(1800)


def claims_eval(run, judge: FakeJudge):
    return webtune("eval", str(run), "eval.judge.enabled=true", "eval.judge.mode=claims",
                   f"eval.judge.base_url={judge.base_url}", f"eval.judge.api_key_env={JUDGE_KEY_ENV}",
                   "eval.judge.model=fake-judge", env={JUDGE_KEY_ENV: "sk-judge-test"}, timeout=1200)


def test_parse_claims_reads_the_json_and_refuses_anything_else():
    reply = 'Sure: {"claims": [{"claim": "a 5-year warranty", "supported": false}, {"claim": "blue", "supported": true}]}'
    assert parse_claims(reply) == [{"claim": "a 5-year warranty", "supported": False},
                                   {"claim": "blue", "supported": True}]
    assert parse_claims('{"claims": []}') == []
    for bad in ("I think it is fine.", '{"claims": "none"}', '{"claims": [{"claim": "x", "supported": "yes"}]}', ""):
        assert parse_claims(bad) is None


def test_each_answer_s_claims_are_checked_against_its_prompt(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    with FakeJudge(policy="keyword", keyword="the", api_key="sk-judge-test") as judge:
        r = claims_eval(run, judge)
        assert r.returncode == 0, r.stderr[-3000:]
        asked = [block(b["messages"][-1]["content"], "source", "answer") for b in judge.bodies]
    ev = json.loads((run / "eval/metrics.json").read_text())
    rows = [orjson.loads(x) for x in (run / "eval/generations.jsonl").read_bytes().splitlines()]
    n = ev["n_generated"]
    assert ev["claims"]["prompts"] == n and ev["claims"]["calls"] == 2 * n and ev["claims"]["unscored"] == {"base": 0, "tuned": 0}
    for row in rows:
        for label in ("base", "tuned"):
            assert sum(a == row[label] and row["prompt"][-1]["content"] in s for s, a in asked) >= 1
            claims = row[f"{label}_claims"]
            assert row[f"{label}_grounding"]["unsupported_claims"] == int(any(not c["supported"] for c in claims))
    comparison = ev["evidence"]["tuned_vs_base"]["unsupported_claims"]
    assert comparison["n"] == n and comparison["kind"] == "binary"
    assert ev["tuned"]["grounding"]["unsupported_claims"]["n"] == n
    flagged = [c["claim"] for row in rows for c in row["tuned_claims"] if not c["supported"]]
    if flagged:    # "the" in an answer whose prompt lacks it: shown in the report's per-item table
        assert "unsupported claim (judge)" in (run / "report.html").read_text()


def test_an_unreadable_claim_check_is_asked_once_more_then_left_unscored(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    with FakeJudge(policy="garbage", api_key="sk-judge-test") as judge:
        r = claims_eval(run, judge)
        calls = len(judge.bodies)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads((run / "eval/metrics.json").read_text())
    n = ev["n_generated"]
    assert calls == 2 * 2 * n and ev["claims"]["calls"] == calls         # each answer asked twice
    assert ev["claims"]["unscored"] == {"base": n, "tuned": n}
    assert "unsupported_claims" not in ev["evidence"]["tuned_vs_base"] and ev["status"] in ("passed", "failed", "inconclusive")
