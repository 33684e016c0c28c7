"""Evaluate a model tuned through the OpenAI API (`model.kind: openai`).

The base (`model.name_or_path`) and the tuned model (`RUN/model/openai_model.json`,
`fine_tuned_model`) answer the test prompts through the chat endpoint, greedily (temperature 0,
a fixed seed). The API exposes no token log-probabilities of a given answer, so held-out loss is
not available: the report says so and the generation metrics and the judge carry the comparison.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..console import log, progress
from ..errors import WebtuneError

CONCURRENCY = 4


def run_api(cfg, run_dir: Path, prompts: list[list[dict]], console=None) -> tuple[dict, dict]:
    """({"base": {}, "tuned": {}}, {"base": [answers], "tuned": [answers]}) for the prompts."""
    from ..openai_client import load_model_record, make_client
    m = cfg.model
    record = load_model_record(run_dir / "model")
    models = {"base": record.get("base_model") or m.name_or_path, "tuned": record["fine_tuned_model"]}
    client = make_client(m.api_key_env, m.base_url)
    log(f"  scoring base {models['base']} and tuned {models['tuned']} through the chat API on "
        f"{len(prompts)} prompts ({2 * len(prompts)} calls); held-out loss is not available for API models")
    outputs = {}
    with progress(console=console, transient=True) as bar:
        for label, model in models.items():
            task = bar.add_task(f"{label} generate", total=len(prompts))

            def answer(conv, model=model, task=task):
                text = complete(client, model, conv[:-1], cfg.eval.max_new_tokens, m.api_key_env)
                bar.advance(task)
                return text

            with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                outputs[label] = list(pool.map(answer, prompts))
    return {label: {"model": model} for label, model in models.items()}, outputs


def complete(client, model: str, messages: list[dict], max_tokens: int, api_key_env: str) -> str:
    import openai
    from ..openai_client import api_error
    try:
        resp = client.chat.completions.create(model=model, messages=messages, temperature=0, seed=0,
                                              max_tokens=max_tokens)
    except openai.OpenAIError as exc:
        raise api_error(exc, f"generating with {model} for evaluation", api_key_env) from None
    if not resp.choices:
        raise WebtuneError(f"the chat API returned no choices for {model}; check model.base_url")
    return (resp.choices[0].message.content or "").strip()
