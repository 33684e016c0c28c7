"""Pretrain the toy TEST FIXTURE (not a base model): a byte-level BPE tokenizer and a 2.6M-parameter Llama,
so most tests run the whole pipeline in seconds. The product's default base is SmolLM2-135M-Instruct
(`webtune fetch-base`).

    python scripts/pretrain_base.py                 # writes tests/fixtures/tiny_model/ (a few minutes on 2 CPU cores)
    python scripts/pretrain_base.py --steps 20 --out /tmp/base   # quick smoke run

Data: examples/general/train.jsonl rendered with the chat template, plus examples/general/corpus.txt.
Never the product records (the base must not know the domain) and never general/test.jsonl (it
measures the base's held-out loss). The result loads like a hub model:
AutoModelForCausalLM.from_pretrained("tests/fixtures/tiny_model"), AutoTokenizer.from_pretrained(...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
GENERAL = ROOT / "src" / "webtune" / "examples" / "general"

BOS, EOT_TEXT, START_HEADER, END_HEADER, EOT, PAD = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|pad|>")
SPECIAL_TOKENS = [BOS, EOT_TEXT, START_HEADER, END_HEADER, EOT, PAD]

# Llama 3's pre-tokenizer split: words, 1-3 digit groups, punctuation runs, newlines apart.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama 3 layout. The {% generation %} block covers the assistant content *and* its <|eot_id|>, so
# return_assistant_tokens_mask=True marks exactly what the model must learn to produce.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('Unknown role ' + message['role'] + ': use system, user or assistant') -}}"
    "{%- endif -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|eot_id|>' -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + '<|eot_id|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)

# Sample prompts shown in the model card: three seen in pretraining, two held out.
SAMPLE_QUESTIONS = ["Why is the sky blue?", "How do I make a cup of tea?", "What is the capital of France?"]


def read_chats(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_prose(path: Path) -> list[str]:
    return [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # Like Llama 3: plain encode() prepends <|begin_of_text|>; the chat template writes its own.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOT, pad_token=PAD, chat_template=CHAT_TEMPLATE,
        model_max_length=1024, clean_up_tokenization_spaces=False)


def token_stream(tokenizer, chats: list[list[dict]], prose: list[str],
                 rng: random.Random) -> tuple[list[int], list[int]]:
    """All documents, shuffled, concatenated (nanoGPT style), as (input ids, labels).

    Chats are rendered with the template and learn only their assistant tokens: which question comes
    next is noise, the answer to it is what a chat model needs. Prose (BOS text EOT_TEXT) learns every token.
    """
    docs = []
    for chat in chats:
        enc = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
        docs.append((enc["input_ids"], [t if m else -100 for t, m in zip(enc["input_ids"], enc["assistant_masks"])]))
    for paragraph in prose:
        ids = tokenizer.encode(paragraph) + [tokenizer.convert_tokens_to_ids(EOT_TEXT)]
        docs.append((ids, ids))
    rng.shuffle(docs)
    return [t for ids, _ in docs for t in ids], [t for _, labels in docs for t in labels]


def assistant_loss(model, tokenizer, chats: list[list[dict]]) -> float:
    """Mean cross-entropy over assistant tokens (content + <|eot_id|>), the measure fine-tuning uses."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for chat in chats:
            enc = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
            ids = torch.tensor([enc["input_ids"]])
            labels = torch.where(torch.tensor([enc["assistant_masks"]]) == 1, ids, -100)
            n = int((labels[:, 1:] != -100).sum())
            total += model(input_ids=ids, labels=labels).loss.item() * n
            count += n
    model.train()
    return total / count


def answer(model, tokenizer, question: str, max_new_tokens: int = 60) -> str:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "tiny_model")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train_chats = read_chats(GENERAL / "train.jsonl")
    test_chats = read_chats(GENERAL / "test.jsonl")
    prose = read_prose(GENERAL / "corpus.txt")

    # (a) tokenizer, trained on the same text the model sees.
    tokenizer_texts = prose + [m["content"] for c in train_chats for m in c]
    tokenizer = train_tokenizer(tokenizer_texts, args.vocab_size)

    # (b) model
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-5,
        attention_dropout=0.0, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())

    ids, labels = token_stream(tokenizer, train_chats, prose, rng)
    stream, label_stream = torch.tensor(ids), torch.tensor(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    print(f"tokenizer: {len(tokenizer)} tokens; model: {n_params:,} parameters; "
          f"pretraining stream: {len(stream):,} tokens")
    model.train()
    start = time.perf_counter()
    losses: list[float] = []
    columns = (TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
               TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("pretrain", total=args.steps, loss=float("nan"))
        for step in range(args.steps):
            starts = torch.randint(0, len(stream) - args.block_size - 1, (args.batch_size,))
            x = torch.stack([stream[s:s + args.block_size] for s in starts.tolist()])
            y = torch.stack([label_stream[s:s + args.block_size] for s in starts.tolist()])
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = model(input_ids=x, labels=y).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            progress.update(task, advance=1, loss=sum(losses[-10:]) / len(losses[-10:]))
            if (step + 1) % args.log_every == 0:  # a plain line too, for logs and non-terminals
                progress.console.print(f"step {step + 1}: loss {sum(losses[-10:]) / len(losses[-10:]):.3f} "
                                       f"({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start

    final_loss = sum(losses[-10:]) / len(losses[-10:])
    train_loss = assistant_loss(model, tokenizer, train_chats)
    test_loss = assistant_loss(model, tokenizer, test_chats)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=128)
    model.eval()
    samples = [(q, answer(model, tokenizer, q)) for q in
               SAMPLE_QUESTIONS + [c[0]["content"] for c in test_chats[:2]]]

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    # transformers 5 writes its own class name; PreTrainedTokenizerFast loads in 4.x and 5.x alike.
    tok_config_path = args.out / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text())
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config_path.write_text(json.dumps(tok_config, indent=2) + "\n")
    stats = {"parameters": n_params, "vocab_size": len(tokenizer), "steps": args.steps,
             "tokens_per_step": args.batch_size * args.block_size, "stream_tokens": len(stream),
             "pretrain_seconds": round(seconds, 1), "final_train_loss_last10": round(final_loss, 4),
             "general_train_assistant_loss": round(train_loss, 4),
             "general_test_assistant_loss": round(test_loss, 4),
             "safetensors_bytes": (args.out / "model.safetensors").stat().st_size,
             "torch": torch.__version__, "seed": args.seed, "load_average_1min": round(os.getloadavg()[0], 1)}
    write_model_card(args, stats, samples)
    print(json.dumps(stats, indent=1))
    for q, a in samples:
        print(f"Q: {q}\nA: {a}\n")


def write_model_card(args, stats: dict, samples: list[tuple[str, str]]) -> None:
    seen = len(SAMPLE_QUESTIONS)
    lines = [
        "# webtune tiny base model",
        "",
        "A small Llama-architecture chat model that the embedded default (`webtune run`) fine-tunes.",
        "It was pretrained from scratch on CPU by `scripts/pretrain_base.py` on the project's own",
        "general text only, so it knows nothing about product descriptions: the default's \"tuned",
        "beats base\" comparison is meaningful. It is weak on purpose; it is here so that the",
        "default run loads a model exactly as it would load one from the hub.",
        "",
        "## How it was made",
        "",
        "```",
        f"python scripts/pretrain_base.py --steps {args.steps} --batch-size {args.batch_size} "
        f"--block-size {args.block_size} --lr {args.lr} --seed {args.seed}"
        + (f" --threads {args.threads}" if args.threads else ""),
        "```",
        "",
        "- Data: `examples/general/train.jsonl` rendered with the chat template, plus",
        "  `examples/general/corpus.txt` paragraphs (`<|begin_of_text|>` text `<|end_of_text|>`), shuffled",
        f"  and concatenated into one stream of {stats['stream_tokens']:,} tokens; random"
        f" {args.block_size}-token windows; loss on the assistant tokens of chats and on every prose token.",
        "  `examples/general/test.jsonl` is held out.",
        f"- Tokenizer: byte-level BPE (`tokenizers`), Llama 3 pre-tokenizer split, {stats['vocab_size']} tokens",
        "  trained on the same text; special tokens `<|begin_of_text|>`, `<|end_of_text|>`,",
        "  `<|start_header_id|>`, `<|end_header_id|>`, `<|eot_id|>` (eos), `<|pad|>` (pad).",
        "  Plain `encode()` prepends `<|begin_of_text|>`, as Llama 3 does.",
        "- Chat template: Llama 3 layout; `{% generation %}` covers each assistant message *and* its",
        "  `<|eot_id|>`, so `apply_chat_template(..., return_assistant_tokens_mask=True)` marks what the",
        "  model should learn; `add_generation_prompt=True` opens an assistant turn.",
        f"- Model: `LlamaForCausalLM`, hidden {args.hidden}, {args.layers} layers, 4 heads, 2 KV heads,",
        f"  intermediate {args.intermediate}, tied embeddings, 1024 positions: {stats['parameters']:,} parameters,",
        f"  float32, `model.safetensors` {stats['safetensors_bytes'] / 1e6:.1f} MB.",
        f"- Training: AdamW (lr {args.lr}, betas 0.9/0.95, weight decay 0.1), warmup then cosine to 10%,",
        f"  {args.steps} steps of {stats['tokens_per_step']:,} tokens, seed {args.seed},"
        f" {stats['pretrain_seconds']} s on CPU (torch {stats['torch']}, 1-minute load average"
        f" {stats['load_average_1min']} at the end).",
        "",
        "With only ~16k tokens of general text the model memorises its training answers (recognisable",
        "replies to seen questions) and generalises poorly (high held-out loss); that is the intended",
        "trade-off for a base that must answer in a recognisable way and know nothing of the domain.",
        "",
        "## Results",
        "",
        "| measure | value |",
        "|---|---|",
        f"| final training loss (mean of last 10 steps) | {stats['final_train_loss_last10']} |",
        f"| general train set, assistant tokens | {stats['general_train_assistant_loss']} |",
        f"| general test set (held out), assistant tokens | {stats['general_test_assistant_loss']} |",
        "",
        "Greedy answers (the first three questions were in pretraining, the last two are held out):",
        "",
    ]
    for i, (q, a) in enumerate(samples):
        tag = "seen" if i < seen else "held out"
        lines += [f"- *{q}* ({tag})", f"  > {a}", ""]
    (args.out / "README.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
