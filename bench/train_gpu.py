"""Training throughput on one GPU: webtune vs TRL SFTTrainer (padding, and packing=True bfd), same
model and data, in one run; then LoRA (and QLoRA where bitsandbytes is installed) on an 8B
Llama-shaped model at sequence length 2048.

Model: Llama architecture built from config (random weights: throughput only), ~0.85B parameters
as in the peer baseline (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 5632, vocab
32000), bf16 weights and bf16=True, no gradient checkpointing, AdamW. Data: the peer's synthetic
token sequences (`../shared/bench/peers/trl_gpu.py`: lognormal lengths, median ~300, max 2048,
same seed). webtune = the Trainer fed by `PackedRows` (best-fit-decreasing rows of 2048 from
`webtune.mix.mix.pack_split`) through `PackedCollator` (attention isolated between examples: a 4D
block mask for sdpa, document masks for flex, varlen for flash-attention). Real (non-pad) tokens/s
over steps WARM..STEPS; MFU = 6 x params x tokens/s / 989 TFLOP/s (H100 SXM dense bf16).

    python bench/train_gpu.py                      # all modes on the GPU
    python bench/train_gpu.py --modes webtune:flex_attention,trl-bfd --no-8b
    python bench/train_gpu.py --tiny               # CPU smoke test with a tiny model
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from webtune.train.collate import PackedCollator  # noqa: E402
from webtune.train.hf import checkpointing_arguments  # noqa: E402
from webtune.train.packed_data import PackedRows  # noqa: E402
from webtune.mix.mix import pack_split  # noqa: E402

PEAK_FLOPS = 989e12
GIB = 2 ** 30
TORCHTUNE_8B = {"lora": 16.2, "qlora": 7.4}  # GiB, torchtune's published peaks for Llama 3.1 8B


def setup(tiny: bool):
    cuda = torch.cuda.is_available()
    if tiny:
        torch.set_num_threads(1)  # a shared CPU: no thread oversubscription
        return SimpleNamespace(
            cuda=cuda, n=200, steps=6, warm=2, max_len=256, vocab=512, dtype=torch.float32,
            cfg=LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
            cfg_8b=LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    if not cuda:
        sys.exit("no CUDA device: run with --tiny for a CPU smoke test")
    return SimpleNamespace(
        cuda=True, n=int(os.environ.get("N", 12000)), steps=int(os.environ.get("STEPS", 40)), warm=5,
        max_len=2048, vocab=32000, dtype=torch.bfloat16,
        cfg=LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048),
        cfg_8b=LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                           rope_theta=500000.0))


def synthetic_rows(s) -> list[list[int]]:
    """The peer script's data: same seed, same length mix."""
    r = random.Random(0)
    lengths = [max(16, min(s.max_len, int(r.lognormvariate(5.7, 0.9)))) for _ in range(s.n)]
    return [[r.randrange(3, s.vocab) for _ in range(n)] for n in lengths]


class Clock(TrainerCallback):
    """Wall time between consecutive step ends (CUDA-synchronised; data loading included) and the
    real (non-pad) tokens each step trained on."""

    def __init__(self, cuda: bool):
        self.cuda, self.t, self.tokens, self.pending = cuda, [], [], []

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kw):
        self.last = self.now()

    def on_step_end(self, args, state, control, **kw):
        t = self.now()
        self.t.append(t - self.last)
        self.last = t
        self.tokens.append(sum(self.pending))
        self.pending = []

    def count(self, trainer, real_tokens) -> None:
        """Wrap trainer.training_step to record each micro-batch's real tokens."""
        step = trainer.training_step

        def counting(model, inputs, *a, **k):
            self.pending.append(real_tokens(inputs))
            return step(model, inputs, *a, **k)
        trainer.training_step = counting


def new_model(cfg, s, attn: str):
    torch.manual_seed(0)
    cfg = LlamaConfig.from_dict({**cfg.to_dict(), "attn_implementation": attn})
    model = LlamaForCausalLM(cfg).to(s.dtype)
    return model.cuda() if s.cuda else model


def measure(name: str, trainer: Trainer, clock: Clock, s, n_params: int, batch: int) -> dict:
    if s.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    t, tok = sum(clock.t[s.warm:]), sum(clock.tokens[s.warm:])
    tps = tok / t if t else 0.0
    peak = torch.cuda.max_memory_allocated() / GIB if s.cuda else None
    tokens_per_step = tok / max(1, len(clock.t) - s.warm)
    steps = sorted(clock.t[s.warm:])
    return {"mode": name, "batch": batch, "params_B": round(n_params / 1e9, 3), "tokens_per_s": round(tps),
            "mfu": round(6 * n_params * tps / PEAK_FLOPS, 4), "peak_mem_GiB": None if peak is None else round(peak, 1),
            "GiB_per_1k_tokens_step": None if peak is None else round(peak / (tokens_per_step / 1000), 3),
            "tokens_per_step": round(tokens_per_step), "step_s_median": round(steps[len(steps) // 2], 3) if steps else None}


def args_for(s, out: str, batch: int, **extra) -> TrainingArguments:
    return TrainingArguments(output_dir=out, max_steps=s.steps, per_device_train_batch_size=batch, learning_rate=1e-4,
                             bf16=s.cuda and s.dtype == torch.bfloat16, logging_steps=1000, save_strategy="no",
                             report_to=[], dataloader_num_workers=2 if s.cuda else 0, remove_unused_columns=False,
                             use_cpu=not s.cuda, disable_tqdm=True, **extra)


class CountingCollator:
    """PackedCollator that also says how many real tokens the batch holds (popped before forward)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, rows):
        batch = self.inner(rows)
        batch["n_real"] = sum(len(ex["input_ids"]) for row in rows for ex in row)  # an int: no device sync
        return batch


def pop_real(inputs) -> int:
    return int(inputs.pop("n_real"))


def run_webtune(s, rows, attn: str, batch: int, tmp: Path) -> dict:
    path = tmp / "train.npz"
    if not path.exists():
        items = [{"input_ids": ids, "labels": ids} for ids in rows]
        pack_split(items, SimpleNamespace(max_seq_len=s.max_len, packing=SimpleNamespace(enabled=True)), path)
    data = PackedRows(path)
    model = new_model(s.cfg, s, attn)
    if attn == "flex_attention":
        model.config.use_cache = False  # transformers derives flex's document mask only without a cache
    clock = Clock(s.cuda)
    collate = CountingCollator(PackedCollator.for_model(model, pad_token_id=0))
    args = args_for(s, str(tmp / f"wt_{attn}"), batch, **checkpointing_arguments(False))
    tr = Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[clock])
    clock.count(tr, pop_real)
    n_params = sum(p.numel() for p in model.parameters())
    return measure(f"webtune {attn} (isolated)", tr, clock, s, n_params, batch)


def run_trl(s, rows, mode: str, batch: int, tmp: Path) -> dict:
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl import SFTConfig, SFTTrainer
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, s.vocab)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    model = new_model(s.cfg, s, "sdpa")
    kw = dict(output_dir=str(tmp / f"trl_{mode}"), max_steps=s.steps, learning_rate=1e-4,
              bf16=s.cuda and s.dtype == torch.bfloat16, logging_steps=1000, save_strategy="no", report_to=[],
              max_length=s.max_len, dataloader_num_workers=2 if s.cuda else 0, per_device_train_batch_size=batch,
              use_cpu=not s.cuda, disable_tqdm=True, **checkpointing_arguments(False))
    kw.update(packing=False) if mode == "padding" else kw.update(packing=True, packing_strategy="bfd")
    clock = Clock(s.cuda)
    tr = SFTTrainer(model=model, args=SFTConfig(**kw), train_dataset=Dataset.from_list([{"input_ids": r} for r in rows]),
                    processing_class=tok, callbacks=[clock])

    def real(inputs) -> int:  # padding: the mask's ones; padding-free: every token of the flat row
        m = inputs.get("attention_mask")
        return int(m.sum()) if m is not None and m.dim() == 2 else int(inputs["input_ids"].numel())
    clock.count(tr, real)
    n_params = sum(p.numel() for p in model.parameters())
    label = "TRL padding" if mode == "padding" else "TRL bfd (sdpa: crosses examples)"
    return measure(label, tr, clock, s, n_params, batch)


def run_8b(s, method: str, rows_per_step: int, tmp: Path) -> dict:
    """LoRA r=16 on every linear projection (QLoRA: NF4 base) with gradient checkpointing, seq 2048."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    if method == "qlora":
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
        src = tmp / "llama8b"
        if not src.exists():  # bitsandbytes quantises on load: save the random bf16 model first
            with torch.device("cuda"):
                LlamaForCausalLM(s.cfg_8b).to(torch.bfloat16).save_pretrained(src)
            torch.cuda.empty_cache()
        model = AutoModelForCausalLM.from_pretrained(src, device_map={"": 0}, attn_implementation="sdpa",
                                                     quantization_config=BitsAndBytesConfig(
                                                         load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                         bnb_4bit_use_double_quant=True,
                                                         bnb_4bit_compute_dtype=torch.bfloat16))
    else:
        prev = torch.get_default_dtype()
        torch.set_default_dtype(s.dtype)
        with torch.device("cuda" if s.cuda else "cpu"):
            model = LlamaForCausalLM(LlamaConfig.from_dict({**s.cfg_8b.to_dict(), "attn_implementation": "sdpa"}))
        torch.set_default_dtype(prev)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    r = random.Random(1)
    # full rows of max_len tokens made of several examples, isolated by the collator
    examples = []
    for _ in range(s.steps * rows_per_step + 4):
        left, row = s.max_len, []
        while left > 0:
            n = min(left, max(16, int(r.lognormvariate(5.7, 0.9))))
            ids = [r.randrange(3, s.cfg_8b.vocab_size) for _ in range(n)]
            row.append({"input_ids": ids, "labels": ids})
            left -= n
        examples.append(row)
    clock = Clock(s.cuda)
    collate = CountingCollator(PackedCollator.for_model(model, pad_token_id=0))
    args = args_for(s, str(tmp / f"8b_{method}"), rows_per_step, **checkpointing_arguments(True))
    tr = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate, callbacks=[clock])
    clock.count(tr, pop_real)
    n_params = sum(p.numel() for p in model.parameters())
    out = measure(f"{method} 8B-shaped seq {s.max_len}", tr, clock, s, n_params, rows_per_step)
    out["torchtune_GiB"] = TORCHTUNE_8B[method]
    return out


def table(results: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title)
    cols = ["mode", "batch", "tokens_per_s", "mfu", "peak_mem_GiB", "GiB_per_1k_tokens_step", "step_s_median",
            "vs TRL bfd"] + (["torchtune_GiB"] if any("torchtune_GiB" in r for r in results) else [])
    for c in cols:
        t.add_column(c)
    ref = next((r["tokens_per_s"] for r in results if "bfd" in r["mode"] and "tokens_per_s" in r), None)
    for r in results:
        ratio = f"{r['tokens_per_s'] / ref:.2f}x" if ref and "params_B" in r and "8B" not in r["mode"] else ""
        t.add_row(*[str(r.get(c, "")) if c != "vs TRL bfd" else ratio for c in cols])
    Console(width=200).print(t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="CPU smoke test with a tiny model")
    p.add_argument("--modes", default=None, help="webtune:<attn_implementation>, trl-padding, trl-bfd "
                   "(comma-separated; default: webtune with flex_attention and sdpa (sdpa only on CPU: flex has no "
                   "CPU backward), and both TRL modes)")
    p.add_argument("--batch-webtune", type=int, default=8, help="rows of max_len per step")
    p.add_argument("--batch-padding", type=int, default=16)
    p.add_argument("--batch-bfd", type=int, default=2)
    p.add_argument("--no-8b", action="store_true")
    p.add_argument("--rows-8b", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    s = setup(a.tiny)
    rows = synthetic_rows(s)
    modes = a.modes or ("webtune:flex_attention," if s.cuda else "") + "webtune:sdpa,trl-padding,trl-bfd"
    device = torch.cuda.get_device_name(0) if s.cuda else "CPU"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mode in modes.split(","):
            try:
                if mode.startswith("webtune:"):
                    results.append(run_webtune(s, rows, mode.split(":", 1)[1], a.batch_webtune, tmp))
                elif mode in ("trl-padding", "trl-bfd"):
                    batch = a.batch_padding if mode == "trl-padding" else a.batch_bfd
                    results.append(run_trl(s, rows, mode.split("-")[1], batch, tmp))
            except ImportError as exc:  # e.g. trl or datasets missing on the GPU machine
                results.append({"mode": f"{mode}: skipped ({exc})"})
            except Exception as exc:  # noqa: BLE001 - one mode failing (OOM...) must not hide the others
                results.append({"mode": f"{mode}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"})
            if s.cuda:
                torch.cuda.empty_cache()
        table(results, f"~1B Llama from config, {device}, torch {torch.__version__}")
        big = []
        if not a.no_8b:
            for method in ("lora", "qlora"):
                try:
                    if method == "qlora" and not s.cuda:
                        raise ImportError("QLoRA needs CUDA")
                    big.append(run_8b(s, method, a.rows_8b, tmp))
                except ImportError as exc:
                    big.append({"mode": f"{method}: skipped ({exc})"})
                except Exception as exc:  # noqa: BLE001
                    big.append({"mode": f"{method}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"})
                if s.cuda:
                    torch.cuda.empty_cache()
            table(big, f"8B Llama-shaped LoRA/QLoRA at seq {s.max_len}, {device}")
    for r in results + big:
        print(json.dumps(r))
    if a.json:
        Path(a.json).write_text(json.dumps({"device": device, "results": results + big}, indent=1))


if __name__ == "__main__":
    main()
