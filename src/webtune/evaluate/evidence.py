"""Per-item scores of held-out items, their paired comparisons between two models, and the gate.

A held-out item is named by its prompt id (`prompt_id`: a hash of its messages), so the same item has
the same id in every run that holds it, in eval/generations.jsonl and in an answers file. Every score
is {prompt id: value}: held-out loss per example, chrF and ROUGE-L per generation, each task check,
each grounding rate. `comparisons` turns two models' scores into paired differences with 95%
intervals (paired.py); `verdict` decides on those intervals.
"""
from __future__ import annotations

import orjson
import xxhash

from ..fileio import sha256_text
from . import paired
from .metrics import rouge_l, run_check

# measure -> (kind, higher is better, what the report calls it)
MEASURES = {
    "domain_loss": ("ratio", False, "domain test loss (nats/token)"),
    "general_loss": ("ratio", False, "general test loss (nats/token)"),
    "old_loss": ("ratio", False, "the promoted version's frozen test set loss (a refresh; nats/token)"),
    "chrF": ("mean", True, "chrF per answer"),
    "rougeL": ("mean", True, "ROUGE-L per answer"),
    "unsupported_values": ("binary", False, "answers stating a value the prompt does not show"),
    "unsupported_attributes": ("binary", False, "answers naming another record's attribute"),
    "coverage": ("mean", True, "share of the prompt's fields the answer realises"),
    "parent_f": ("mean", True, "PARENT F (n-grams against prompt and reference)"),
    "unsupported_claims": ("binary", False, "answers making a claim the judge finds unsupported"),
}
LOSSES = ("domain_loss", "general_loss")
GROUNDING = ("unsupported_values", "unsupported_attributes", "coverage", "parent_f", "unsupported_claims")


def prompt_id(messages: list[dict]) -> str:
    """A held-out item's stable id: the first 12 hex digits of the sha256 of its messages (prompt and
    reference), so two runs holding the same item name it alike."""
    return sha256_text(orjson.dumps([{"role": m["role"], "content": m["content"]} for m in messages]).decode())[:12]


def sample(conversations: list, limit: int, seed: int) -> list:
    """At most `limit` conversations (0: all), chosen by a seeded hash of each one's prompt id, kept in
    file order. An item's draw does not depend on the others, so a grown test set keeps its old picks
    where it can."""
    if limit <= 0 or len(conversations) <= limit:
        return conversations
    rank = sorted(range(len(conversations)),
                  key=lambda i: xxhash.xxh64_intdigest(f"{seed}\0{prompt_id(conversations[i])}".encode()))
    return [conversations[i] for i in sorted(rank[:limit])]


def prompt_text(messages: list[dict]) -> str:
    """What checks search and what grounds an answer: every turn before the answer."""
    return "\n".join(m["content"] for m in messages[:-1])


def item_scores(result: dict, prompts: list, outputs: list[str], checks_of, ground=None) -> dict:
    """One model's per-item scores, {measure: {prompt id: value}}: its held-out losses (summed nats, with
    "<set>_loss_tokens" as weights) from `result`, and for each answer chrF, ROUGE-L, each check that
    applies and, with the grounding detector (`ground`), its grounding rates; "spans" holds the
    detector's spans per answer for the report."""
    import sacrebleu
    scores: dict = {}
    for name, held_out in result.items():   # each held-out set's per-example loss
        for pid, (nats, tokens) in (held_out.get("items") or {}).items() if isinstance(held_out, dict) else ():
            scores.setdefault(f"{name}_loss", {})[pid] = nats
            scores.setdefault(f"{name}_loss_tokens", {})[pid] = tokens
    for p, out in zip(prompts, outputs):
        pid, ref = prompt_id(p), p[-1]["content"]
        scores.setdefault("chrF", {})[pid] = round(sacrebleu.sentence_chrf(out, [ref]).score, 3)
        scores.setdefault("rougeL", {})[pid] = round(100 * rouge_l(out, ref), 3)
        for c in checks_of(p):
            if (ok := run_check(c, prompt_text(p), out)) is not None:
                scores.setdefault(f"check:{c}", {})[pid] = int(ok)
        if ground is not None:
            for measure, value in grounding_values(ground(out, p)).items():
                scores.setdefault(measure, {})[pid] = value
    return scores


def grounding_values(finding) -> dict:
    """A Finding as per-item scores: whether the answer states an unsupported value / attribute (the
    rates), coverage, PARENT F, and its spans."""
    parent = getattr(finding, "parent", None)
    return {"unsupported_values": int(bool(finding.unsupported_values)),
            "unsupported_attributes": int(bool(finding.unsupported_attributes)),
            "coverage": None if finding.coverage is None else round(float(finding.coverage), 4),
            "parent_f": None if not parent else round(float(parent[2]), 4),
            "spans": [{"start": sp.start, "end": sp.end, "kind": sp.kind, "text": sp.text,
                       "field": getattr(sp, "field", None)} for sp in finding.spans]}


def spec(measure: str) -> tuple[str, bool, str]:
    if measure.startswith("check:"):
        return "binary", True, f"check {measure[6:]} passes"
    if measure.endswith("_loss") and measure not in MEASURES:   # a set of compare()'s own
        return "ratio", False, f"{measure[:-5]} test loss (nats/token)"
    return MEASURES[measure]


def comparisons(old: dict, new: dict, seed: int, resamples: int, old_label: str, new_label: str,
                margins: dict | None = None) -> dict:
    """{measure: paired comparison} for every measure both score dicts hold. A score dict is
    {measure: {id: value}}, plus {"<loss>_tokens": {id: tokens}} for the losses. `margins` (eval.margins):
    a difference counts as worse only when its whole interval lies beyond the measure's margin."""
    out = {}
    for measure in [m for m in old if m in new and not m.endswith("_tokens") and m != "spans"]:
        kind, higher, name = spec(measure)
        c = paired.compare(measure, old[measure], new[measure], kind=kind, higher_is_better=higher,
                           weights=old.get(f"{measure}_tokens"), seed=seed, resamples=resamples,
                           old_label=old_label, new_label=new_label)
        out[measure] = {**within_margin(c, float((margins or {}).get(measure) or 0), higher), "name": name}
    return out


def within_margin(c: dict, margin: float, higher_is_better: bool) -> dict:
    """A significantly worse difference whose interval stays within `margin` of no change is not worse
    (non-inferiority): two models of the same quality, trained with two seeds, otherwise fail each
    other's gate on some measure among the many compared (bench/RESULTS.md, trim vs off)."""
    if c["significant"] != "worse" or margin <= 0 or c["low"] is None:
        return c
    near = c["low"] if not higher_is_better else -c["high"]   # the interval's bound nearest to no change
    return c if near > margin else {**c, "significant": None, "within_margin": margin}


def worse(comparison: dict) -> list[str]:
    """The measures in one comparison that got significantly worse."""
    return [m for m, c in comparison.items() if c["significant"] == "worse"]


def verdict(e, evidence: dict, judge: dict | None = None) -> dict:
    """The gate, on intervals. Passed: the domain gain's lower bound clears eval.min_domain_gain, the
    general loss rise's upper bound stays under eval.max_general_regression, and no measure got
    significantly worse (against the base, and against eval.compare_to's promoted version). Failed:
    an interval lies wholly on the wrong side of a threshold, or a measure got significantly worse.
    Inconclusive: an interval straddles a threshold (score more items: eval.max_examples). Unverified:
    neither held-out loss nor a judge (an API model), so nothing shows the tuned model is better."""
    vs_base = evidence.get("tuned_vs_base", {})
    flags, undecided = [], []
    gain = change = gain_ci = change_ci = None
    d = vs_base.get("domain_loss")
    if d and d["diff"] is not None:
        gain = round(-d["diff"], 4)
        gain_ci = [round(-d["high"], 4), round(-d["low"], 4)] if d["low"] is not None else None
        text = f"domain loss gain {gain:.3f}" + (f" (95% CI {gain_ci[0]:.3f} to {gain_ci[1]:.3f}, n={d['n']})"
                                                 if gain_ci else f" on {d['n']} item(s)")
        if gain_ci is None or d["n"] < paired.MIN_ITEMS:
            undecided.append(f"{text}: too few test examples for an interval (need {paired.MIN_ITEMS})")
        elif gain_ci[1] < e.min_domain_gain:
            flags.append(f"{text} is below eval.min_domain_gain={e.min_domain_gain}")
        elif gain_ci[0] < e.min_domain_gain:
            undecided.append(f"{text} straddles eval.min_domain_gain={e.min_domain_gain}")
    g = vs_base.get("general_loss")
    if g and g["diff"] is not None:
        change = round(g["diff"], 4)
        change_ci = [g["low"], g["high"]] if g["low"] is not None else None
        text = f"general loss rose by {change:.3f} nats" + (f" (95% CI {change_ci[0]:.3f} to {change_ci[1]:.3f}, "
                                                           f"n={g['n']})" if change_ci else "")
        if change_ci is None or g["n"] < paired.MIN_ITEMS:
            if change > e.max_general_regression:
                flags.append(f"{text}, above eval.max_general_regression={e.max_general_regression}")
        elif change_ci[0] > e.max_general_regression:
            flags.append(f"{text}, above eval.max_general_regression={e.max_general_regression}")
        elif change_ci[1] > e.max_general_regression:
            undecided.append(f"{text} straddles eval.max_general_regression={e.max_general_regression}")
    for label, comparison in evidence.items():
        against = label.split("_vs_", 1)[1]
        for m in worse(comparison):
            if not (against == "base" and m in LOSSES):   # the base's losses have their thresholds above
                flags.append(f"{spec(m)[2]} significantly worse than the {against}: {paired.describe(comparison[m])}")
    if judge and gain is None and judge.get("win_rate", 0) < 0.5:
        flags.append(f"the judge preferred the tuned answer in only {100 * judge['win_rate']:.0f}% of pairs")
    evidence_given = gain is not None or bool(judge)
    status = "failed" if flags else "unverified" if not evidence_given else "inconclusive" if undecided else "passed"
    return {"domain_gain": gain, "domain_gain_ci": gain_ci, "general_change": change, "general_change_ci": change_ci,
            "flags": flags, "undecided": undecided, "status": status, "passed": status == "passed"}
