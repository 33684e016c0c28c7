"""The evaluate stage: base vs tuned on the domain and the general test sets.

Held-out loss and perplexity on assistant tokens, batched greedy generations scored with
ROUGE-L / chrF / BLEU and the template's task checks, side-by-side samples, regression flags,
and optionally an LLM judge. Writes eval/metrics.json and eval/samples.jsonl.
"""
from __future__ import annotations

import math
from pathlib import Path

import orjson

from ..console import log
from ..mix.mix import read_jsonl
from ..mix.tokenize import IGNORE, ChatTokenizer, load_tokenizer
from ..rundir import write_json
from .textmetrics import corpus_scores, run_check


def run(cfg, run_dir: Path, console=None) -> dict:
    import torch
    e = cfg.eval
    torch.manual_seed(0)
    domain = [r["messages"] for r in read_jsonl(run_dir / "data/test.jsonl")]
    general = [r["messages"] for r in read_jsonl(run_dir / "data/general_test.jsonl")]
    if cfg.model.kind == "openai":
        from .api_eval import run_api
        return run_api(cfg, run_dir, domain)
    checks = [c for task in cfg.template.tasks for c in task.checks]
    results, outputs = {}, {}
    for label, path in (("base", cfg.model.name_or_path), ("tuned", str(run_dir / "model"))):
        model, chat = load_for_eval(path, cfg.model)
        log(f"  scoring {label} ({path})")
        results[label] = {"domain": heldout_loss(model, chat, domain, e.batch_size),
                          "general": heldout_loss(model, chat, general, e.batch_size)}
        prompts = domain[: e.generation_examples]
        outputs[label] = generate(model, chat, [p[:-1] for p in prompts], e.max_new_tokens, e.batch_size)
        refs = [p[-1]["content"] for p in prompts]
        results[label]["generation"] = corpus_scores(outputs[label], refs)
        results[label]["checks"] = check_rates(checks, prompts, outputs[label])
        del model
    gain = results["base"]["domain"]["loss"] - results["tuned"]["domain"]["loss"]
    regression = results["tuned"]["general"]["loss"] - results["base"]["general"]["loss"]
    flags = []
    if gain < e.min_domain_gain:
        flags.append(f"domain loss gain {gain:.3f} below eval.min_domain_gain {e.min_domain_gain}")
    if regression > e.max_general_regression:
        flags.append(f"general loss rose by {regression:.3f}, above eval.max_general_regression {e.max_general_regression}")
    samples = [{"prompt": p[:-1], "reference": p[-1]["content"], "base": b, "tuned": t}
               for p, b, t in zip(domain[: e.samples], outputs["base"], outputs["tuned"])]
    out = {**results, "domain_gain": round(gain, 4), "general_change": round(regression, 4),
           "flags": flags, "passed": not flags, "n_domain_test": len(domain), "n_general_test": len(general)}
    if e.judge.enabled:
        from .judge import judge_pairs
        out["judge"] = judge_pairs(e.judge, domain[: e.judge.max_pairs], outputs["base"], outputs["tuned"])
    write_json(run_dir / "eval/metrics.json", out)
    (run_dir / "eval/samples.jsonl").write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in samples))
    log(f"  domain loss {results['base']['domain']['loss']:.3f} -> {results['tuned']['domain']['loss']:.3f} "
        f"(gain {gain:.3f}); general loss {results['base']['general']['loss']:.3f} -> "
        f"{results['tuned']['general']['loss']:.3f}")
    return {"domain_gain": out["domain_gain"], "general_change": out["general_change"], "passed": out["passed"]}


def load_for_eval(path: str, model_cfg):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from ..backends.hf import resolve_dtype
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(model_cfg.dtype))
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    tok = AutoTokenizer.from_pretrained(path) if Path(path, "tokenizer_config.json").exists() else load_tokenizer(model_cfg)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, ChatTokenizer(tok, path)


def heldout_loss(model, chat: ChatTokenizer, conversations: list[list[dict]], batch_size: int) -> dict:
    """Mean cross-entropy over assistant tokens (the tokens the model is trained on)."""
    import torch
    total, count = 0.0, 0
    encoded = [chat.encode(c) for c in conversations]
    for i in range(0, len(encoded), batch_size):
        batch = encoded[i:i + batch_size]
        width = max(len(ids) for ids, _ in batch)
        pad = chat.tok.pad_token_id
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch], device=model.device)
        labels = torch.tensor([y + [IGNORE] * (width - len(y)) for _, y in batch], device=model.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                 labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum")
        total += loss.item()
        count += int((labels[:, 1:] != IGNORE).sum())
    loss = total / max(1, count)
    return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 3), "tokens": count}


def generate(model, chat: ChatTokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int) -> list[str]:
    """Batched greedy decoding, left-padded."""
    import torch
    tok, outs = chat.tok, []
    for i in range(0, len(prompts), batch_size):
        batch = [chat.prompt_ids(p) for p in prompts[i:i + batch_size]]
        width = max(map(len, batch))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=model.device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=chat.eot_id, pad_token_id=tok.pad_token_id)
        outs += [tok.decode(g[width:], skip_special_tokens=True).strip() for g in gen]
    return outs


def check_rates(checks: list[str], prompts: list[list[dict]], outputs: list[str]) -> dict:
    rates = {}
    for check in checks:
        results = [run_check(check, "\n".join(m["content"] for m in p[:-1]), o) for p, o in zip(prompts, outputs)]
        applied = [r for r in results if r is not None]
        if applied:
            rates[check] = round(sum(applied) / len(applied), 3)
    return rates
