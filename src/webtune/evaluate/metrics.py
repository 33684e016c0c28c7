"""Generation metrics: ROUGE-L (LCS F1 over words), chrF and BLEU (sacrebleu), length stats, task checks.

ROUGE-L is the LCS F-measure over words tokenized as rouge-score tokenizes without stemming
(`rouge_score.tokenize`: lower-case, every run of characters other than a-z and 0-9 is a separator);
it is a few lines, so we avoid a dependency that pulls nltk and absl. chrF and BLEU come from
sacrebleu, never `evaluate.load` (it fetches from the hub).
"""
from __future__ import annotations

import json
import re
import statistics

from ..errors import WebtuneError
from ..grounding.parent import lcs_length

CHECK_KINDS = ("json", "mentions:<regex with one group, searched in the prompt>")


NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer: lower-case, non-alphanumerics are separators ("Hi, there!" -> hi there)."""
    return NON_ALNUM.sub(" ", text.lower()).split()


def rouge_l(hyp: str, ref: str) -> float:
    """LCS-based F1 between the rouge-score tokens of two strings, in [0, 1]."""
    a, b = rouge_tokens(hyp), rouge_tokens(ref)
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def length_stats(hyps: list[str], refs: list[str]) -> dict:
    """Words per output, and how long outputs are next to their references."""
    words = [len(h.split()) for h in hyps]
    ref_words = [len(r.split()) for r in refs]
    if not words:
        return {}
    ordered = sorted(words)
    return {"mean_words": round(statistics.fmean(words), 1),
            "median_words": statistics.median(words),
            "p90_words": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "max_words": ordered[-1],
            "ref_mean_words": round(statistics.fmean(ref_words), 1) if ref_words else None,
            "length_ratio": round(sum(words) / max(1, sum(ref_words)), 3),
            "empty": sum(1 for h in hyps if not h.strip())}


def corpus_scores(hyps: list[str], refs: list[str]) -> dict:
    """ROUGE-L, chrF and BLEU (0-100) plus length stats for outputs against their references."""
    import sacrebleu
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} outputs for {len(refs)} references")
    if not hyps:
        return {}
    return {"rougeL": round(100 * sum(map(rouge_l, hyps, refs)) / len(hyps), 2),
            "chrF": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
            "BLEU": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
            **length_stats(hyps, refs)}


def validate_check(check: str, where: str = "template.tasks[].checks") -> None:
    """Fail early, naming the check, when a template declares one we cannot run."""
    if check == "json":
        return
    if check.startswith("mentions:"):
        pattern = check.split(":", 1)[1]
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise WebtuneError(f"{where}: check {check!r}: bad regex ({exc})") from None
        if compiled.groups < 1:
            raise WebtuneError(f"{where}: check {check!r}: the regex needs a group that captures what the "
                               f"answer must mention, e.g. 'mentions:Brand: (.+)'")
        return
    raise WebtuneError(f"{where}: unknown check {check!r}; use one of: {', '.join(CHECK_KINDS)}")


def run_check(check: str, prompt: str, output: str) -> bool | None:
    """`json`: the output parses as JSON (a ```json fence around it is allowed).
    `mentions:<regex>`: the regex's first group, found in the prompt (e.g. `Brand: (.+)`), appears in
    the output, case-insensitively. None when the check does not apply to this prompt."""
    if check == "json":
        text = output.strip()
        fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.S)
        try:
            json.loads(fenced.group(1) if fenced else text)
            return True
        except ValueError:
            return False
    if check.startswith("mentions:"):
        found = re.search(check.split(":", 1)[1], prompt, re.M)
        if not found or not found.group(1).strip():
            return None
        return found.group(1).strip().lower() in output.lower()
    validate_check(check)
    return None


def check_rates(checks: list[str], prompts: list[str], outputs: list[str]) -> dict:
    """{check: {"rate", "passed", "applied"}} over the prompts a check applies to."""
    rates = {}
    for check in checks:
        results = [run_check(check, p, o) for p, o in zip(prompts, outputs)]
        applied = [r for r in results if r is not None]
        if applied:
            rates[check] = {"rate": round(sum(applied) / len(applied), 3), "passed": sum(applied), "applied": len(applied)}
    return rates
