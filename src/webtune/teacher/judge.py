"""The optional judge of the teacher's questions (`teacher.judge.enabled`): one request per section,
the section and its numbered questions, asking two scores per question from 0 to 1: does the section
answer it, and can it be understood without the section. A question scoring below
`teacher.judge.threshold` on either is rejected (`teacher:judge_rejected`, scores in the ledger). A
judge reply that does not parse leaves the questions unjudged (kept, said so in the ledger)."""
from __future__ import annotations

from .ask import Job, result_of
from .cache import request_key
from .parse import json_in
from .plan import estimate_tokens

PROMPT = """You check questions written for a documentation section.

<section>
{section}
</section>

Questions:
{questions}

For each question, in order, give two scores from 0 to 1:
- answered: does the section above contain the answer to this question?
- self_contained: can a reader understand the question without seeing the section (it names what it is about, no "this section" or "the above")?

Reply with JSON only: {{"scores": [{{"answered": 0.0, "self_contained": 0.0}}, ...]}} with one entry per question."""

SCHEMA = {"type": "object", "properties": {"scores": {"type": "array", "items": {
    "type": "object", "properties": {"answered": {"type": "number"}, "self_contained": {"type": "number"}},
    "required": ["answered", "self_contained"], "additionalProperties": False}}},
    "required": ["scores"], "additionalProperties": False}


def judge_job(section, model: str, settings: dict, max_tokens: int) -> Job:
    questions = [f["q"] for f in section.fates if f["status"] == "kept"]
    content = PROMPT.format(section=section.target,
                            questions="\n".join(f"{i + 1}. {q}" for i, q in enumerate(questions)))
    messages = [{"role": "user", "content": content}]
    key = request_key(kind="judge", model=model, section=section.target, questions=questions, **settings)
    n = len(questions)
    est = estimate_tokens(messages, 1, False, max_tokens)
    return Job(key, messages, SCHEMA, lambda text: judge_parse(text, n), (est[0], 12 * n + 10), model)


def judge_parse(text: str, n: int) -> list[tuple[float, float]] | None:
    data = json_in(text or "")
    scores = data.get("scores") if isinstance(data, dict) else data
    if not isinstance(scores, list) or len(scores) != n:
        return None
    out = []
    for item in scores:
        try:
            out.append((float(item["answered"]), float(item["self_contained"])))
        except (TypeError, KeyError, ValueError):
            return None
    return out


def judged(section, entry: dict | None, threshold: float, reason: str) -> None:
    """Mark the section's questions by the judge's scores (None entry: the cap left it unjudged)."""
    fates = [f for f in section.fates if f["status"] == "kept"]
    scores = result_of(entry, lambda text: judge_parse(text, len(fates))) if entry else None
    for fate, score in zip(fates, scores or [None] * len(fates)):
        if score is None:
            fate["judge"] = "not judged" if entry is None else "judge reply unparseable"
            continue
        fate["judge"] = {"answered": score[0], "self_contained": score[1]}
        if min(score) < threshold:
            fate.update(status="rejected", reason=reason)
