"""webtune.base_model: the pinned GGUF, its one conversion in the model cache, and `gguf_file` configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from webtune import base_model
from webtune.errors import WebtuneError

PINNED = base_model.BASES[base_model.DEFAULT]


@pytest.fixture(scope="module")
def folder() -> Path:
    return Path(base_model.resolve(base_model.DEFAULT))     # fetches and converts if this machine has none


def test_the_converted_folder_is_an_ordinary_hf_model_with_its_provenance(folder):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    assert folder == base_model.cache_dir() / PINNED.sha256
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json"} <= \
        {p.name for p in folder.iterdir()}
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.num_hidden_layers == 30
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>" in tok.chat_template
    assert GenerationConfig.from_pretrained(folder).eos_token_id == tok.eos_token_id
    prov = base_model.provenance(folder)
    assert (prov["package"], prov["version"], prov["sha256"], prov["licence"]) == \
        (PINNED.package, PINNED.version, PINNED.sha256, PINNED.licence)


def test_the_installed_gguf_matches_the_pinned_sha256(folder):
    gguf = base_model.installed_gguf(PINNED)
    assert gguf is not None and gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    base_model.check_sha256(gguf, PINNED)
    other = base_model.Base(**{**PINNED.__dict__, "sha256": "0" * 64})
    with pytest.raises(WebtuneError, match="is not the pinned 0000.*webtune fetch-base --force"):
        base_model.check_sha256(gguf, other)


def test_a_gguf_file_config_shares_the_conversion_keyed_by_sha256(folder):
    gguf = base_model.installed_gguf(PINNED)
    cfg = OmegaConf.create({"name_or_path": str(gguf.parent), "gguf_file": gguf.name})
    assert base_model.source_of(cfg) == str(folder)           # same file, same sha256: no second conversion
    plain = OmegaConf.create({"name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "gguf_file": None})
    assert base_model.source_of(plain) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    missing = OmegaConf.create({"name_or_path": str(gguf.parent), "gguf_file": "nope.gguf"})
    with pytest.raises(WebtuneError, match="model.gguf_file='nope.gguf'.*does not exist"):
        base_model.source_of(missing)


def test_an_unknown_base_name_is_one_line():
    with pytest.raises(WebtuneError, match="unknown base model 'smollm9'.*known: smollm2-135m-instruct"):
        base_model.resolve("smollm9")


def test_the_default_config_resolves_to_the_converted_folder(folder):
    from webtune.hydra_setup import compose
    cfg = compose([])
    assert cfg.model.name == "smollm2-135m-lora" and cfg.model.method == "lora"
    assert cfg.model.name_or_path == str(folder)


@pytest.mark.slow
@pytest.mark.timeout(1200)    # a conversion: ~45 s on 2 idle cores, minutes on a busy machine
def test_a_first_use_converts_once_even_with_two_processes_at_the_same_time(tmp_path):
    """An empty model cache: two processes resolve the default at once; the lock makes one convert
    (temp folder + rename) while the other waits and then finds the whole folder."""
    import os
    import subprocess
    import sys
    code = "from webtune import base_model; print(base_model.resolve(base_model.DEFAULT))"
    env = {**os.environ, "WEBTUNE_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    folder = tmp_path / "cache/models" / PINNED.sha256
    assert {o[0].strip() for o in outs} == {str(folder)}
    stderr = "".join(o[1] for o in outs)
    assert stderr.count("converting SmolLM2-135M-Instruct.Q4_1.gguf") == 1
    assert "fetching it now (`webtune fetch-base`)" in stderr                   # a first run says so
    assert sorted(p.name for p in (tmp_path / "cache/models").iterdir()) == [".lock", PINNED.sha256]  # no temp left
    assert base_model.provenance(folder)["sha256"] == PINNED.sha256
