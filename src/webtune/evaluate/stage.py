"""The evaluate stage: base vs tuned (and eval.compare_to's promoted version) on the held-out sets.

Held-out loss and perplexity on assistant tokens (the tokens training optimises), batched greedy
generations scored with ROUGE-L / chrF / BLEU, length stats, the template's task checks and the
grounding detector, side-by-side samples, and optionally an LLM judge. Every score is also kept per
item, so each gives a paired difference with a 95% interval (evidence.py) and the gate decides on
those intervals. Each test set is a seeded sample of at most `eval.max_examples` items. Writes
eval/metrics.json, eval/items.jsonl (per-item losses), eval/samples.jsonl (the first `eval.samples`
prompts, for the report) and eval/generations.jsonl (every generated prompt, with its prompt id and
per-prompt scores).
"""
from __future__ import annotations

import math
from pathlib import Path

import orjson

from ..console import log, progress
from ..errors import WebtuneError
from ..fileio import atomic_write_bytes, read_jsonl, write_json
from ..rundir import use_cache
from . import evidence as ev_
from .evidence import item_scores
from .metrics import check_rates, corpus_scores, validate_check


def run(cfg, run_dir: Path, console=None, promoted: str | None = None) -> dict:
    """`promoted`: the model folder of eval.compare_to's promoted version, scored as a third model."""
    e = cfg.eval
    domain_all = read_test(run_dir / "data/test.jsonl")
    general_all = read_test(run_dir / "data/general_test.jsonl", required=False)
    if not domain_all:
        raise WebtuneError(f"{run_dir}/data/test.jsonl is empty: no domain test examples to evaluate "
                           f"(raise mix.test_fraction or add records)")
    sets = {"domain": ev_.sample(domain_all, e.max_examples, e.seed),
            "general": ev_.sample(general_all, e.max_examples, e.seed)}
    old_all = read_test(run_dir / "data/test_old.jsonl", required=False)   # a refresh: the promoted version's
    if old_all:
        sets["old"] = ev_.sample(old_all, e.max_examples, e.seed)
    checks_of = task_checks(cfg, run_dir)
    prompts = sets["domain"][: max(0, e.generation_examples, e.samples)]   # the side-by-side samples are generated too
    if cfg.model.kind == "openai":
        from .api_eval import run_api
        results, outputs = run_api(cfg, run_dir, prompts, console=console)
    else:
        models = {"base": None, "tuned": str(run_dir / "model")}
        if e.get("compare_to"):
            models["promoted"] = promoted
        results, outputs = run_local(cfg, run_dir, models, sets, prompts, console=console)
    prompts = prompts[: min(map(len, outputs.values()))]   # prompts too long for the model's context were left out
    ground = grounding_checker(run_dir)
    items = {}
    for label in results:
        score_generations(results[label], prompts, outputs[label], checks_of)
        items[label] = item_scores(results[label], prompts, outputs[label], checks_of, ground)
    claims, listed = judge_claims(e.judge, prompts, outputs, items, console) if judge_mode(e.judge) == "claims" \
        else ({}, {})
    for label in results:
        results[label]["grounding"] = grounding_rates(items[label])
    evidence = {f"tuned_vs_{old}": ev_.comparisons(items[old], items["tuned"], e.seed, e.resamples, old, "tuned",
                                                   e.get("margins"))
                for old in results if old != "tuned"}
    out = {**{k: strip_items(v) for k, v in results.items()}, "n_domain_test": len(domain_all),
           "n_general_test": len(general_all), "n_domain_scored": len(sets["domain"]),
           "n_general_scored": len(sets["general"]), "n_generated": len(prompts),
           "loss_available": cfg.model.kind != "openai", "compare_to": e.get("compare_to"),
           "decoding": {"strategy": "greedy", "max_new_tokens": e.max_new_tokens,
                        "engine": "vllm" if on_vllm(e) and cfg.model.kind != "openai"
                        else "transformers"},
           "settings": settings(e), "evidence": evidence, **claims}
    rows = generation_rows(prompts, outputs, checks_of, items, listed)
    if judge_mode(e.judge) == "pairwise":
        from .judge import judge_pairs
        try:
            out["judge"] = judge_pairs(e.judge, [p[:-1] for p in prompts], [p[-1]["content"] for p in prompts],
                                       outputs["base"], outputs["tuned"], console=console)
        except WebtuneError as exc:   # keep the losses and generations; the report shows why the judge is missing
            log(f"  [bold red]judge failed[/]: {exc} (retry with `webtune eval {run_dir} eval.judge.enabled=true`)")
            out["judge_error"] = str(exc)
        for v in out.get("judge", {}).get("verdicts", []):
            rows[v["pair"]]["judge"] = {k: v[k] for k in ("tuned_first", "base_first", "score")}
    out.update(ev_.verdict(e, evidence, out.get("judge")))
    write_outputs(run_dir, out, rows, e.samples, loss_rows(sets, items))
    say_summary(out)
    return {"domain_gain": out["domain_gain"], "general_change": out["general_change"], "passed": out["passed"],
            "status": out["status"],
            **({"judge_win_rate": out["judge"]["win_rate"]} if "judge" in out else {})}


def judge_mode(judge) -> str | None:
    """None (no judge), "pairwise" or "claims" (eval.judge.mode)."""
    if not judge.enabled:
        return None
    mode = str(judge.get("mode") or "pairwise")
    if mode not in ("pairwise", "claims"):
        raise WebtuneError(f"eval.judge.mode={mode!r}: pairwise (base vs tuned) or claims (each answer's claims)")
    return mode


def judge_claims(judge, prompts: list, outputs: dict, items: dict, console=None) -> tuple[dict, dict]:
    """The judge's claim check of every model's answers: per-item `unsupported_claims` added to `items`
    (so it gets paired comparisons and the gate reads it); returns the counts for metrics.json and each
    model's listed claims ({label: {prompt id: claims}}). A judge that cannot be reached leaves the rest
    of the evaluation as it is, with the reason."""
    from ..grounding.targets import eval_source
    from .claims import check_claims
    try:
        found = check_claims(judge, [eval_source(p) for p in prompts], outputs, [ev_.prompt_id(p) for p in prompts],
                             console=console)
    except WebtuneError as exc:
        log(f"  [bold red]judge failed[/]: {exc} (retry with `webtune eval RUN eval.judge.enabled=true`)")
        return {"judge_error": str(exc)}, {}
    for label, scores in found["items"].items():
        if scores:   # none scored (every reply unreadable): no rate, no comparison
            items[label]["unsupported_claims"] = scores
    return {"claims": found["summary"]}, found["claims"]


def strip_items(result: dict) -> dict:
    """A model's result without its per-item scores (eval/items.jsonl and generations.jsonl hold those)."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "items"} if isinstance(v, dict) else v)
            for k, v in result.items()}


def grounding_rates(items: dict) -> dict:
    """The tuned answers' grounding rates over the generations (the per-item values are in `items`)."""
    out = {}
    for measure in ev_.GROUNDING:
        values = [v for v in items.get(measure, {}).values() if v is not None]
        if values:
            out[measure] = {"rate": round(sum(values) / len(values), 4), "n": len(values)}
    return out


def grounding_checker(run_dir: Path):
    """(answer, messages) -> the detector's Finding against what the prompt shows (and, for a closed-book
    docs question, the page section its reference is: `eval_source`); None without the grounding package.
    The field vocabularies are the ones prepare learnt (data/grounding_vocab.json); coverage is of the
    fields the example's task declared (`grounding_fields`, carried in data/examples.jsonl)."""
    try:
        from ..grounding import Vocabulary, check
        from ..grounding.targets import eval_source
    except ImportError:
        return None
    path = run_dir / "data/grounding_vocab.json"
    vocab = Vocabulary.load(path) if path.exists() else None
    declared = declared_fields(run_dir)
    return lambda text, messages: check(text, eval_source(messages), vocab=vocab,
                                        fields=declared.get(orjson.dumps(messages[:-1])),
                                        reference=messages[-1]["content"])


def declared_fields(run_dir: Path) -> dict:
    """{prompt (JSON bytes): its task's grounding fields and their values} from data/examples.jsonl."""
    path = run_dir / "data/examples.jsonl"
    if not path.exists():
        return {}
    return {orjson.dumps(ex["messages"][:-1]): ex["grounding_fields"]
            for ex in read_jsonl(path) if ex.get("grounding_fields")}


def settings(e) -> dict:
    """The eval settings this evaluation ran with (`webtune eval RUN k=v` may differ from config.yaml)."""
    from omegaconf import OmegaConf
    out = OmegaConf.to_container(e, resolve=True) if OmegaConf.is_config(e) else dict(e)
    if not out.get("judge", {}).get("enabled"):
        out["judge"] = {"enabled": False}
    return out


def read_test(path: Path, required: bool = True) -> list[list[dict]]:
    if not path.exists():
        if required:
            raise WebtuneError(f"{path} not found: run the mix stage first (webtune resume RUN)")
        return []
    convs = []
    for n, row in enumerate(read_jsonl(path), 1):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages or messages[-1].get("role") != "assistant":
            raise WebtuneError(f"{path} line {n}: field messages must be a list ending with an assistant turn")
        convs.append(messages)
    return convs


def task_checks(cfg, run_dir: Path):
    """A function: test conversation -> the checks its task declared. Examples carry their task in
    data/examples.jsonl (id `<record id>/<task>`), so a JSON check only runs on the JSON task."""
    by_task = {t.name: list(t.checks) for t in cfg.template.tasks}
    for name, checks in by_task.items():
        for c in checks:
            validate_check(c, where=f"template {cfg.template.name}, task {name}, checks")
    every = sorted({c for cs in by_task.values() for c in cs})
    if len(by_task) <= 1 or not (run_dir / "data/examples.jsonl").exists():
        return lambda messages: every
    task_of = {}
    for ex in read_jsonl(run_dir / "data/examples.jsonl"):
        if ex.get("side", "domain") == "domain":
            task = ex.get("task") or str(ex.get("id", "")).rsplit("/", 1)[-1]
            task_of[orjson.dumps(ex["messages"])] = task
    return lambda messages: by_task.get(task_of.get(orjson.dumps(messages)), every)


# ---------------------------------------------------------------- local models
def run_local(cfg, run_dir: Path, models: dict, sets: dict, prompts, console=None):
    """Scores and generations of each model ({label: folder}; None: the config's base), all with the
    tokenizer, chat template and end-of-turn token the tuned model was trained with. Each model's are
    cached by what they depend on, so a second run of the default, or a sweep, scores its base once and
    `webtune eval RUN eval.judge.enabled=true` only calls the judge."""
    import torch
    from ..base_model import source_of
    from ..chat.tokenize import ChatTokenizer
    torch.manual_seed(0)
    chat = ChatTokenizer.for_model(cfg.model)
    check_saved_tokenizer(chat, run_dir / "model")
    results, outputs = {}, {}
    models = {label: path or source_of(cfg.model) for label, path in models.items()}
    caches = {label: scores_cache_path(cfg, path, sets, prompts, chat) for label, path in models.items()}
    todo = [path for label, path in models.items() if not (caches[label] and caches[label].exists())]
    vllm = vllm_generator(cfg, chat, todo, prompts)
    try:
        for label, path in models.items():
            cache = caches[label]
            if cache and cache.exists():
                cached = orjson.loads(cache.read_bytes())
                results[label], outputs[label] = cached["result"], cached["outputs"]
                log(f"  {label} scores reused from {cache}")
                continue
            results[label], outputs[label] = score_model(cfg, label, path, chat, sets, prompts, console, vllm)
            if cache:
                atomic_write_bytes(cache, orjson.dumps({"result": results[label], "outputs": outputs[label]}))
    finally:
        if vllm:
            vllm.close()
    check_same_format(results)
    return results, outputs


def on_vllm(e) -> bool:
    """eval.engine=vllm: held-out generations decoded by vLLM (older run configs have no engine key)."""
    return e.get("engine", "transformers") == "vllm"


def vllm_generator(cfg, chat, models: list[str], prompts):
    """eval.engine=vllm: the vLLM side of this evaluation (None: generate on transformers)."""
    if not on_vllm(cfg.eval) or not models:
        return None
    from ..base_model import source_of
    from .vllm_generate import VllmGenerator
    longest = max((len(chat.prompt_ids(p[:-1])) for p in prompts), default=0)
    log("  generating on vLLM (eval.engine=vllm); the losses on transformers")
    return VllmGenerator(cfg.eval, str(source_of(cfg.model)), models, longest + cfg.eval.max_new_tokens)


def score_model(cfg, label: str, path: str, chat, sets: dict, prompts, console=None,
                vllm=None) -> tuple[dict, list[str]]:
    """One model's held-out losses on each set ({name: conversations}), per item too, its greedy
    answers to the prompts (on vLLM when `vllm` is given), and how many of them ended with the
    end-of-turn token."""
    e = cfg.eval
    if vllm:
        vllm.launch(path)   # vLLM loads while the losses are computed
    model = load_for_eval(path, cfg.model)
    limit = context_limit(model, cfg)
    log(f"  scoring {label} ({path}) on " + " + ".join(f"{len(v)} {k}" for k, v in sets.items())
        + f" test examples (<= {limit} tokens, as in training), generating {len(prompts)}")
    result = {"format": chat_format(chat)}
    with progress(console=console, transient=True) as bar:
        for name, conversations in sets.items():
            if conversations:
                result[name] = heldout_loss(model, chat, conversations, e.batch_size, bar, f"{label} {name} loss",
                                            limit, per_item=True)
        fitting = fitting_prompts(chat, prompts, model_context(model) - e.max_new_tokens)
        if vllm:
            eos = eos_ids(model, chat)
            answers = [answer(chat, new, eos) for new in vllm.generate(
                path, [chat.prompt_ids(p) for p in fitting], e.max_new_tokens, eos, bar, f"{label} generate (vLLM)")]
            texts, ended = [text for text, _ in answers], [end for _, end in answers]
        else:
            texts, ended = generate(model, chat, fitting, e.max_new_tokens, e.batch_size, bar, f"{label} generate")
    result["end_of_turn"] = {"ended": sum(ended), "n": len(ended),
                             "share": round(sum(ended) / len(ended), 4) if ended else None}
    return result, texts


def chat_format(chat) -> dict:
    """What makes two models' losses comparable: vocabulary, chat template, end-of-turn token."""
    from ..fileio import sha256_text
    return {"chat_template_sha256": sha256_text(chat.tok.chat_template or ""), "end_of_turn": chat.tok.eos_token,
            "vocab_size": len(chat.tok)}


def check_same_format(results: dict) -> None:
    formats = {label: r.get("format") for label, r in results.items() if "domain" in r}
    if len({orjson.dumps(f, option=orjson.OPT_SORT_KEYS) for f in formats.values()}) > 1:
        raise WebtuneError(f"evaluate: base and tuned were scored with different tokenizers or chat templates "
                           f"({formats}); their losses are not comparable: rerun `webtune eval RUN`")


def check_saved_tokenizer(chat, model_dir: Path) -> None:
    """The tuned model's saved tokenizer must be the one the config gives (the one it was trained with)."""
    from transformers import AutoTokenizer
    from ..chat.tokenize import ChatTokenizer
    if not (model_dir / "tokenizer_config.json").exists():
        return
    saved = ChatTokenizer(AutoTokenizer.from_pretrained(model_dir), str(model_dir))
    if chat_format(saved) != chat_format(chat):
        raise WebtuneError(f"evaluate: {model_dir} was trained with another chat template or end-of-turn token "
                           f"({saved.tok.eos_token!r}) than the model config gives ({chat.template}, "
                           f"{chat.tok.eos_token!r}); evaluate with the config it was trained with")


def model_context(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)


def context_limit(model, cfg) -> int:
    """The longest example scored: the model's context and mix.max_seq_len, as in training."""
    return min(model_context(model), cfg.mix.max_seq_len)


def fitting_prompts(chat, prompts, room: int) -> list:
    """The generation prompts whose prompt leaves room for max_new_tokens in the context, in order
    (the first one that does not fit ends the list, so outputs stay aligned with prompts)."""
    out = []
    for p in prompts:
        if len(chat.prompt_ids(p[:-1])) > room:
            break
        out.append(p[:-1])
    return out


def scores_cache_path(cfg, model_path: str, sets: dict, prompts, chat) -> Path | None:
    """Where a model's scores are kept, keyed by everything they depend on: the model's and its base's
    files, the scored items, the chat format, the decoding and length settings, the device, the libraries
    and this code. A model from the per-user model cache (the default's converted SmolLM2, named by its
    sha256) is kept in the per-user cache, $WEBTUNE_CACHE/eval-scores/, so every run on the machine (any
    folder, any clone) scores that base once; any other model in runs/.cache/evaluate-scores/.
    WEBTUNE_NO_CACHE=1 leaves the per-user one alone."""
    import importlib.metadata
    import torch
    from ..base_model import source_of
    from ..fileio import hash_path, sha256_text
    base, model = Path(source_of(cfg.model)), Path(model_path)
    if not model.is_dir() or not base.is_dir():
        return None   # a hub id: its files are not ours to fingerprint
    e = cfg.eval
    items = {name: [ev_.prompt_id(c) for c in convs] for name, convs in sets.items()}
    key = {"model": model_identity(model), "base": model_identity(base), "format": chat_format(chat),
           "tokenizer": cfg.model.tokenizer, "dtype": cfg.model.dtype, "device": "cuda" if torch.cuda.is_available() else "cpu",
           "items": sha256_text(orjson.dumps(items).decode()), "prompts": [ev_.prompt_id(p) for p in prompts],
           "max_new_tokens": e.max_new_tokens, "batch_size": e.batch_size,
           "max_seq_len": cfg.mix.max_seq_len, "overflow": cfg.mix.packing.overflow,
           **({"engine": "vllm"} if on_vllm(e) else {}),
           "libraries": [importlib.metadata.version(n) for n in ("torch", "transformers", "peft")],
           "code": [hash_path(Path(__file__).with_name(n)) for n in ("stage.py", "metrics.py", "vllm_generate.py")]}
    digest = sha256_text(orjson.dumps(key, option=orjson.OPT_SORT_KEYS).decode())[:32]
    shared = in_model_cache(model) and use_cache()
    return (user_scores_dir() if shared else Path(cfg.runs_dir) / ".cache" / "evaluate-scores") / f"{digest}.json"


def user_scores_dir() -> Path:
    from ..base_model import cache_dir
    return cache_dir().parent / "eval-scores"


def in_model_cache(folder: Path) -> bool:
    from ..base_model import cache_dir
    return folder.resolve().parent == cache_dir().resolve()


def model_identity(folder: Path):
    """A folder of the model cache is named by its GGUF's sha256; any other folder by its files' names,
    sizes and times (hashing 16 GB of weights per eval is too slow)."""
    if in_model_cache(folder):
        return folder.name
    return [(str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
            for f in sorted(folder.rglob("*")) if f.is_file()]


def load_for_eval(path: str, model_cfg):
    """A model: a full model directory, a LoRA adapter directory (merged into its base), or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM
    from .. import base_model
    from ..models import model_source, resolve_dtype
    dtype = resolve_dtype(model_cfg.dtype)
    try:
        if Path(path, "adapter_config.json").exists() and not Path(path, "config.json").exists():
            from peft import PeftModel
            base = AutoModelForCausalLM.from_pretrained(model_source(base_model.source_of(model_cfg)), dtype=dtype)
            model = PeftModel.from_pretrained(base, path).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(model_source(path), dtype=dtype)
    except OSError as exc:
        raise WebtuneError(f"evaluate: cannot load model {path!r}: {str(exc).splitlines()[0]}") from exc
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    return model


def batches(items: list, batch_size: int):
    """Indices in batches of similar length (less padding), so callers can restore the order."""
    order, size = sorted(range(len(items)), key=lambda i: len(items[i])), max(1, batch_size)
    for i in range(0, len(order), size):
        yield order[i:i + size]


def heldout_loss(model, chat, conversations: list[list[dict]], batch_size: int, bar=None, what="loss",
                 limit: int | None = None, per_item: bool = False) -> dict:
    """Mean cross-entropy (nats/token) over assistant tokens, and its perplexity. Examples longer than
    `limit` are left out and counted, as the default over-length policy leaves them out of training.
    With `per_item`, also "items": {prompt id: [summed nats, assistant tokens]} for each example scored."""
    import torch
    from ..chat.tokenize import IGNORE
    encoded = [chat.encode(c) for c in conversations]
    kept = [i for i, x in enumerate(encoded) if limit is None or len(x[0]) <= limit]
    scored_examples = [encoded[i] for i in kept]
    task = bar.add_task(what, total=len(scored_examples)) if bar else None
    total, count, pad = 0.0, 0, chat.tok.pad_token_id
    items = {}
    for idx in batches([ids for ids, _ in scored_examples], batch_size):
        batch = [scored_examples[i] for i in idx]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch], device=model.device)
        labels = torch.tensor([y + [IGNORE] * (width - len(y)) for _, y in batch], device=model.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch], device=model.device)
        target = labels[:, 1:]
        scored = target != IGNORE
        start = int(scored.any(0).nonzero()[0]) if scored.any() else 0   # no logits over the prompts before it
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=width - start).logits
        target, scored = target[:, start:], scored[:, start:]
        # float32 only where it counts: a 256k vocabulary makes full logits large
        nats = torch.nn.functional.cross_entropy(logits[:, :-1][scored].float(), target[scored], reduction="none")
        per_row = torch.zeros(len(batch), dtype=nats.dtype, device=nats.device).index_add_(
            0, scored.nonzero()[:, 0], nats)
        for i, row_nats, row_scored in zip(idx, per_row.tolist(), scored.sum(1).tolist()):
            items[ev_.prompt_id(conversations[kept[i]])] = [round(row_nats, 5), int(row_scored)]
        total += float(nats.sum())
        count += int(scored.sum())
        if bar:
            bar.advance(task, len(batch))
    loss = total / max(1, count)
    return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 3), "tokens": count,
            "examples": len(scored_examples), "over_length": len(encoded) - len(scored_examples),
            **({"items": items} if per_item else {})}


def generate(model, chat, prompts: list[list[dict]], max_new_tokens: int, batch_size: int, bar=None,
             what="generate") -> tuple[list[str], list[bool]]:
    """Batched greedy decoding, left-padded, stopping at the end-of-turn token; outputs in prompt order,
    and whether each one ended with the end-of-turn token (rather than running out of tokens)."""
    import torch
    tok, outs, ended = chat.tok, [""] * len(prompts), [False] * len(prompts)
    encoded = [chat.prompt_ids(p) for p in prompts]
    task = bar.add_task(what, total=len(prompts)) if bar else None
    eos = eos_ids(model, chat)
    for idx in batches(encoded, batch_size):
        batch = [encoded[i] for i in idx]
        width = max(map(len, batch))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=model.device)
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=eos or None, pad_token_id=tok.pad_token_id)
        for i, g in zip(idx, gen):
            outs[i], ended[i] = answer(chat, g[width:].tolist(), eos)
        if bar:
            bar.advance(task, len(batch))
    return outs, ended


def eos_ids(model, chat) -> list[int]:
    """The tokens a generation stops at: the model's end-of-sequence ids and the chat's end of turn."""
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
    return sorted(set(eos + ([chat.eot_id] if chat.eot_id is not None else [])))


def answer(chat, new: list[int], eos: list[int]) -> tuple[str, bool]:
    """A generation's text (whichever engine decoded it) and whether it ended with the turn's own end
    (Gemma: <end_of_turn>, not the document's <eos>), where the chat has one."""
    ended = chat.eot_id in new if chat.eot_id is not None else any(t in eos for t in new)
    return chat.tok.decode(new, skip_special_tokens=True).strip(), ended


# ---------------------------------------------------------------- scores, outputs
prompt_text = ev_.prompt_text


def score_generations(result: dict, prompts, outputs: list[str], checks_of) -> None:
    refs = [p[-1]["content"] for p in prompts]
    result["generation"] = corpus_scores(outputs, refs)
    checks = sorted({c for p in prompts for c in checks_of(p)})
    result["checks"] = {}
    for check in checks:
        applies = [i for i, p in enumerate(prompts) if check in checks_of(p)]
        result["checks"].update(check_rates([check], [prompt_text(prompts[i]) for i in applies],
                                            [outputs[i] for i in applies]))


def generation_rows(prompts, outputs: dict, checks_of, items: dict, claims: dict | None = None) -> list[dict]:
    """One row per generated prompt: its prompt id, prompt, reference, and each model's answer with its
    per-item scores (chrF, ROUGE-L, checks, grounding rates and spans, the judge's claims)."""
    rows = []
    for i, p in enumerate(prompts):
        pid = ev_.prompt_id(p)
        row = {"id": pid, "prompt": p[:-1], "reference": p[-1]["content"]}
        for label, outs in outputs.items():
            scores = items[label]
            row[label] = outs[i]
            row[f"{label}_chrF"] = scores["chrF"][pid]
            row[f"{label}_rougeL"] = round(scores["rougeL"][pid], 1)
            row[f"{label}_checks"] = {c[6:]: bool(v[pid]) for c, v in scores.items() if c.startswith("check:") and pid in v}
            if "spans" in scores:
                row[f"{label}_grounding"] = {m: scores[m].get(pid) for m in (*ev_.GROUNDING, "spans") if m in scores}
            if pid in (claims or {}).get(label, {}):
                row[f"{label}_claims"] = claims[label][pid]
        rows.append(row)
    return rows


def loss_rows(sets: dict, items: dict) -> list[dict]:
    """eval/items.jsonl: every scored held-out example's per-token loss under each model."""
    rows = []
    for name, conversations in sets.items():
        for c in conversations:
            pid = ev_.prompt_id(c)
            row = {"id": pid, "set": name, "prompt": c[-2]["content"][:200] if len(c) > 1 else ""}
            for label, scores in items.items():
                nats, tokens = scores.get(f"{name}_loss", {}).get(pid), scores.get(f"{name}_loss_tokens", {}).get(pid)
                if nats is not None:
                    row[f"{label}_loss"], row["tokens"] = round(nats / max(1, tokens), 4), tokens
            rows.append(row)
    return rows


def write_outputs(run_dir: Path, out: dict, rows: list[dict], samples: int, items: list[dict]) -> None:
    write_json(run_dir / "eval/metrics.json", out)
    (run_dir / "eval/samples.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows[:max(0, samples)]))
    (run_dir / "eval/generations.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    (run_dir / "eval/items.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in items))


def say_summary(out: dict) -> None:
    from .paired import describe
    b, t = out["base"], out["tuned"]
    if out["domain_gain"] is not None:
        ci = out.get("domain_gain_ci")
        log(f"  domain loss {b['domain']['loss']:.3f} -> {t['domain']['loss']:.3f} (gain {out['domain_gain']:.3f}"
            + (f", 95% CI {ci[0]:.3f} to {ci[1]:.3f}" if ci else "") + f", n={t['domain']['examples']})")
    if out["general_change"] is not None:
        ci = out.get("general_change_ci")
        log(f"  general loss {b['general']['loss']:.3f} -> {t['general']['loss']:.3f} ({out['general_change']:+.3f}"
            + (f", 95% CI {ci[0]:+.3f} to {ci[1]:+.3f}" if ci else "") + f", n={t['general']['examples']})")
    g = t.get("generation", {})
    if g:
        log(f"  tuned generations: ROUGE-L {g['rougeL']}, chrF {g['chrF']}, BLEU {g['BLEU']} "
            f"(base {b['generation']['rougeL']}, {b['generation']['chrF']}, {b['generation']['BLEU']}; "
            f"n={out['n_generated']})")
    for label, comparison in out.get("evidence", {}).items():
        for measure, c in comparison.items():
            if c["n"] and (measure not in ev_.LOSSES or label != "tuned_vs_base"):
                log(f"  {describe(c)}")
    if t.get("end_of_turn"):
        log(f"  ended with the end-of-turn token: base {b['end_of_turn']['ended']}/{b['end_of_turn']['n']}, "
            f"tuned {t['end_of_turn']['ended']}/{t['end_of_turn']['n']}")
    if out["status"] == "unverified":
        log("  [bold yellow]unverified[/]: no held-out loss and no judge verdict (enable eval.judge); "
            "the promote gate refuses it without --force")
    for line in out.get("undecided", []):
        log(f"  [bold yellow]inconclusive[/]: {line}; score more items (eval.max_examples, mix.test_fraction)")
    if "judge" in out:
        j = out["judge"]
        log(f"  judge: tuned preferred in {100 * j['win_rate']:.0f}% of {j['pairs']} pairs "
            f"(95% CI {100 * j['ci_low']:.0f}-{100 * j['ci_high']:.0f}%)")
    for flag in out["flags"]:
        log(f"  [bold red]flag[/]: {flag}")
