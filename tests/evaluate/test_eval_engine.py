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


def test_an_adapter_that_trains_token_rows_is_refused_before_vllm_is_asked(tmp_path):
    """vLLM's LoRA cannot load PEFT's trainable tokens (Gemma 3 270M's turn markers): one line, no request."""
    from webtune.vllm_server import load_lora
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "trainable_token_indices": [105, 106]}))
    with pytest.raises(WebtuneError, match="trains token rows.*--engine transformers"):
        load_lora("http://127.0.0.1:9", "shop@v1", tmp_path)     # nothing listens there: no request is made
