"""`eval.engine`: vllm without a vLLM installed says so in one line naming `make vllm`, before anything
is scored; a wrong engine is a config error. (The vLLM engine's answers: tests/deploy/test_vllm.py, slow.)"""
import json

import pytest

from tests.conftest import TINY_MODEL
from webtune.errors import WebtuneError
from webtune.evaluate import stage
from webtune.hydra_setup import compose


def test_eval_engine_vllm_without_vllm_says_how_to_get_it(tmp_path):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data/test.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                                                  {"role": "assistant", "content": "Hello"}]}) + "\n")
    cfg = compose([*TINY_MODEL, "eval.engine=vllm", f"eval.vllm.command={tmp_path / 'nowhere'}",
                   f"runs_dir={tmp_path / 'runs'}"])
    with pytest.raises(WebtuneError, match=r"^eval\.vllm\.command \S+nowhere: no vllm executable there; .*`make vllm`"):
        stage.run(cfg, run)
    assert not (run / "eval").exists()
    with pytest.raises(Exception, match="eval.engine=vlm"):
        compose([*TINY_MODEL, "eval.engine=vlm"])
