"""The teacher step, the prepare stage's last: requests written by a teacher model, targets kept verbatim.

The map renders a teacher task like any other (its user turn is the rendered teacher prompt, its
assistant turn the section's own text) and dedupe runs on the records, so nothing is asked for a
record that is dropped. This step then, in the main process, over data/examples.jsonl:

  collect  one request per teacher example (the section text is in the prompt once), keyed by content
  plan     the uncached ones in one line (requests, tokens, cost) and the caps, before anything is sent
  ask      them with bounded concurrency (ask.py), each reply cached as it comes in
  curate   exact and near-duplicate questions across all sections (the first in input order is kept)
  judge    optionally, one more request per section scoring its questions (answered? self-contained?)
  render   each question as an example, in input order: `<example id>/q<k>`, the target unchanged
  record   the replies used, in the run directory (reproduce reads them instead of asking)

Asking happens apart from rendering, so concurrency never touches the output: given the cache,
data/examples.jsonl is the same bytes for any number of workers, threads or engine. Every teacher
section gets one ledger event (`ledger/prepare/teacher.jsonl`, after the map's): kept with its
example ids, or rejected (`teacher:unparseable`, `teacher:cap_reached`, `teacher:judge_rejected`,
`teacher:duplicate`), with each question's fate under `questions`.
"""
from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..config import plain
from ..console import log
from ..fileio import atomic_path
from ..ledger import LedgerWriter
from .ask import CAP_REACHED, Job, ask_all, result_of
from .cache import ReplyCache, cache_root, request_key, write_record
from .judge import judge_job, judged
from .parse import parse_questions, questions_schema
from .plan import Budget, cost_of, estimate_tokens, make_plan

UNPARSEABLE, CAP, JUDGE_REJECTED, DUPLICATE = ("teacher:unparseable", "teacher:cap_reached", "teacher:judge_rejected",
                                               "teacher:duplicate")
SAMPLE_PAGES = 12


@dataclass
class Section:
    """One teacher example of data/examples.jsonl: what is asked about, and what came back."""

    line: int
    example: dict
    n: int
    answers: bool
    prompt: str
    target: str
    key: str
    questions: list | None = None               # parsed items (str, or {question, answer})
    fates: list[dict] = field(default_factory=list)   # per question: {q, status, reason, ...}
    reason: str = ""                            # why the section has no question left


def teacher_tasks(inputs) -> dict[tuple[str, str], object]:
    """(side, task name) -> its TeacherTurn, for every task whose user turn the teacher writes."""
    from ..prepare.render import load_tasks
    return {(inp.side, task.name): task.teacher for inp in inputs for task in load_tasks(inp.template) if task.teacher}


def run(cfg, run_dir: Path, inputs, stats: dict, record: Path, console=None) -> dict | None:
    """Expand the teacher examples of data/examples.jsonl in place, write the replies used to `record`;
    update the prepare `stats` (examples, per-source kept/rejected) and return the teacher's own
    stats (None: no teacher task)."""
    tasks = teacher_tasks(inputs)
    if not tasks:
        return None
    started = time.perf_counter()
    t = plain(cfg.teacher)
    path = Path(run_dir) / "data" / "examples.jsonl"
    sections = collect(path, tasks, t)
    cache = ReplyCache(cache_root(cfg.runs_dir))
    budget = Budget(t)
    asked = Asker(t, cache, budget, console)
    plan = asked.questions(sections)
    curate(sections, t)          # before the judge: a duplicate is not worth judging
    if t.judge.enabled:
        asked.judge(sections)
    check_answers(sections)
    write_record(record, asked.used_entries())     # what reproduce reads instead of asking
    kept_per_source, rejected_per_source = render(path, Path(run_dir), sections, stats)
    for name, n in rejected_per_source.items():
        stats["sources"][name]["kept"] -= n
        stats["sources"][name]["rejected"] += n
    return summary(t, sections, plan, asked, budget, time.perf_counter() - started)


# ---------------------------------------------------------------- collect
def collect(path: Path, tasks: dict, t) -> list[Section]:
    out = []
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh):
            ex = orjson.loads(raw)
            turn = tasks.get((ex.get("side", "domain"), ex["template"]))
            if turn is None:
                continue
            prompt = next(m["content"] for m in ex["messages"] if m["role"] == "user")
            target = next(m["content"] for m in reversed(ex["messages"]) if m["role"] == "assistant")
            key = request_key(kind="questions", model=t.model, prompt=prompt, section=target, n=turn.n,
                              answers=turn.answers, **settings(t))
            out.append(Section(i, ex, turn.n, turn.answers, prompt, target, key))
    return out


def settings(t) -> dict:
    """The generation settings a reply depends on (part of its cache key)."""
    return {"temperature": t.temperature, "top_p": t.top_p, "seed": t.seed, "max_tokens": t.max_tokens,
            "response_format": str(t.response_format)}


class Asker:
    """The plan, the caps and the requests for questions, then for the judge; the client is made only
    when something is not cached (a fully cached rerun needs neither the server nor a key)."""

    def __init__(self, t, cache: ReplyCache, budget: Budget, console):
        self.t, self.cache, self.budget, self.console = t, cache, budget, console
        self.client = None
        self.cached = self.sent = 0
        self.entries: dict[str, dict | str | None] = {}
        self.used: dict[str, tuple[str, str]] = {}     # key -> (kind, example id), in input order
        self.paid_tokens = [0, 0]     # every reply used, cached or not: what the data cost in all

    def questions(self, sections: list[Section]):
        jobs = {}
        for s in sections:
            self.used.setdefault(s.key, ("questions", s.example["id"]))
            if s.key not in self.entries and s.key not in jobs:
                entry = self.cache.get(s.key)
                if entry is not None:
                    self.entries[s.key] = entry
                else:
                    messages = [{"role": "user", "content": s.prompt}]
                    jobs[s.key] = Job(s.key, messages, questions_schema(s.n, s.answers),
                                      _parser(s.n, s.answers), estimate_tokens(messages, s.n, s.answers,
                                                                               self.t.max_tokens), self.t.model)
        plan = self.ask(list(jobs.values()), len(sections), "questions")
        for s in sections:
            entry = self.entries.get(s.key)
            if entry == CAP_REACHED or entry is None:
                s.reason = CAP
                continue
            self.count_paid(entry)
            s.questions = result_of(entry, _parser(s.n, s.answers))
            if s.questions is None:
                s.reason = UNPARSEABLE
            else:
                s.fates = [{"q": _question(q), "status": "kept"} for q in s.questions]
        return plan

    def judge(self, sections: list[Section]) -> None:
        model = self.t.judge.model or self.t.model
        jobs, keys = {}, {}
        for s in sections:
            if not any(f["status"] == "kept" for f in s.fates):
                continue
            job = judge_job(s, model, settings(self.t), self.t.max_tokens)
            keys[id(s)] = job.key
            self.used.setdefault(job.key, ("judge", s.example["id"]))
            entry = self.cache.get(job.key)
            if entry is not None:
                self.entries[job.key] = entry
            else:
                jobs.setdefault(job.key, job)
        self.ask(list(jobs.values()), len(keys), "judge")
        for s in sections:
            if id(s) in keys:
                entry = self.entries.get(keys[id(s)])
                if entry not in (None, CAP_REACHED):
                    self.count_paid(entry)
                judged(s, entry if entry != CAP_REACHED else None, self.t.judge.threshold, JUDGE_REJECTED)

    def ask(self, jobs: list[Job], sections: int, what: str):
        cached = sections - len(jobs)
        self.cached += cached
        plan, fits = make_plan(self.t, sections, cached, [j.estimate for j in jobs])
        if jobs or what == "questions":
            log(("" if what == "questions" else "judge: ") + plan.line(self.t))
        for job in jobs[fits:]:
            self.entries[job.key] = CAP_REACHED
        if fits:
            if self.client is None:
                from .client import Teacher
                self.client = Teacher(self.t)
            before = self.budget.requests
            self.entries.update(ask_all(self.client, jobs[:fits], self.cache, self.budget, what, self.console))
            self.sent += self.budget.requests - before
        return plan

    def used_entries(self) -> list[tuple[str, str, str, dict]]:
        """(key, kind, example id, entry) of every reply the data was made from, in input order."""
        return [(key, kind, example, self.entries[key]) for key, (kind, example) in self.used.items()
                if isinstance(self.entries.get(key), dict)]

    def count_paid(self, entry: dict) -> None:
        for reply in entry.get("replies", []):
            self.paid_tokens[0] += reply.get("input_tokens", 0)
            self.paid_tokens[1] += reply.get("output_tokens", 0)


def _parser(n: int, answers: bool):
    return lambda text: parse_questions(text, n, answers)


# ---------------------------------------------------------------- curate
def curate(sections: list[Section], t) -> None:
    """Exact and near-duplicate questions across every section, in input order: the first is kept
    (near: word-set Jaccard >= teacher.dedupe_threshold; 0 or 1: exact copies only)."""
    items = [(s, k) for s in sections if s.questions for k, f in enumerate(s.fates) if f["status"] == "kept"]
    words = [_WORDS.findall(_question(s.questions[k]).lower()) for s, k in items]
    threshold = float(t.dedupe_threshold)
    firsts = near_duplicates(words, threshold if 0.0 < threshold < 1.0 else None)
    for (s, k), first in zip(items, firsts):
        if first is not None:
            keeper, kk = items[first]
            s.fates[k].update(status="rejected", reason=DUPLICATE, duplicate_of=f"{keeper.example['id']}/q{kk + 1}")


_WORDS = re.compile(r"\w+")


def near_duplicates(texts: list[list[str]], threshold: float | None) -> list[int | None]:
    """For each word list, the first earlier kept one that it copies (same words in the same order)
    or, with a threshold, whose word set has Jaccard >= threshold with its own; None when kept.
    Exact, by prefix filtering (Bayardo et al. 2007): words ordered rarest first, two sets that
    similar must share a word among the first |s| - ceil(t|s|) + 1 of each, so only those are indexed."""
    df = Counter(w for text in texts for w in set(text))
    exact: dict[str, int] = {}
    index: dict[str, list[int]] = defaultdict(list)
    sets = [frozenset(text) for text in texts]
    out: list[int | None] = []
    for i, text in enumerate(texts):
        first = exact.get(" ".join(text))
        if first is None and threshold is not None and sets[i]:
            order = sorted(sets[i], key=lambda w: (df[w], w))
            prefix = order[: len(order) - math.ceil(threshold * len(order)) + 1]
            candidates = {j for w in prefix for j in index.get(w, ())}
            first = min((j for j in candidates if _jaccard(sets[i], sets[j]) >= threshold), default=None)
        out.append(first)
        if first is None:
            exact.setdefault(" ".join(text), i)
            if threshold is not None and sets[i]:
                for w in prefix:
                    index[w].append(i)
    return out


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b)


def check_answers(sections: list[Section]) -> None:
    """Answers mode only: the grounding detector on each answer the teacher wrote, against the section
    it was asked about (the page's own text): what it states that the section does not."""
    from ..grounding import check
    for s in sections:
        if not s.answers or not s.questions:
            continue
        for fate, item in zip(s.fates, s.questions):
            f = check(item["answer"], s.target)
            fate["grounding"] = {"unsupported": [span.text for span in f.spans], "parent_f1": round(f.parent[2], 3)}


def _question(item) -> str:
    return item["question"] if isinstance(item, dict) else item


# ---------------------------------------------------------------- render
def render(path: Path, run_dir: Path, sections: list[Section], stats: dict) -> tuple[dict, dict]:
    """data/examples.jsonl rewritten in input order with each teacher example expanded into its kept
    questions; one ledger event per record that had a teacher example. Returns per-source counts of
    records kept and of records newly rejected (no example left)."""
    by_line = {s.line: s for s in sections}
    per_template: Counter = Counter()
    kept, rejected = defaultdict(int), defaultdict(int)
    with atomic_path(path) as tmp, open(tmp, "wb") as out, open(path, "rb") as fh, \
            LedgerWriter(run_dir, "prepare", part="teacher") as ledger:
        record = _Record(ledger, kept, rejected)
        for i, raw in enumerate(fh):
            ex = orjson.loads(raw)
            record.start(ex)
            s = by_line.get(i)
            if s is None:
                out.write(raw)
                record.example_ids.append(ex["id"])
                per_template[ex["template"]] += 1
                continue
            record.sections.append(s)
            for k, item in enumerate(s.questions or []):
                if s.fates[k]["status"] != "kept":
                    continue
                eid = f"{ex['id']}/q{k + 1}"
                out.write(orjson.dumps(question_example(ex, eid, item)) + b"\n")
                record.example_ids.append(eid)
                per_template[ex["template"]] += 1
        record.finish()
    stats["examples"] = dict(per_template)
    return dict(kept), dict(rejected)


def question_example(ex: dict, eid: str, item) -> dict:
    messages = []
    for m in ex["messages"]:
        if m["role"] == "user":
            m = {**m, "content": _question(item)}
        elif m["role"] == "assistant" and isinstance(item, dict):
            m = {**m, "content": item["answer"]}   # answers mode: the teacher's words, not the page's
        messages.append(m)
    return {**ex, "id": eid, "messages": messages,
            "teacher": "question_and_answer" if isinstance(item, dict) else "question"}


class _Record:
    """The examples of one record (consecutive lines), and its ledger event when it had a teacher one."""

    def __init__(self, ledger, kept, rejected):
        self.ledger, self.kept, self.rejected = ledger, kept, rejected
        self.id = None
        self.source = ""
        self.example_ids: list[str] = []
        self.sections: list[Section] = []

    def start(self, ex: dict) -> None:
        if ex["record_id"] != self.id:
            self.finish()
            self.id, self.source, self.example_ids, self.sections = ex["record_id"], ex["source"], [], []

    def finish(self) -> None:
        if self.id is None or not self.sections:
            return
        fates = [{**f, "task": s.example["template"]} for s in self.sections for f in s.fates]
        reasons = [s.reason for s in self.sections if s.reason] + [f["reason"] for f in fates if f["status"] != "kept"]
        n_kept = sum(f["status"] == "kept" for f in fates)
        detail = f"teacher: {n_kept} of {len(fates)} questions kept" + (
            f" ({', '.join(f'{r} {n}' for r, n in Counter(reasons).items())})" if reasons else "")
        extra = {"questions": fates}
        if self.example_ids:
            self.ledger.kept(self.id, self.source, detail=detail, example_ids=self.example_ids, step="teacher",
                             extra=extra)
            self.kept[self.source] += 1
        else:
            self.ledger.rejected(self.id, self.source, reasons[0], detail, step="teacher", extra=extra)
            self.rejected[self.source] += 1


# ---------------------------------------------------------------- stats
def summary(t, sections: list[Section], plan, asked: Asker, budget: Budget, seconds: float) -> dict:
    fates = [f for s in sections for f in s.fates]
    rejected_q = Counter(f["reason"] for f in fates if f["status"] != "kept")
    no_question = Counter(s.reason or DUPLICATE for s in sections if not any(f["status"] == "kept" for f in s.fates))
    answers = any(s.answers for s in sections)
    return {
        "model": t.model, "base_url": t.base_url,
        "grounded_by_construction": not answers,   # answers mode: the teacher wrote the targets
        "answers_with_unsupported": sum(bool(f.get("grounding", {}).get("unsupported")) for f in fates
                                        if f["status"] == "kept") if answers else None,
        "sections": len(sections), "sections_kept": len(sections) - sum(no_question.values()),
        "sections_rejected": dict(no_question),
        "questions": {"written": len(fates), "kept": len(fates) - sum(rejected_q.values()),
                      "rejected": dict(rejected_q)},
        "requests": {"sent": asked.sent, "cached": asked.cached},
        "tokens": {"input": budget.input_tokens, "output": budget.output_tokens},
        "cost": budget.cost,
        "cost_all_replies": cost_of(t, *asked.paid_tokens),   # what this data cost, cached replies included
        "tokens_all_replies": {"input": asked.paid_tokens[0], "output": asked.paid_tokens[1]},
        "plan": plan.line(t),
        "sample": sample(sections),
        "seconds": round(seconds, 3),
    }


def sample(sections: list[Section]) -> list[dict]:
    """The first section with questions of each of the first pages: its heading and its questions."""
    out, pages = [], set()
    for s in sections:
        page = s.example["record_id"].split("/s")[0]
        if page in pages or not s.questions:
            continue
        pages.add(page)
        out.append({"id": s.example["record_id"], "asked_about": s.prompt.strip().splitlines()[0][:200],
                    "questions": [{k: f[k] for k in ("q", "status", "reason") if k in f} for f in s.fates]})
        if len(out) >= SAMPLE_PAGES:
            break
    return out
