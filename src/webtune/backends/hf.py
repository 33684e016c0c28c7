"""Local fine-tuning with transformers (+ peft for LoRA/QLoRA, accelerate for several processes).

Feeds the packed, padding-free rows from the mix stage to transformers' Trainer with attention
isolated between examples, saves a model (or adapter) that loads with `from_pretrained`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..console import log
from ..errors import WebtuneError, check_local_path
from .memory import estimate

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def resolve_dtype(name: str):
    import torch
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, DTYPES[name])


def load_model(model_cfg, for_training: bool = True):
    import torch
    from transformers import AutoModelForCausalLM
    kwargs = {"dtype": resolve_dtype(model_cfg.dtype), "attn_implementation": model_cfg.attn_implementation}
    if model_cfg.method == "qlora":
        if not torch.cuda.is_available():
            raise WebtuneError("model.method=qlora needs a CUDA GPU with bitsandbytes (4-bit NF4); on this machine "
                               "use model.method=lora")
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise WebtuneError("model.method=qlora needs bitsandbytes: pip install 'webtune[gpu]'") from exc
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    check_local_path(model_cfg.name_or_path, "model")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_cfg.name_or_path, **kwargs)
    except OSError as exc:
        raise WebtuneError(f"cannot load model {model_cfg.name_or_path!r}: {str(exc).splitlines()[0]}") from exc
    if model_cfg.method in ("lora", "qlora") and for_training:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        if model_cfg.method == "qlora":
            model = prepare_model_for_kbit_training(model)
        lcfg = LoraConfig(r=model_cfg.lora.r, lora_alpha=model_cfg.lora.alpha, lora_dropout=model_cfg.lora.dropout,
                          target_modules=list(model_cfg.lora.target_modules), task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    return model


def last_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint
    return get_last_checkpoint(str(folder))


def train(cfg, run_dir: Path, console=None) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments
    from ..mix.tokenize import load_tokenizer
    from .collate import PackedCollator
    from .packed_data import PackedRows

    m, t = cfg.model, cfg.model.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    tok = load_tokenizer(m)
    model = load_model(m)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    train_rows = PackedRows(run_dir / "data/packed/train.npz")
    val_rows = PackedRows(run_dir / "data/packed/val.npz")
    rows_per_step = max(1, t.batch_tokens // cfg.mix.max_seq_len)
    per_device = max(1, rows_per_step // (world * t.grad_accum))
    steps_per_epoch = max(1, math.ceil(len(train_rows) / (per_device * world * t.grad_accum)))
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)

    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    mc = model.config
    mem = estimate(n_params, n_trainable, m.method, str(resolve_dtype(m.dtype)).replace("torch.", ""),
                   getattr(mc, "num_hidden_layers", 1), getattr(mc, "hidden_size", 1), per_device,
                   cfg.mix.max_seq_len, t.gradient_checkpointing)
    log(f"  plan: {m.name_or_path} ({m.method}), {n_params / 1e6:.1f}M params, {n_trainable / 1e6:.2f}M trainable; "
        f"{len(train_rows)} packed rows x {cfg.mix.max_seq_len} tokens, {per_device} rows/device/step, "
        f"{total_steps} steps; memory estimate {mem['total_gib']} GiB "
        f"(weights {mem['weights_gib']}, grads+AdamW {mem['grads_optimizer_gib']}, activations {mem['activations_gib']})")

    on_gpu = torch.cuda.is_available()
    dtype = resolve_dtype(m.dtype)
    eval_strategy = "steps" if t.eval_steps else "epoch"
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=per_device, per_device_eval_batch_size=per_device,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs, max_steps=t.max_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=max(0, round(t.warmup_ratio * total_steps)), weight_decay=t.weight_decay,
        logging_steps=t.logging_steps, logging_first_step=True,
        eval_strategy=eval_strategy, eval_steps=t.eval_steps or None,
        save_strategy="steps" if t.save_steps else "epoch", save_steps=t.save_steps or None, save_total_limit=1,
        report_to=list(t.report_to) or "none", seed=t.seed, data_seed=t.seed,
        bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16,
        gradient_checkpointing=t.gradient_checkpointing,
        remove_unused_columns=False, dataloader_num_workers=0, use_cpu=not on_gpu,
        disable_tqdm=False, save_safetensors=True,
    )
    if m.attn_implementation == "flex_attention":
        model.config.use_cache = False  # transformers builds flex's document mask only without a cache
    collator = PackedCollator.for_model(model, pad_token_id=tok.pad_token_id)
    trainer = Trainer(model=model, args=args, train_dataset=train_rows,
                      eval_dataset=val_rows if len(val_rows) else None, data_collator=collator)
    resume = last_checkpoint(run_dir / "checkpoints")
    if resume:
        log(f"  resuming training from {resume}")
    result = trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        save(trainer.model, tok, m, run_dir / "model")
    history = trainer.state.log_history
    curve = [{k: h[k] for k in ("step", "epoch", "loss", "eval_loss", "learning_rate") if k in h} for h in history]
    return {"steps": trainer.state.global_step, "train_loss": result.training_loss,
            "train_runtime": result.metrics.get("train_runtime"),
            "tokens": train_rows.n_tokens(), "params": n_params, "trainable_params": n_trainable,
            "memory_estimate": mem, "loss_curve": curve, "resumed_from": resume}


def save(model, tok, model_cfg, out: Path) -> None:
    """HF format: full weights, or the LoRA adapter (+ merged weights on request)."""
    out.mkdir(parents=True, exist_ok=True)
    if model_cfg.method in ("lora", "qlora"):
        model.save_pretrained(out)  # adapter_config.json + adapter weights; loads with from_pretrained
        if model_cfg.merge_adapter:
            merged = model.merge_and_unload()
            merged.save_pretrained(out / "merged")
            tok.save_pretrained(out / "merged")
    else:
        model.save_pretrained(out)
    tok.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
