"""LoRA through the hf backend on a tiny Llama built from config: held-out loss falls, the adapter
and the merged model reload with from_pretrained (from any working directory) and generate the
same text, and training resumes from its last checkpoint."""
from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from webtune import models
from webtune.train import hf
from webtune.train.collate import PackedCollator
from webtune.train.packed_data import PackedRows
from webtune.hydra_setup import compose

from tests.train.test_families import REPO, conversations, save_tiny_model, write_packed
from tests.conftest import TINY_CONFIG
from webtune.paths import SHIPPED

BASE_TEMPLATE = str(SHIPPED / "templates/chat/base.j2")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    # a tokenizer without a chat template, like a base model: templates/chat/base.j2 supplies one
    return save_tiny_model(tmp_path_factory.mktemp("base") / "tiny-llama", "falcon3_7b")  # Llama-shaped


def lora_cfg(name_or_path, *overrides):
    return compose([*TINY_CONFIG, f"model.name_or_path={name_or_path}", "model.method=lora",
                    f"model.chat_template={BASE_TEMPLATE}", "model.dtype=float32", "mix.max_seq_len=128",
                    "model.lora.r=8", "model.lora.alpha=16", "model.lora.dropout=0.0",
                    "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
                    "model.train.batch_tokens=512", "model.train.logging_steps=2", "model.train.threads=1", *overrides])


def heldout_loss(model, path) -> float:
    """Token-mean loss over the packed validation rows, batches isolated as in training."""
    rows = PackedRows(path)
    collate = PackedCollator.for_model(model)
    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for i in range(len(rows)):
            batch = collate([rows[i]])
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += model(**batch).loss.item() * n
            count += n
    return total / count


def greedy(model, tok, messages, n=12) -> list[int]:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_lora_lowers_heldout_loss_and_reloads_as_adapter_and_merged(base_dir, tmp_path, monkeypatch):
    # a relative base path: the adapter must still find its base from another working directory
    monkeypatch.chdir(base_dir.parent)
    cfg = lora_cfg("./tiny-llama", "model.train.max_steps=24", "model.train.learning_rate=1e-2",
                   "model.merge_adapter=true")
    run = tmp_path / "run"
    write_packed(run, cfg, conversations(64), conversations(24, seed=1))
    before = heldout_loss(AutoModelForCausalLM.from_pretrained(base_dir), run / "data/packed/val.npz")
    stats = hf.train(cfg, run)

    assert stats["trainable_params"] < stats["params"] / 5
    losses = [h["loss"] for h in stats["loss_curve"] if "loss" in h]
    assert len(losses) >= 8 and losses[-1] < losses[0]
    monkeypatch.chdir(tmp_path)
    adapter = AutoModelForCausalLM.from_pretrained(run / "model")  # base + adapter, through peft
    after = heldout_loss(adapter, run / "data/packed/val.npz")
    assert after < before - 0.5, (before, after)
    assert stats["eval_loss"] == pytest.approx(after, rel=0.05)

    merged = AutoModelForCausalLM.from_pretrained(run / "model/merged")
    assert not (run / "model/merged/adapter_config.json").exists()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert heldout_loss(merged, run / "data/packed/val.npz") == pytest.approx(after, abs=1e-4)

    tok = AutoTokenizer.from_pretrained(run / "model")
    assert "generation" in tok.chat_template  # the template the model was tuned with travels with it
    assert AutoTokenizer.from_pretrained(run / "model/merged").chat_template == tok.chat_template
    prompt = [{"role": "user", "content": "What colour is the snow?"}]
    adapter.eval(), merged.eval()
    assert greedy(adapter, tok, prompt) == greedy(merged, tok, prompt)


def test_resume_continues_from_the_last_checkpoint(base_dir, tmp_path):
    run = tmp_path / "run"
    first = lora_cfg(base_dir, "model.train.max_steps=2", "model.train.save_steps=2", "model.train.logging_steps=1")
    write_packed(run, first, conversations(80), conversations(8, seed=1))
    stats = hf.train(first, run)
    assert stats["steps"] == 2 and stats["resumed_from"] is None
    assert (run / "checkpoints/checkpoint-2").is_dir()
    # the run is continued with more steps (as after a kill): it starts from checkpoint-2
    more = lora_cfg(base_dir, "model.train.max_steps=4", "model.train.save_steps=2", "model.train.logging_steps=1")
    stats = hf.train(more, run)
    assert stats["resumed_from"].endswith("checkpoint-2")
    assert stats["steps"] == 4
    steps_logged = [h["step"] for h in stats["loss_curve"] if "loss" in h]
    assert steps_logged[-1] == 4


def test_plan_prints_the_memory_estimate(base_dir, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = lora_cfg(base_dir, "model.train.max_steps=1")
    write_packed(run, cfg, conversations(8), [])
    stats = hf.train(cfg, run)
    err = capsys.readouterr().err
    assert "memory estimate" in err and "per device" in err
    est = stats["memory_estimate"]
    assert est["method"] == "lora" and est["trainable_params"] == stats["trainable_params"]
    assert est["total_gib"] > 0
    assert not (run / "model/merged").exists()  # merge only on request


def test_float16_on_cpu_is_one_clear_line(base_dir):
    from webtune.errors import WebtuneError
    if torch.cuda.is_available():
        pytest.skip("a CPU-only check")
    with pytest.raises(WebtuneError, match="float16 trains only on a GPU"):
        models.resolve_dtype("float16")
    assert os.environ.get("WORLD_SIZE", "1") == "1"


@pytest.mark.parametrize("report_to", [[], ["mlflow", "wandb"]])
def test_report_to_is_passed_through(base_dir, tmp_path, report_to):
    cfg = lora_cfg(base_dir, f"model.train.report_to=[{','.join(report_to)}]")
    args = hf.training_arguments(cfg, tmp_path, per_device=2, total_steps=10, dtype=torch.float32, has_val=True)
    if report_to:
        assert list(args.report_to) == report_to
    else:  # nothing asked: no integration reports (transformers would otherwise pick every installed one)
        assert args.report_to in ("none", [], ["none"])
    assert args.eval_strategy == "epoch" and args.save_total_limit == 1
