"""The judge's claim-check mode (`eval.judge.mode: claims`): each answer's claims, each marked supported
or not by what its prompt shows.

The detector (grounding/) catches values and attribute values it can name; a judge reads the rest ("made
from the finest wool" where no record holds wool). One call per answer: the judge lists the answer's
factual claims and marks each against the source (the prompt, and for a closed-book docs question the
page section its reference is). A reply that does not parse is asked once more; then the answer is
unscored, counted, and left out of the rate, never failing the run. Per answer the score is whether it
makes at least one unsupported claim, so base, tuned and promoted get paired comparisons (McNemar) like
the detector's rates.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

from ..console import log, progress
from .judge import ask, estimate, make_client, option

SYSTEM = ("You check an answer against its source. List each factual claim the answer makes (what a product "
          "is, is made of, does, includes, costs; what a command or option does; any number) and mark it "
          "supported only if the source states it. Opinions and sales language (\"a great choice\") are not "
          "claims. Reply with JSON only: "
          '{"claims": [{"claim": "<a short quote or paraphrase>", "supported": true | false}]}')
USER = "<source>\n{source}\n</source>\n\n<answer>\n{answer}\n</answer>"
TRIES = 2   # a reply that does not parse is asked once more


def claim_messages(source: str, answer: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER.format(source=source, answer=answer or "(empty)")}]


def parse_claims(text: str) -> list[dict] | None:
    """[{claim, supported}] from the judge's reply; None when it is not that JSON."""
    found = re.search(r"\{.*\}", text or "", re.S)
    if not found:
        return None
    try:
        claims = json.loads(found.group(0)).get("claims")
    except (ValueError, AttributeError):
        return None
    if not isinstance(claims, list) or not all(isinstance(c, dict) and isinstance(c.get("supported"), bool)
                                               for c in claims):
        return None
    return [{"claim": str(c.get("claim", ""))[:300], "supported": c["supported"]} for c in claims]


def check_claims(judge_cfg, sources: list[str], outputs: dict[str, list[str]], ids: list[str],
                 client=None, console=None) -> dict:
    """{"items": {label: {prompt id: 0|1}} (1: at least one unsupported claim), "claims": {label: {id: [...]}},
    "summary": counts, tokens and cost}. At most eval.judge.max_pairs prompts, each model's answer checked."""
    n = min(len(ids), int(judge_cfg.max_pairs))
    jobs = [{"label": label, "id": ids[i], "pair": i, "order": "claims",
             "messages": claim_messages(sources[i], texts[i])} for label, texts in outputs.items() for i in range(n)]
    est = estimate(judge_cfg, jobs)
    log(f"  judge (claims): {n} prompts x {len(outputs)} models = {est['calls']} calls to {judge_cfg.model}, "
        f"about {est['tokens']:,} tokens, estimated ${est['cost_usd']:.4f} (an unreadable reply is asked once more)")
    client = client or make_client(judge_cfg)

    def one(job: dict) -> dict:
        used = 0
        for attempt in range(1, TRIES + 1):
            answer = ask(client, judge_cfg, job)
            used += answer["prompt_tokens"] + answer["completion_tokens"]
            claims = parse_claims(answer["reply"])
            if claims is not None:
                break
        return {**answer, "claims": claims, "tries": attempt, "tokens": used}

    done = []
    with progress(console=console, transient=True) as bar:
        task = bar.add_task("judge claims", total=len(jobs))
        with ThreadPoolExecutor(max_workers=max(1, int(option(judge_cfg, "concurrency", 4)))) as pool:
            for answer in pool.map(one, jobs):
                done.append(answer)
                bar.advance(task)
    items: dict = {label: {} for label in outputs}
    listed: dict = {label: {} for label in outputs}
    for a in done:
        if a["claims"] is not None:
            items[a["label"]][a["id"]] = int(any(not c["supported"] for c in a["claims"]))
            listed[a["label"]][a["id"]] = a["claims"]
    used = sum(a["tokens"] for a in done)
    summary = {"model": judge_cfg.model, "prompts": n, "calls": sum(a["tries"] for a in done),
               "unscored": {label: n - len(items[label]) for label in outputs},
               "estimated_cost_usd": est["cost_usd"], "cost_usd": round(used / 1000 * judge_cfg.price_per_1k_tokens, 4)}
    return {"items": items, "claims": listed, "summary": summary}
