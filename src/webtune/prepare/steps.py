"""The prepare map's steps, each with one job, in datatrove's shape: a step takes a stream of
`Doc`s and yields the ones that go on (`Step.__call__`); its `keep(doc)` does the job, writes the
record's ledger events (repairs, or the one rejection) and says whether the record goes on.

  Parse      source items -> Docs; malformed inputs and error records rejected    (step "parse")
  Clean      text repairs: mojibake, HTML, whitespace                             ("clean")
  Validate   the fields each task needs and its input schema, coercing in place   ("validate")
  Filter     PII masking, then the quality rules that need no word split          ("filter")
  Render     each viable task's chat example, checked against the chat format     ("render")
  Learn      its fields into the shard's grounding vocabulary counts              ("grounding")
  Serialize  the candidate's bytes, its place in input order, the text to sign    ("write")
  Batched    groups of BATCH docs for the numpy steps below
  FilterWords  the word rules on a whole batch at once                            ("filter")
  Sign       exact hash + MinHash LSH bands per record, for the reduce            ("dedupe")
  Write      the survivors and their signatures into the shard files              ("write")

Structure is checked before quality (Validate before Filter) so a record missing what a
template needs is rejected with the template and field named, not as too short. The time each
step spends goes to its name in the shard's timings (`Timer`): a step laps right before it
yields or drops a record, so the time since the previous lap is its own.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import orjson

from ..records import Rejection
from .filters import mask_pii, prose_view
from .shardfiles import Candidate, CandidateFiles, encode
from .validate import Invalid, check_chat
from ..textsig.words import Words, analyse

BATCH = 2048              # records hashed per numpy/rensa call
MAX_SIGN_CHARS = 200_000  # dedupe looks at most at this much of a text (the rest cannot change the verdict much)
_NOT_TEXT = {"role", "name", "url", "id"}  # labels inside nested objects (chat messages), not their text


@dataclass(slots=True)
class InputPlan:
    """One input as this shard's steps read it: worked out once per shard, shared by its docs."""

    index: int                      # position in the stage's inputs (the first part of input order)
    side: str                       # "domain" | "general"
    source: object                  # SourceConfig
    paths: list
    read: Callable                  # (source, paths, shard, n_shards) -> its records and rejections
    tasks: list                     # its template's tasks (render.Task)
    needed: list[str]               # fields some task needs
    dedupe_fields: list[str]        # what dedupe reads (default: `needed`)
    clean_fields: list[str] | None  # what Clean repairs (None: every field)
    same_text: bool                 # the filters' text is the dedupe text
    group_field: str | None
    counts: dict                    # {"in", "rejected"} of its source, in this shard
    prefixes: dict[str, int]        # id prefix (`<source>:<where>`) -> its number in this shard


@dataclass(slots=True)
class Doc:
    """One record on its way through the steps; each step fills in what it found."""

    id: str
    source: str
    fields: dict
    input: InputPlan
    group: str | None = None        # from the source (windows of one transcript)
    tasks: list | None = None       # Validate: the tasks that can use it
    failures: list | None = None    # Validate, Render: Invalid of the tasks that cannot
    text: str = ""                  # Filter: its main text
    judged: str = ""                # Filter: what the quality rules judge (a page's prose)
    examples: list | None = None    # Render: (task name, messages)
    key: tuple = ()                 # Serialize: (input, prefix number, #n) in this shard
    sign_text: str = ""             # Serialize: what dedupe hashes
    encoded: bytes = b""            # Serialize: the candidate as cand-<shard>.jsonl holds it
    n_examples: int = 0


@dataclass(slots=True)
class Batch:
    """BATCH docs for the numpy steps: their word view, which passed, their signatures."""

    docs: list[Doc]
    words: Words | None = None
    keep: np.ndarray | None = None
    exact: np.ndarray | None = None
    bands: np.ndarray | None = None
    empty: np.ndarray | None = None


class Timer:
    """Seconds per step name, by laps: each lap charges the time since the previous one."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] += now - self.t
        self.t = now


@dataclass
class Shard:
    """What every step of one shard's map writes to."""

    ledger: object                  # ledger.LedgerWriter
    timer: Timer
    number: int = 0
    count: int = 1


class Step:
    """A per-record step: `keep(doc)` does its job and returns whether the record goes on."""

    name = "step"

    def __init__(self, shard: Shard):
        self.ledger, self.timer = shard.ledger, shard.timer

    def __call__(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        keep, lap, name = self.keep, self.timer.lap, self.name
        for doc in docs:
            if keep(doc):
                lap(name)
                yield doc
            else:
                doc.input.counts["rejected"] += 1
                lap(name)

    def keep(self, doc: Doc) -> bool:
        raise NotImplementedError

    def reject(self, doc: Doc, reason: str, detail: str, step: str | None = None) -> bool:
        self.ledger.rejected(doc.id, doc.source, reason, detail, step=step or self.name)
        return False

    def reject_failures(self, doc: Doc) -> bool:
        """No task could use the record: the first task's reason, every task's detail."""
        first = doc.failures[0]
        step = "render" if first.reason in ("missing_field", "render_error") else "validate"
        return self.reject(doc, first.reason, "; ".join(e.detail for e in doc.failures), step)


def pages_cut(item, counts: dict) -> None:
    """A page's first section counts its page as cut at its headings or by size (sources/pages.py),
    so the report can say how many pages were cut by size because no heading was found."""
    fields = getattr(item, "fields", None)
    if fields and fields.get("section") == 1 and fields.get("sectioned_by"):
        key = f"pages_by_{fields['sectioned_by']}"
        counts[key] = counts.get(key, 0) + 1
        counts["page_sections"] = counts.get("page_sections", 0) + (fields.get("sections") or 1)


class Parse(Step):
    """The source's items for this shard of each input, as Docs; counts what came in."""

    name = "parse"

    def __init__(self, shard: Shard, progress=None):
        super().__init__(shard)
        self.shard, self.progress, self.done = shard, progress, 0

    def __call__(self, plans: Iterable[InputPlan]) -> Iterator[Doc]:
        lap = self.timer.lap
        for plan in plans:
            lap("other")
            for item in plan.read(plan.source, plan.paths, self.shard.number, self.shard.count):
                self.tick(plan)
                pages_cut(item, plan.counts)
                doc = self.doc(item, plan)
                lap("parse")
                if doc is not None:
                    yield doc
        self.report()

    def tick(self, plan: InputPlan) -> None:
        plan.counts["in"] += 1
        self.done += 1
        if self.done % 1000 == 0:
            self.report()

    def report(self) -> None:
        if self.progress is not None:
            self.progress[self.shard.number] = self.done

    def doc(self, item, plan: InputPlan) -> Doc | None:
        """The item as a Doc, or None when it is rejected (already in the ledger and the counts)."""
        if isinstance(item, Rejection):
            self.ledger.rejected(item.id, item.source, item.reason, item.detail, step="parse")
            plan.counts["rejected"] += 1
            return None
        doc = Doc(item.id, item.source, item.fields, plan, item.group)
        for reason in item.repairs:
            self.ledger.repaired(doc.id, doc.source, reason, step="parse")
        if not self.is_error(doc):
            return doc
        fields = doc.fields
        self.reject(doc, "error_record", str(fields.get("error") or fields.get("error_code")))
        plan.counts["rejected"] += 1
        return None

    @staticmethod
    def is_error(doc: Doc) -> bool:
        """A scraper's error record (Bright Data's `error_code`, or an `error` and none of the fields)."""
        fields, needed = doc.fields, doc.input.needed
        return "error_code" in fields or ("error" in fields and bool(needed) and not any(f in fields for f in needed))


class Clean(Step):
    name = "clean"

    def __init__(self, shard: Shard, cleaner):
        super().__init__(shard)
        self.cleaner = cleaner

    def keep(self, doc: Doc) -> bool:
        for reason, names in self.cleaner.clean(doc.fields, doc.input.clean_fields).items():
            self.ledger.repaired(doc.id, doc.source, reason, ", ".join(names), step="clean")
        return True


class Validate(Step):
    """Each task's needed fields and input schema; the record goes on if any task can use it."""

    name = "validate"

    def keep(self, doc: Doc) -> bool:
        viable, failures, coerced = [], [], set()
        for task in doc.input.tasks:
            try:
                for repair in task.check(doc.fields):
                    if repair not in coerced:
                        coerced.add(repair)
                        self.ledger.repaired(doc.id, doc.source, repair, f"template {task.name}", step="validate")
                viable.append(task)
            except Invalid as e:
                failures.append(e)
        doc.tasks, doc.failures = viable, failures
        return bool(viable) or self.reject_failures(doc)


class Filter(Step):
    """PII masking (a repair), then the record rules of `filters.Filters` on the main text."""

    name = "filter"

    def __init__(self, shard: Shard, filters, length_field: str | None, mask: bool):
        super().__init__(shard)
        self.filters, self.length_field, self.mask = filters, length_field, mask

    def keep(self, doc: Doc) -> bool:
        main = doc.fields.get(self.length_field) if self.length_field else None
        doc.text = main if isinstance(main, str) else text_of(doc.fields, doc.input.dedupe_fields)
        if self.mask:
            self.mask_pii(doc)
        doc.judged = prose_view(doc.fields, doc.text)  # a page's prose: its markup and code are no "symbols"
        verdict = self.filters.check_record(doc.fields, doc.judged)
        return verdict is None or self.reject(doc, *verdict)

    def mask_pii(self, doc: Doc) -> None:
        masked = []
        for name, value in doc.fields.items():
            if isinstance(value, str):
                new = mask_pii(value)
                if new != value:
                    doc.fields[name] = new
                    masked.append(name)
        if masked:
            self.ledger.repaired(doc.id, doc.source, "pii_masked", ", ".join(masked), step="filter")
            doc.text = mask_pii(doc.text)


class Render(Step):
    """Each viable task's messages (checked as chat when `validate_output`)."""

    name = "render"

    def __init__(self, shard: Shard, check_output: bool):
        super().__init__(shard)
        self.check_output = check_output

    def keep(self, doc: Doc) -> bool:
        examples = []
        for task in doc.tasks:
            try:
                messages = task.render(doc.fields)
                if self.check_output:
                    check_chat(messages)
                examples.append((task.name, messages))
            except Invalid as e:
                doc.failures.append(e)
        doc.examples = examples
        return bool(examples) or self.reject_failures(doc)


class Learn(Step):
    """A domain record's fields (those its templates read) into the shard's grounding vocabulary
    counts, which the reduce adds up over every shard (grounding.VocabularyCounts)."""

    name = "grounding"

    def __init__(self, shard: Shard, counts):
        super().__init__(shard)
        self.counts = counts

    def keep(self, doc: Doc) -> bool:
        if doc.input.side == "domain":
            names: set | None = set()
            for task in doc.tasks:
                if task.variables is None:
                    names = None
                    break
                names |= task.variables | set(task.fields)
            self.counts.add(doc.fields if names is None else {k: v for k, v in doc.fields.items() if k in names})
        return True


class Serialize(Step):
    """The candidate as the shard files hold it, its order key and the text dedupe signs. Only
    these go on into a batch: the record's fields, tasks and messages are let go here (a batch of
    2,048 records holding them made Python's cyclic GC cost ~40% more map time)."""

    name = "write"

    def keep(self, doc: Doc) -> bool:
        plan, rid = doc.input, doc.id
        where, _, n = rid.rpartition("#")
        doc.key = (plan.index, plan.prefixes.setdefault(where, len(plan.prefixes)), int(n) if n.isdigit() else 0)
        candidate = self.candidate(doc)
        doc.encoded, doc.n_examples = encode(candidate), len(candidate.lines)
        text = doc.text if plan.same_text else text_of(doc.fields, plan.dedupe_fields)
        doc.sign_text = text[:MAX_SIGN_CHARS] if len(text) > MAX_SIGN_CHARS else text
        doc.fields = doc.tasks = doc.failures = doc.examples = None
        return True

    @staticmethod
    def candidate(doc: Doc) -> Candidate:
        plan, rid = doc.input, doc.id
        value = doc.fields.get(plan.group_field) if plan.group_field else None
        group = doc.group or (str(value) if value is not None else rid)
        ids = [f"{rid}/{name}" for name, _ in doc.examples]
        grounding = {t.name: t.grounding_values(doc.fields) for t in doc.tasks}
        lines = [orjson.dumps({"id": eid, "record_id": rid, "source": doc.source, "side": plan.side,
                               "template": name, "group": group, "messages": messages,
                               **({"grounding_fields": grounding[name]} if grounding.get(name) else {})}) + b"\n"
                 for eid, (name, messages) in zip(ids, doc.examples)]
        note = "; ".join(f"{e.reason}: {e.detail}" for e in doc.failures)
        return Candidate(rid, doc.source, ids, [name for name, _ in doc.examples], note, lines)


def batched(docs: Iterable[Doc], size: int = BATCH) -> Iterator[Batch]:
    """The docs in batches of `size` (the last one shorter), each yielded as soon as it is full."""
    pending: list[Doc] = []
    for doc in docs:
        pending.append(doc)
        if len(pending) >= size:
            yield Batch(pending)
            pending = []
    if pending:
        yield Batch(pending)


class FilterWords:
    """The filters' word rules (word counts, top n-gram share, symbol ratio) for a batch at once."""

    name = "filter"

    def __init__(self, shard: Shard, filters):
        self.ledger, self.timer, self.filters = shard.ledger, shard.timer, filters

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            docs = batch.docs
            batch.words = analyse([d.judged for d in docs]) if self.filters.need_words else None
            verdicts = self.filters.check_words(batch.words) if batch.words is not None else [None] * len(docs)
            for doc, verdict in zip(docs, verdicts):
                if verdict is not None:
                    self.ledger.rejected(doc.id, doc.source, verdict[0], verdict[1], step="filter")
                    doc.input.counts["rejected"] += 1
            batch.keep = np.array([v is None for v in verdicts], dtype=bool)
            self.timer.lap(self.name)
            yield batch


class Sign:
    """dedupe.Signer over a batch; the filters' word view is reused when both read the same texts."""

    name = "dedupe"

    def __init__(self, shard: Shard, signer):
        self.timer, self.signer = shard.timer, signer

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            texts = [d.sign_text for d in batch.docs]
            same = batch.words is not None and all(d.judged is t for d, t in zip(batch.docs, texts))
            batch.exact, batch.bands, batch.empty = self.signer.sign(texts, batch.words if same else None)
            self.timer.lap(self.name)
            yield batch


class Write:
    """The batch's survivors into cand-<shard>.jsonl and ids-<shard>.txt, their keys and
    signatures kept for sig-<shard>.npz (`finish`, with the id prefixes, once the stream ends)."""

    name = "write"

    def __init__(self, shard: Shard, work: Path, bands: int):
        self.timer, self.files = shard.timer, CandidateFiles(work, shard.number, bands)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        with self.files as files:
            for batch in batches:
                files.add(batch.docs, batch.keep, batch.exact, batch.bands, batch.empty)
                self.timer.lap(self.name)
                yield batch

    def finish(self, plans: list[InputPlan]) -> None:
        self.files.finish([list(p.prefixes) for p in plans])
        self.timer.lap(self.name)


def _strings(value, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in _NOT_TEXT:
                _strings(v, out)


def text_of(fields: dict, names: list[str]) -> str:
    """The text of the named fields (every string in the record when no names are given)."""
    out: list[str] = []
    if names:
        for name in names:
            _strings(fields.get(name), out)
    else:
        _strings(fields, out)
    return "\n".join(out)
