"""Generation metrics: ROUGE-L (LCS F1 over words), chrF and BLEU (sacrebleu), task checks."""
from __future__ import annotations

import json
import re


def rouge_l(hyp: str, ref: str) -> float:
    a, b = hyp.lower().split(), ref.lower().split()
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def corpus_scores(hyps: list[str], refs: list[str]) -> dict:
    import sacrebleu
    if not hyps:
        return {}
    return {"rougeL": round(100 * sum(map(rouge_l, hyps, refs)) / len(hyps), 2),
            "chrF": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
            "BLEU": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
            "mean_words": round(sum(len(h.split()) for h in hyps) / len(hyps), 1),
            "empty": sum(1 for h in hyps if not h.strip())}


def run_check(check: str, prompt: str, output: str) -> bool | None:
    """`json`: the output parses as JSON. `mentions:<regex>`: the regex's first group, found in the
    prompt (e.g. `Brand: (.+)`), appears in the output. None when the check does not apply."""
    if check == "json":
        try:
            json.loads(output)
            return True
        except ValueError:
            return False
    if check.startswith("mentions:"):
        found = re.search(check.split(":", 1)[1], prompt)
        if not found:
            return None
        return found.group(1).strip().lower() in output.lower()
    return None
