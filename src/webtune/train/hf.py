"""Local fine-tuning with transformers' Trainer (+ peft for LoRA/QLoRA, accelerate for several processes).

Feeds the packed, padding-free rows from the mix stage to the Trainer with attention isolated
between examples (see collate.py), and saves a model or adapter that loads with `from_pretrained`.

Several processes (`accelerate launch -m webtune run ...`): each builds the same Trainer; the
Trainer's DataLoader gives each process its own shard of the packed rows (so `PackedRows` is not
sharded again here), and only the main process writes files.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import base_model
from . import distributed
from ..console import log
from ..errors import WebtuneError
from ..models import model_source, resolve_attn, resolve_dtype
from . import budget, memory

def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def say(message: str) -> None:
    if rank() == 0:  # one plan on the console, not one per process
        log(message)


def lora_config(model_cfg):
    from peft import LoraConfig
    exclude = model_cfg.lora.get("exclude_modules")
    return LoraConfig(r=model_cfg.lora.r, lora_alpha=model_cfg.lora.alpha, lora_dropout=model_cfg.lora.dropout,
                      target_modules=list(model_cfg.lora.target_modules), exclude_modules=exclude or None,
                      trainable_token_indices=trainable_token_ids(model_cfg) or None, task_type="CAUSAL_LM")


def trainable_token_ids(model_cfg) -> list[int]:
    """model.lora.trainable_tokens as ids. A pretrained base never saw its chat markers: Gemma 3 270M
    puts <end_of_turn> ~20 logits under the top at the end of a reply, and LoRA on the projections
    alone, with the (tied) embeddings frozen, had not lifted it after 12 steps (no reply stopped).
    Training these rows (PEFT's trainable tokens; tied to the output layer) lets it learn to stop."""
    tokens = list(model_cfg.lora.get("trainable_tokens") or [])
    if not tokens:
        return []
    from ..chat.tokenize import load_tokenizer
    vocab = load_tokenizer(model_cfg).get_vocab()
    unknown = [t for t in tokens if t not in vocab]
    if unknown:
        raise WebtuneError(f"model.lora.trainable_tokens: {', '.join(map(repr, unknown))} not in the vocabulary of "
                           f"{model_cfg.name_or_path!r}")
    return [vocab[t] for t in tokens]


def load_model(model_cfg, for_training: bool = True):
    import torch
    from transformers import AutoModelForCausalLM
    kwargs = {"dtype": resolve_dtype(model_cfg.dtype), "attn_implementation": resolve_attn(model_cfg.attn_implementation)}
    if model_cfg.method not in ("full", "lora", "qlora"):
        raise WebtuneError(f"model.method={model_cfg.method!r}: use full, lora or qlora")
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
            bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # each process its own GPU
    source = model_source(base_model.source_of(model_cfg))
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise WebtuneError(f"cannot load model {model_cfg.name_or_path!r}: {str(exc).splitlines()[0]}") from exc
    except ImportError as exc:  # e.g. flash_attention_2 asked for but not installed
        raise WebtuneError(f"model {model_cfg.name_or_path!r}: {str(exc).splitlines()[0]} "
                           f"(set model.attn_implementation=sdpa)") from exc
    if model_cfg.method in ("lora", "qlora") and for_training:
        from peft import get_peft_model, prepare_model_for_kbit_training
        if model_cfg.method == "qlora":
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=model_cfg.train.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        if model_cfg.get("init_adapter"):   # warm start (a refresh): checked to fit, every tensor loaded
            from .warm_start import load
            return load(model, model_cfg)
        try:
            model = get_peft_model(model, lora_config(model_cfg))
        except ValueError as exc:  # no target module matched
            raise WebtuneError(f"model.lora.target_modules={list(model_cfg.lora.target_modules)} for "
                               f"{model_cfg.name_or_path!r}: {str(exc).splitlines()[0]}") from exc
    return model


def plan_memory(model_cfg, rows: int, seq_len: int) -> dict | None:
    """The estimate from the model's config alone (before any weights load); None if unreadable."""
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(model_source(base_model.source_of(model_cfg)))
        shape = memory.model_shape(config, model_cfg.lora.target_modules, model_cfg.lora.get("exclude_modules"),
                                   model_cfg.lora.r)
    except (OSError, ValueError):
        return None  # loading the model itself reports the problem in one line
    dtype = str(resolve_dtype(model_cfg.dtype)).replace("torch.", "")
    return memory.estimate(shape, model_cfg.method, dtype, rows, seq_len, model_cfg.train.gradient_checkpointing,
                           resolve_attn(model_cfg.attn_implementation))


def checkpointing_arguments(on: bool) -> dict:
    """Activation checkpointing without the reentrant variant (which needs inputs that require grad
    under LoRA); transformers 5.2x renamed the arguments, older releases know the old names."""
    from transformers import TrainingArguments
    name = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ \
        else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def training_arguments(cfg, run_dir: Path, per_device: int, total_steps: int, dtype, has_val: bool):
    import torch
    from transformers import TrainingArguments
    t = cfg.model.train
    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=per_device, per_device_eval_batch_size=per_device,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs, max_steps=t.max_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=max(0, round(t.warmup_ratio * total_steps)), weight_decay=t.weight_decay,
        logging_steps=t.logging_steps, logging_first_step=True,
        eval_strategy=("steps" if t.eval_steps else "epoch") if has_val else "no", eval_steps=t.eval_steps or None,
        save_strategy="steps" if t.save_steps else "epoch", save_steps=t.save_steps or None, save_total_limit=1,
        report_to=list(t.report_to) or "none", seed=t.seed, data_seed=t.seed,
        bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16,
        **checkpointing_arguments(t.gradient_checkpointing),
        remove_unused_columns=False, dataloader_num_workers=0, use_cpu=not on_gpu,
        include_num_input_tokens_seen="all",   # the tokens trained, for the report (budget.trained)
        ddp_find_unused_parameters=False if world_size() > 1 else None,
        disable_tqdm=rank() != 0,
    )


@dataclass
class Plan:
    """What one training run will do, decided before any weight loads."""

    train_rows: Any
    val_rows: Any
    per_device: int       # packed rows per device per step
    world: int            # processes
    total_steps: int
    memory: dict | None   # the memory estimate, where one can be made
    coverage: dict        # what the steps cover of the prepared data (budget.coverage)


def plan(cfg, run_dir: Path) -> Plan:
    from .packed_data import PackedRows
    m, t = cfg.model, cfg.model.train
    world, seq_len = world_size(), cfg.mix.max_seq_len
    train_rows = PackedRows(run_dir / "data/packed/train.npz")  # the Trainer's DataLoader shards it
    val_rows = bounded(PackedRows(run_dir / "data/packed/val.npz"), cfg.eval.max_examples, cfg.mix.seed)
    per_device = distributed.rows_per_device(t.batch_tokens, world, t.grad_accum, seq_len)  # exact, or refuses
    steps_per_epoch = max(1, math.ceil(len(train_rows) / (per_device * world * t.grad_accum)))
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)
    mem = plan_memory(m, per_device, seq_len)
    say(f"  plan: {m.name_or_path} ({m.method}, {m.dtype}, attention {resolve_attn(m.attn_implementation)}); "
        f"{len(train_rows)} packed rows of <= {seq_len} tokens, {per_device} rows/device/step x {world} "
        f"process(es) x {t.grad_accum} accumulation, {total_steps} optimizer steps")
    if mem:
        say("  " + memory.describe(mem, memory.device_memory_gib()))
    cov = budget.coverage(len(train_rows), train_rows.n_tokens(), per_device * world * t.grad_accum, total_steps)
    say("  " + budget.describe(cov, budget.expected_time(mem, m.method, resolve_dtype(m.dtype), cov["tokens_planned"],
                                                         world)))
    return Plan(train_rows, val_rows, per_device, world, total_steps, mem, cov)


def bounded(rows, limit: int, seed: int):
    """The Trainer's validation pass on a seeded sample of at most `limit` packed rows (eval.max_examples,
    as evaluate bounds each test set): on 150 pages of docs the full pass took
    1,712 s of a 2,646 s training stage."""
    import random
    if 0 < limit < len(rows.rows):
        rows.rows = sorted(random.Random(seed).sample(rows.rows, limit))
    return rows


def train(cfg, run_dir: Path, console=None) -> dict:
    import torch
    from transformers import Trainer
    from ..chat.tokenize import load_tokenizer
    from .collate import PackedCollator

    m, t = cfg.model, cfg.model.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    p = plan(cfg, run_dir)
    tok, model = load_tokenizer(m), load_model(m)
    model.config.use_cache = False  # no KV cache while training (and flex builds its document mask only without one)
    params = {"params": sum(x.numel() for x in model.parameters()),
              "trainable_params": sum(x.numel() for x in model.parameters() if x.requires_grad)}
    say(f"  {params['params'] / 1e6:.1f}M parameters, {params['trainable_params'] / 1e6:.2f}M trainable")
    args = training_arguments(cfg, run_dir, p.per_device, p.total_steps, resolve_dtype(m.dtype),
                              has_val=len(p.val_rows) > 0)
    trainer = Trainer(model=model, args=args, train_dataset=p.train_rows,
                      eval_dataset=p.val_rows if len(p.val_rows) else None,
                      data_collator=PackedCollator.for_model(model, pad_token_id=tok.pad_token_id), processing_class=tok)
    batches_per_process = len(trainer.get_train_dataloader())  # this process's shard, per epoch
    resume = distributed.resume_choice(run_dir / "checkpoints")  # rank 0's choice on every rank
    if resume:
        say(f"  resuming training from {resume}")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train(resume_from_checkpoint=resume)
    final_eval = final_evaluation(trainer, p.val_rows)
    save(trainer, tok, m, run_dir / "model")
    return {**train_stats(trainer, result, p), **params, "batches_per_process": batches_per_process,
            "resumed_from": resume, "attn_implementation": model.config._attn_implementation,
            "base_model": base_model.provenance(base_model.source_of(m)),   # package, version, sha256, licence
            **({"final_eval": final_eval} if final_eval else {})}


def final_evaluation(trainer, val_rows) -> dict | None:
    """The validation loss at the last step, unless the Trainer's own schedule just measured it."""
    history = trainer.state.log_history
    evaluated_last = any("eval_loss" in h and h.get("step") == trainer.state.global_step for h in history)
    return trainer.evaluate() if len(val_rows) and not evaluated_last else None


def train_stats(trainer, result, p: Plan) -> dict:
    import torch
    history = trainer.state.log_history
    curve = [{k: h[k] for k in ("step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm") if k in h}
             for h in history]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    stats = {"steps": trainer.state.global_step, "train_loss": result.training_loss,
             "eval_loss": eval_losses[-1] if eval_losses else None,
             "train_runtime": result.metrics.get("train_runtime"),
             **budget.trained(trainer.state, p.coverage, p.per_device * p.world * trainer.args.gradient_accumulation_steps),
             "processes": p.world, "memory_estimate": p.memory, "loss_curve": curve}
    if torch.cuda.is_available():
        stats["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / memory.GIB, 3)
    return stats


def save(trainer, tok, model_cfg, out: Path) -> None:
    """HF format in `out`: full weights, or the LoRA adapter (+ `out/merged` on request), with the
    tokenizer (its chat template and end-of-turn token) next to each, so `from_pretrained` loads
    either directory. Every process calls this (FSDP gathers the weights); only the main one writes."""
    model = trainer.model
    model.config.use_cache = True  # generation after training wants its KV cache
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero():
        return
    tok.save_pretrained(out)
    stop_at_end_of_turn(out, tok)
    if model_cfg.method in ("lora", "qlora"):
        from .warm_start import write_base_file
        write_base_file(out, model_cfg)   # what a later warm start checks the base against
    if model_cfg.method in ("lora", "qlora") and model_cfg.merge_adapter:
        merge_adapter(out, model_cfg, tok)


def stop_at_end_of_turn(model_dir: Path, tok) -> None:
    """Generation must stop at the token a tuned reply ends with (Gemma: <end_of_turn>, not <eos>)."""
    from transformers import GenerationConfig
    try:
        gen = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        return  # an adapter directory: the base model's generation config applies
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id] if gen.eos_token_id is not None else []
    if tok.eos_token_id not in eos:
        gen.eos_token_id = eos + [tok.eos_token_id] if eos else tok.eos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id
    gen.save_pretrained(model_dir)


def merge_adapter(adapter_dir: Path, model_cfg, tok) -> Path:
    """Base weights (full precision, also for QLoRA: merging into 4-bit weights loses precision)
    + the adapter, merged into one model in `adapter_dir/merged`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(model_source(base_model.source_of(model_cfg)),
                                                dtype=resolve_dtype(model_cfg.dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out = adapter_dir / "merged"
    merged.save_pretrained(out)
    tok.save_pretrained(out)
    stop_at_end_of_turn(out, tok)
    say(f"  merged base + adapter -> {out}")
    return out
