"""One tiny real run of the embedded default on the toy fixture model, shared by the evaluate tests (it takes the most time).

The run has the LLM judge switched on against our fake OpenAI-compatible judge on 127.0.0.1, so
the evaluate stage, the judge and the report run end to end through the real CLI.
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import SMALL, only_run_dir, webtune
from tests.fakes.judge_server import FakeJudge

JUDGE_KEY_ENV = "WEBTUNE_TEST_JUDGE_KEY"
# Enough prompts for the tables and the judge to say something; still a few seconds of decoding.
EVAL = ["eval.generation_examples=6", "eval.samples=4", "eval.max_new_tokens=24", "eval.batch_size=8"]


def base_model_overrides() -> list[str]:
    """The toy fixture (SMALL); WEBTUNE_TEST_BASE_MODEL points elsewhere while it is being rebuilt."""
    other = os.environ.get("WEBTUNE_TEST_BASE_MODEL")
    return [f"model.name_or_path={other}"] if other else []


@pytest.fixture(scope="session")
def fake_judge():
    with FakeJudge(policy="keyword", keyword="", api_key="sk-judge-test") as fake:
        yield fake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, fake_judge):
    """A finished run directory (evaluated with the judge), and the judge's requests."""
    runs = tmp_path_factory.mktemp("evaluate") / "runs"
    small = [o for o in SMALL if o.split("=")[0] not in {e.split("=")[0] for e in EVAL}]
    r = webtune("run", f"runs_dir={runs}", *small, *EVAL, *base_model_overrides(),
                "eval.judge.enabled=true", f"eval.judge.base_url={fake_judge.base_url}",
                f"eval.judge.api_key_env={JUDGE_KEY_ENV}", "eval.judge.model=fake-judge", "eval.judge.max_pairs=6",
                env={JUDGE_KEY_ENV: "sk-judge-test"}, timeout=1800)   # minutes when the machine is busy
    assert r.returncode == 0, r.stderr[-4000:]
    run_dir = only_run_dir(runs)
    (runs.parent / "cli.stderr").write_text(r.stderr)   # what the user saw, for tests that read it
    return run_dir
