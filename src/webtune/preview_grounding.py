"""What `webtune preview` says about grounding: for each shown example, the spans its target states
that its prompt does not and what `prepare.grounding` would do; at the end, the counts by kind over
every record the preview read, the commonest phrases and the advice (as the prepare stage's stats).
The vocabulary is learnt from the records the preview read, not the whole corpus a run sees."""
from __future__ import annotations

from collections import Counter

from .grounding.check import check
from .grounding.targets import GroundingPlan, KINDS, closed_book, prompt_of, summary, topic, trimmed
from .grounding.vocabulary import VocabularyCounts


class PreviewGrounding:
    def __init__(self, cfg, tasks, records: list[dict]):
        from .prepare.mapper import grounding_policy
        self.policy = grounding_policy(cfg)
        names: set | None = set()
        for task in tasks:
            if task.variables is None:
                names = None
                break
            names |= task.variables | set(task.fields)
        counts = VocabularyCounts()
        for fields in records:
            counts.add(fields if names is None else {k: v for k, v in fields.items() if k in names})
        self.plan = GroundingPlan(self.policy, counts.vocabulary(), float(cfg.prepare.get("grounding_min_kept", 0.5)))
        self.records = len(records)

    def note(self, messages: list[dict]) -> str | None:
        """One line for a shown example: its unsupported spans and the policy's effect, or None."""
        if self.policy == "off" or not messages or messages[-1].get("role") != "assistant":
            return None
        target, prompt = messages[-1]["content"], prompt_of(messages)
        if closed_book(target, prompt):
            return "grounding: closed-book (the prompt shows too little of the target to check it against)"
        f = check(target, prompt, vocab=self.plan.vocab)
        if not f.spans:
            return None
        spans = ", ".join(f"[red]{s.text}[/red] ({s.kind})" for s in f.spans)
        if self.policy == "trim":
            left = trimmed(target, prompt, self.plan.vocab)
            kept = len(left) / max(1, len(target))
            effect = "drops the example" if not left.strip() or kept < self.plan.min_kept else f"keeps {kept:.0%} of the target"
        else:
            effect = {"drop": "drops the example", "flag": "keeps it, flagged"}[self.policy]
        return f"ungrounded: {spans}; prepare.grounding={self.policy} {effect}"

    def summary(self, rendered: list[list[dict]]) -> dict:
        stats, phrases = Counter(), Counter()
        for messages in rendered:
            target, prompt = messages[-1]["content"], prompt_of(messages)
            stats["checked"] += 1
            if closed_book(target, prompt):
                stats["closed_book"] += 1
                continue
            f = check(target, prompt, vocab=self.plan.vocab)
            if f.spans:
                stats["touched"] += 1
            for kind in KINDS:
                if any(s.kind == kind for s in f.spans):
                    stats[kind] += 1
                    for t in set(topic(f, kind)):
                        phrases[(kind, t)] += 1
        return summary(stats, phrases, self.policy, top=5)


def lines(report: dict, records: int) -> list[str]:
    """The end-of-preview summary, as printable lines."""
    if not report["checked"]:
        return []
    head = (f"grounding (prepare.grounding={report['policy']}, vocabulary from the {records} records read): "
            f"{report['touched']} of {report['checked']} targets state what their prompt does not "
            f"({report['value']} with values, {report['attribute']} with attribute values)")
    if report["closed_book"]:
        head += f"; {report['closed_book']} closed-book (not checked)"
    return [head] + [f"  {c['advice']}" for c in report["common"]]
