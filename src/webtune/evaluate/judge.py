"""An LLM judge: pairwise base vs tuned on any OpenAI-compatible chat endpoint.

Each pair is asked twice, once with the tuned answer as A and once as B, so a judge that prefers a
position cancels out. A pair scores 1 when the tuned answer wins both orders, 0 when it loses both,
and 0.5 otherwise (a tie, a split decision, or a reply we could not read). The win rate is the mean
score, with a Wilson 95% interval over pairs. The number of calls and an estimate of their cost are
printed before the first call. The key comes from the env var named in `eval.judge.api_key_env`.
"""
from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor

from ..console import log, progress
from .. import openai_client
from ..errors import WebtuneError
from ..redaction import redact

SYSTEM = ("You are an impartial judge comparing two answers, A and B, to the same conversation. {rubric} "
          "Do not let the order of the answers or their length alone decide. Reply with JSON only: "
          '{{"winner": "A" | "B" | "tie", "reason": "<one sentence>"}}')
USER = ("<conversation>\n{conversation}\n</conversation>\n\n"
        "<reference>\n{reference}\n</reference>\n(The reference is one good answer, for guidance; it need not be the only one.)\n\n"
        "<answer_a>\n{a}\n</answer_a>\n\n<answer_b>\n{b}\n</answer_b>")
ORDERS = ("tuned_first", "base_first")   # tuned is answer A / answer B
CHARS_PER_TOKEN = 4                      # for the estimate printed before the calls


def option(cfg, key: str, default):
    """A judge setting that older configs may not have."""
    try:
        value = cfg.get(key, default)
    except AttributeError:
        value = getattr(cfg, key, default)
    return default if value is None else value


def render_conversation(messages: list[dict]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def judge_messages(rubric: str, prompt: list[dict], reference: str, a: str, b: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM.format(rubric=rubric.strip())},
            {"role": "user", "content": USER.format(conversation=render_conversation(prompt), reference=reference,
                                                    a=a or "(empty)", b=b or "(empty)")}]


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from the judge's reply (JSON, or a bare letter); None when unreadable."""
    text = (text or "").strip()
    found = re.search(r"\{.*\}", text, re.S)
    if found:
        try:
            winner = str(json.loads(found.group(0)).get("winner", "")).strip()
        except (ValueError, AttributeError):
            winner = ""
        if winner.upper() in ("A", "B"):
            return winner.upper()
        if winner.lower() in ("tie", "draw", "equal"):
            return "tie"
    bare = re.fullmatch(r"(?:answer\s*)?\(?([AB])\)?\.?", text, re.I)
    if bare:
        return bare.group(1).upper()
    if text.lower() in ("tie", "draw"):
        return "tie"
    return None


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (successes may be fractional: ties count half)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def winner_of(verdict: str | None, order: str) -> str:
    """The judge's letter, mapped back to 'tuned', 'base' or 'tie'."""
    if verdict not in ("A", "B"):
        return "tie"
    tuned_letter = "A" if order == "tuned_first" else "B"
    return "tuned" if verdict == tuned_letter else "base"


def make_client(judge_cfg):
    return openai_client.make_client(
        judge_cfg.api_key_env, option(judge_cfg, "base_url", None), setting="eval.judge.api_key_env",
        max_retries=int(option(judge_cfg, "max_retries", 2)), timeout=float(option(judge_cfg, "timeout", 60.0)),
        keyless_loopback=True, hint=", or switch the judge off with eval.judge.enabled=false")


def plan(judge_cfg, prompts: list[list[dict]], references: list[str], base: list[str], tuned: list[str]) -> list[dict]:
    """Every call to make: each pair in both orders."""
    jobs = []
    for i, (p, ref, b, t) in enumerate(zip(prompts, references, base, tuned)):
        for order in ORDERS:
            a_text, b_text = (t, b) if order == "tuned_first" else (b, t)
            jobs.append({"pair": i, "order": order, "messages": judge_messages(judge_cfg.rubric, p, ref, a_text, b_text)})
    return jobs


def estimate(judge_cfg, jobs: list[dict]) -> dict:
    prompt_tokens = sum(len(m["content"]) for j in jobs for m in j["messages"]) // CHARS_PER_TOKEN + 8 * len(jobs)
    completion_tokens = int(option(judge_cfg, "max_tokens", 200)) * len(jobs)
    tokens = prompt_tokens + completion_tokens
    return {"calls": len(jobs), "tokens": tokens, "cost_usd": round(tokens / 1000 * judge_cfg.price_per_1k_tokens, 4)}


def ask(client, judge_cfg, job: dict) -> dict:
    import openai
    try:
        resp = client.chat.completions.create(model=judge_cfg.model, messages=job["messages"], temperature=0,
                                              max_tokens=int(option(judge_cfg, "max_tokens", 200)))
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        hint = f"; check the key in {judge_cfg.api_key_env}" if exc.status_code == 401 else ""
        raise WebtuneError(redact(f"judge {judge_cfg.model} answered {exc.status_code} on pair {job['pair']} "
                                  f"({job['order']}): {body.get('message') or exc.message}{hint}")) from None
    except openai.APIConnectionError as exc:
        raise WebtuneError(redact(f"judge: cannot reach {client.base_url} ({exc}); check eval.judge.base_url")) from None
    text = resp.choices[0].message.content if resp.choices else ""
    usage = resp.usage
    return {**job, "reply": text or "", "verdict": parse_verdict(text or ""),
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0}


def judge_pairs(judge_cfg, prompts: list[list[dict]], references: list[str], base: list[str], tuned: list[str],
                client=None, console=None) -> dict:
    """Judge base vs tuned on each prompt in both orders; the win rate of tuned with a 95% CI."""
    n = min(len(prompts), len(references), len(base), len(tuned), int(judge_cfg.max_pairs))
    jobs = plan(judge_cfg, prompts[:n], references[:n], base[:n], tuned[:n])
    if not jobs:
        raise WebtuneError("judge: no generated answers to compare; set eval.generation_examples above 0")
    est = estimate(judge_cfg, jobs)
    where = option(judge_cfg, "base_url", None) or "api.openai.com"
    log(f"  judge: {n} pairs x 2 orders = {est['calls']} calls to {judge_cfg.model} at {where}, "
        f"about {est['tokens']:,} tokens, estimated ${est['cost_usd']:.4f} "
        f"(at ${judge_cfg.price_per_1k_tokens}/1k tokens)")
    client = client or make_client(judge_cfg)
    answers = []
    with progress(console=console, transient=True) as bar:
        task = bar.add_task("judge", total=len(jobs))
        with ThreadPoolExecutor(max_workers=max(1, int(option(judge_cfg, "concurrency", 4)))) as pool:
            for answer in pool.map(lambda j: ask(client, judge_cfg, j), jobs):
                answers.append(answer)
                bar.advance(task)
    return summarise(judge_cfg, n, answers, est)


def summarise(judge_cfg, n: int, answers: list[dict], est: dict) -> dict:
    by_pair: dict[int, dict] = {}
    for a in answers:
        by_pair.setdefault(a["pair"], {})[a["order"]] = a
    verdicts, scores = [], []
    for i in range(n):
        orders = by_pair[i]
        winners = {o: winner_of(orders[o]["verdict"], o) for o in ORDERS}
        score = sum({"tuned": 1.0, "tie": 0.5, "base": 0.0}[w] for w in winners.values()) / 2
        scores.append(score)
        verdicts.append({"pair": i, **winners, "score": score,
                         "reasons": {o: orders[o]["reply"][:300] for o in ORDERS}})
    wins = sum(s == 1.0 for s in scores)
    losses = sum(s == 0.0 for s in scores)
    low, high = wilson(sum(scores), n)
    decisive = [a for a in answers if a["verdict"] in ("A", "B")]
    prompt_tokens = sum(a["prompt_tokens"] for a in answers)
    completion_tokens = sum(a["completion_tokens"] for a in answers)
    return {"model": judge_cfg.model, "base_url": option(judge_cfg, "base_url", None), "rubric": judge_cfg.rubric,
            "pairs": n, "calls": len(answers), "wins": wins, "losses": losses, "ties": n - wins - losses,
            "win_rate": round(sum(scores) / n, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
            "ci_method": "Wilson 95%, over pairs; ties and split orders count half",
            # how often the judge named the same model in both orders, and how often it picked answer A
            "order_agreement": round(sum(v["tuned_first"] == v["base_first"] for v in verdicts) / n, 4),
            "first_position_rate": round(sum(a["verdict"] == "A" for a in decisive) / len(decisive), 4) if decisive else None,
            "unparsed": sum(a["verdict"] is None for a in answers),
            "tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
            "estimated_cost_usd": est["cost_usd"],
            "cost_usd": round((prompt_tokens + completion_tokens) / 1000 * judge_cfg.price_per_1k_tokens, 4),
            "verdicts": verdicts}
