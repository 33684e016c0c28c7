"""`webtune export`: merged and GGUF (f16, q8_0) round trips on the toy fixture model with a real
LoRA adapter, read back by transformers (its GGUF loader for GGUF), and the failures it must catch."""
import json
import shutil
from argparse import Namespace

import pytest
import torch

from tests.conftest import FIXTURES
from webtune.deploy import registry as reg
from webtune.deploy.export import (LLAMACPP_AGREEMENT, convert, export_command, gguf_metadata, measure,
                                   reference, verify_llamacpp, verify_merged, Source)
from webtune.deploy.generate import GenerationSettings, generate, load_model
from webtune.errors import WebtuneError

BASE = FIXTURES / "tiny_model"
HELD_OUT = [{"messages": [{"role": "user", "content": "Describe a steel water bottle."},
                          {"role": "assistant", "content": "It keeps drinks cold all day."}]},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a refund?"},
                          {"role": "assistant", "content": "Money back for a return."}]}]


def make_run(root, init_lora_weights=False, base=BASE):
    """A run directory whose model/ is a LoRA adapter on `base` (random B unless init=True)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                      init_lora_weights=init_lora_weights))
    model.save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "model")
    (root / "data").mkdir()
    (root / "data" / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in HELD_OUT))
    (root / "metrics.json").write_text(json.dumps({"eval": {"passed": True, "flags": []}}))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def trained(run):
    return load_model(run / "model")


def greedy(lm, ids, n):
    return generate(lm, ids, GenerationSettings(max_tokens=n, temperature=0)).token_ids


def prompt_ids(lm):
    return [lm.chat_prompt_ids(x["messages"][:-1]) for x in HELD_OUT]


def test_merged_is_standalone_and_answers_like_the_adapter(run, trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    export_command(Namespace(target=str(run), format="merged", quant=None, ollama=False, out=out, registry=None))
    assert not (out / "adapter_config.json").exists() and (out / "config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no PEFT
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == trained.tokenizer.chat_template
    assert model.generation_config.eos_token_id in (trained.eos_ids, trained.eos_ids[0])
    from webtune.deploy.generate import LocalModel
    merged = LocalModel(model.eval(), tok, out)
    base = load_model(BASE)
    for ids in prompt_ids(trained):
        assert greedy(merged, ids, 24) == greedy(trained, ids, 24)
    assert any(greedy(merged, ids, 24) != greedy(base, ids, 24) for ids in prompt_ids(trained))
    checks = json.loads((out / "export.json").read_text())["checks"]
    assert checks["held_out"] == 2 and checks["max_logit_diff_vs_base"] > 1e-3


@pytest.mark.parametrize("quant,tolerance", [("f16", 0.005), ("q8_0", 0.02)])
def test_gguf_round_trip_through_the_registry(run, trained, tmp_path, quant, tolerance):
    from transformers import AutoModelForCausalLM

    registry = tmp_path / "registry"
    reg.register(registry, "shop", run)
    export_command(Namespace(target="shop@v1", format="gguf", quant=quant, ollama=True, out=None,
                             registry=str(registry)))
    out = registry / "shop" / "v1" / "exports" / f"gguf-{quant}"
    gguf_file = out / f"shop-v1-{quant}.gguf"
    meta = gguf_metadata(gguf_file)
    assert meta["tokenizer.chat_template"] == trained.tokenizer.chat_template
    assert meta["general.architecture"] == "llama" and meta["general.name"] == "shop-v1"
    # read back here too, independently of export's own checks
    model = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf_file.name).eval()
    ids = trained.tokenizer.apply_chat_template(HELD_OUT[0]["messages"], tokenize=True, return_dict=False)
    x = torch.tensor([ids])
    with torch.no_grad():
        got, want = float(model(input_ids=x, labels=x).loss), float(trained.model(input_ids=x, labels=x).loss)
    assert abs(got - want) / want < tolerance
    if quant == "q8_0":
        assert got != want  # really quantized
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{gguf_file.name}" in modelfile and 'PARAMETER stop "<|eot_id|>"' in modelfile
    assert "<|start_header_id|>{{ .Role }}<|end_header_id|>" in modelfile
    shown = reg.show(registry, "shop")["versions"][0]["exports"]
    assert [(e["format"], e["quant"]) for e in shown] == [("gguf", quant)]
    assert shown[0]["checks"]["loss_rel_diff"] < tolerance
    llama = shown[0]["checks"]["llama_cpp"]  # llama.cpp itself read the file and agreed
    assert llama["reader"].startswith("llama.cpp") and llama["greedy_agreement"] >= LLAMACPP_AGREEMENT[quant]


def test_llama_cpp_refuses_an_export_of_the_wrong_model(run, trained, tmp_path):
    """A GGUF of the base model (the adapter lost) read by llama.cpp disagrees with the trained model."""
    source = Source.parse(str(run), tmp_path)
    ref = reference(source, trained)
    convert(BASE, tmp_path / "base.gguf", "f16")
    with pytest.raises(WebtuneError, match="llama.cpp's greedy token .* differs .*not the trained model"):
        verify_llamacpp(tmp_path / "base.gguf", "f16", trained, ref)


def test_gguf_requirements_are_checked_before_any_work(run, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBTUNE_CACHE", str(tmp_path / "empty-cache"))  # no llama.cpp runtime there
    with pytest.raises(WebtuneError, match="checks the file with llama.cpp: .*python -m webtune.deploy.llamacpp") as err:
        export_command(Namespace(target=str(run), format="gguf", quant="f16", ollama=False, out=tmp_path / "out",
                                 registry=None))
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists() and not (tmp_path / ".out.tmp").exists()


def test_a_merged_model_equal_to_the_base_is_an_error(run, trained, tmp_path):
    """The LLaMA-Factory #9051 failure: the 'merged' artefact is the base without the adapter."""
    artefact = tmp_path / "not-merged"
    shutil.copytree(BASE, artefact)
    source = Source.parse(str(run), tmp_path)
    ref = reference(source, trained)
    base = measure(load_model(BASE), ref.prompts, ref.texts, 1)
    with pytest.raises(WebtuneError, match="gives the base model's outputs.*adapter"):
        verify_merged(artefact, ref, base)
    assert verify_merged(_merged_copy(run, tmp_path), ref, base)["max_logit_diff_vs_base"] > 1e-3


def _merged_copy(run, tmp_path):
    from webtune.deploy.export import save_merged
    out = tmp_path / "merged"
    save_merged(load_model(run / "model"), out)
    return out


def test_an_adapter_that_changes_nothing_is_refused(tmp_path):
    run = make_run(tmp_path / "noop", init_lora_weights=True)  # LoRA B = 0: the base's outputs exactly
    with pytest.raises(WebtuneError, match="base model's outputs"):
        export_command(Namespace(target=str(run), format="merged", quant=None, ollama=False, out=None, registry=None))
    assert not (run / "exports" / "merged").exists()


@pytest.mark.parametrize("fmt,quant,needle", [
    ("gguf", "q4_k_m", "needs llama.cpp's llama-quantize on PATH"),
    ("gguf", "q3", "--quant q3 is unknown"),
    ("merged", "q8_0", "apply to --format gguf"),
    ("gguf", "q8_0x", "--quant q8_0x is unknown"),
    ("onnx", None, "--format onnx is unknown"),
])
def test_refusals_are_one_line(run, fmt, quant, needle, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(WebtuneError, match=needle) as err:
        export_command(Namespace(target=str(run), format=fmt, quant=quant, ollama=False, out=None, registry=None))
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a 135M model merged, written as GGUF, read back and measured, on CPU
def test_the_default_base_exports_and_reads_back(tmp_path):
    """The default's real model (SmolLM2-135M-Instruct, ChatML with a default system prompt), as q8_0 with
    its Modelfile: the merge, the GGUF writer and the Modelfile are the paths f16 and merged share (the
    toy model's tests above take those through every format)."""
    from webtune.base_model import DEFAULT, fetch

    run = make_run(tmp_path / "run", base=fetch(DEFAULT))
    export_command(Namespace(target=str(run), format="gguf", quant="q8_0", ollama=True, out=None, registry=None))
    out = run / "exports" / "gguf-q8_0"
    checks = json.loads((out / "export.json").read_text())["checks"]
    assert checks["tokenizer.ggml.pre"] == "smollm" and checks["loss_rel_diff"] < 0.02
    # ChatML with SmolLM2's default system prompt when none is given (test_export_modelfile.py renders it in Go)
    modelfile = (out / "Modelfile").read_text()
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "(index .Messages 0).Role" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
