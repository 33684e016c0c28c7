"""Grounded training targets (prepare.grounding: trim | drop | flag | off).

Each domain example's target (its last assistant turn) is checked against what its prompt shows
(the system and user turns), with the vocabulary learnt over the whole prepared corpus:
  trim   the target's sentences (prose.units: never cut inside a sentence, list, table or code)
         that carry unsupported content are removed; the example is dropped when less than
         `min_kept` of its characters, or no sentence, is left;
  drop   the example is dropped;
  flag   the example is kept as written;
  off    nothing is checked.
A target whose content words the prompt barely holds (under CLOSED_BOOK of them: a documentation
answer to a question built from a heading) is not a rendering of its prompt but the source itself:
there is nothing in the prompt to check it against, so it is counted as closed-book and left alone.

Every decision is a function of the example and the vocabulary alone, so the output does not
depend on the shard count or the executor.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import orjson

from .check import Finding, check
from .text import STOP_WORDS, tokens
from .vocabulary import Vocabulary

CLOSED_BOOK = 0.35  # share of the target's content words the prompt holds, below which it is not checked:
                    # product descriptions hold 0.42-0.90 of theirs (5th percentile 0.53), Python-docs answers
                    # 0-0.16 (95th percentile), their page summaries 0-0.46 (bench/RESULTS.md)
KINDS = ("value", "attribute")


@dataclass
class GroundingPlan:
    policy: str                     # trim | drop | flag | off
    vocab: Vocabulary
    min_kept: float = 0.5


@dataclass
class Outcome:
    """What grounding did to one record's examples."""

    lines: list[bytes]                               # the examples that remain (bytes as written)
    events: list[tuple[str, str, str, list]] = field(default_factory=list)   # (status, reason, detail, spans)
    stats: Counter = field(default_factory=Counter)
    phrases: Counter = field(default_factory=Counter)   # (kind, phrase) -> targets


def prompt_of(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages[:-1] if m.get("role") in ("system", "user"))


def closed_book(target: str, prompt: str) -> bool:
    content = [t for t in tokens(target) if t not in STOP_WORDS and len(t) > 2]
    if not content:
        return False
    held = set(tokens(prompt))
    return sum(t in held for t in content) < CLOSED_BOOK * len(content)


def eval_source(messages: list[dict]) -> str:
    """What an answer to this example is checked against at eval time: what its prompt shows, and
    for a closed-book example (a question whose answer is the page section) the reference too."""
    prompt, reference = prompt_of(messages), messages[-1]["content"]
    return prompt + "\n" + reference if closed_book(reference, prompt) else prompt


def describe(f: Finding) -> str:
    """The spans for a ledger detail: `3-year` (value, 212:218); `wool` (attribute title, 40:44)."""
    return "; ".join(f"`{s.text}` ({s.kind}{' ' + s.field if s.field else ''}, {s.start}:{s.end})" for s in f.spans)


def topic(f: Finding, kind: str) -> list[str]:
    """What each span of `kind` is about, for the counts: a value with the word after it and its digits
    as N ("N-year warranty"), an attribute as written (lower case)."""
    out = []
    for s in f.spans:
        if s.kind != kind:
            continue
        if kind == "value":
            after = re.match(r"[\s-]*([A-Za-z]+(?:\s+[A-Za-z]+)?)", f.text[s.end:s.end + 40])
            word = ""
            if after:
                word = next((w for w in after.group(1).split() if w.lower() not in STOP_WORDS), "")
            out.append((re.sub(r"\d+(?:[.,]\d+)*", "N", s.text.lower()) + (" " + word.lower() if word else "")).strip())
        else:
            out.append(s.text.lower())
    return out


def trimmed(target: str, prompt: str, vocab: Vocabulary) -> str:
    """The target without its units that carry unsupported content."""
    from ..prose import units

    kept = []
    for sep, piece in units(target):
        if not check(piece, prompt, vocab=vocab).spans:
            kept.append((sep, piece))
    return "".join((sep if i else "") + piece for i, (sep, piece) in enumerate(kept))


def apply(plan: GroundingPlan, lines: list[bytes]) -> Outcome:
    """One kept record's example lines through the policy."""
    out = Outcome([])
    if plan.policy == "off":
        out.lines = lines
        return out
    details: dict[str, list[str]] = {}
    spans: dict[str, list[dict]] = {}
    actions = Counter()
    for line in lines:
        ex = orjson.loads(line)
        messages = ex["messages"]
        if ex.get("side") != "domain" or not messages or messages[-1].get("role") != "assistant":
            out.lines.append(line)
            continue
        target, prompt = messages[-1]["content"], prompt_of(messages)
        out.stats["checked"] += 1
        if closed_book(target, prompt):
            out.stats["closed_book"] += 1
            out.lines.append(line)
            continue
        f = check(target, prompt, vocab=plan.vocab)
        if not f.spans:
            out.lines.append(line)
            continue
        out.stats["touched"] += 1
        for kind in KINDS:
            if any(s.kind == kind for s in f.spans):
                out.stats[kind] += 1
                details.setdefault(kind, []).append(f"{ex['template']}: {describe(f)}")
                spans.setdefault(kind, []).extend({"example": ex["id"], **sp.to_dict()} for sp in f.spans if sp.kind == kind)
                for t in set(topic(f, kind)):
                    out.phrases[(kind, t)] += 1
        action = _act(plan, ex, target, prompt)
        actions[action] += 1
        out.stats[action] += 1
        if action != "dropped":
            out.lines.append(orjson.dumps(ex) + b"\n" if action == "trimmed" else line)
    if details:
        what = ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
        status = "rejected" if not out.lines else "repaired"
        for kind, found in details.items():
            out.events.append((status, f"ungrounded:{kind}", f"{what} ({plan.policy}): " + " | ".join(found), spans[kind]))
    return out


def _act(plan: GroundingPlan, ex: dict, target: str, prompt: str) -> str:
    if plan.policy == "flag":
        return "flagged"
    if plan.policy == "drop":
        return "dropped"
    left = trimmed(target, prompt, plan.vocab)
    if not left.strip() or len(left) < plan.min_kept * len(target):
        return "dropped"
    ex["messages"][-1]["content"] = left
    return "trimmed"


def summary(stats: Counter, phrases: Counter, policy: str, top: int = 8) -> dict:
    """The prepare stage's grounding stats: counts, the commonest unsupported phrases, advice."""
    fate = {"trim": "or leave them trimmed", "drop": "or leave them dropped",
            "flag": "or set prepare.grounding=trim to train without them"}.get(policy, "")
    common = []
    for (kind, phrase), n in sorted(phrases.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
        noun = "a value" if kind == "value" else "an attribute value"
        advice = (f"{n} target{'s mention' if n != 1 else ' mentions'} {noun} no prompt field holds ({phrase!r}): "
                  f"add the field to the prompt template, {fate}").rstrip(", ")
        common.append({"kind": kind, "phrase": phrase, "targets": n, "advice": advice})
    return {"policy": policy, **{k: int(stats.get(k, 0)) for k in
            ("checked", "closed_book", "touched", "value", "attribute", "trimmed", "dropped", "flagged")},
            "common": common}
