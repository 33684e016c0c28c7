"""`webtune preview [overrides] n=5 seed=0 ids=A,B`: a few rendered examples, their token counts and
the loss mask, on stdout.

Nothing is trained and no run directory is made: the source's cached snapshot is read (acquired
into runs/.cache/source/ if there is none, which a `webtune run` with the same source then reuses),
records are cleaned and rendered as the prepare stage would, then tokenized with the model's chat
template. Trained (assistant) tokens are shown in green. A paid request (a Bright Data trigger) is
never made unless `allow_trigger` (`--allow-trigger`).

Which records: `ids=` names them (a page's id shows each of its sections); else `n` records drawn
with `seed` (default 0) from the first `SCAN_PER_SHOWN * n` records read, the source's files read
in an order shuffled by the same seed, so a preview is a sample, not the file's first lines, and
the same seed shows the same records. Rejections are counted by reason and summarised once at the
end; a page cut into sections says how (at its headings, or by size when none were found).
"""
from __future__ import annotations

import collections
import random

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from .errors import WebtuneError
from .hydra_setup import validate_overrides
from .records import Rejection

console = Console(highlight=False)  # stdout; wraps long lines inside panels (the log console does not)
SCAN_PER_SHOWN = 20


def preview(args: list[str], allow_trigger: bool = False, allow_teacher: bool = False) -> int:
    opts, rest = own_args(args)
    cfg = validate_overrides(rest)  # composed once, config mistakes reported in one line
    from . import sources
    from .config import plain
    from .prepare.clean import Cleaner
    from .prepare.fields import fields_read
    from .prepare.render import Invalid, load_tasks
    from .sources.cache import acquire_cached
    tasks = load_tasks(cfg.template)
    cleaner = Cleaner(plain(cfg.prepare).clean)
    chat = None
    if cfg.model.kind == "hf":
        from .chat.tokenize import ChatTokenizer, load_tokenizer
        chat = ChatTokenizer(load_tokenizer(cfg.model), cfg.model.name_or_path)
    src = sources.as_requested(cfg.source, fields_read(cfg.template, cfg.prepare))  # the same key a run computes
    snap = acquire_cached(src, cfg.runs_dir, allow_paid=allow_trigger, console=Console(stderr=True))
    paths = list(snap.paths)
    if not opts["ids"]:
        random.Random(opts["seed"]).shuffle(paths)
    records = sources.iter_records(sources.reading_config(src, snap.root), paths)
    tally = Tally()
    chosen = picked(records, opts["ids"], tally) if opts["ids"] else sampled(records, opts["n"], opts["seed"], tally)
    from .preview_grounding import PreviewGrounding
    grounding = PreviewGrounding(cfg, tasks, tally.records)   # its vocabulary: the records read
    shown = 0
    for item in chosen:
        fields = dict(item.fields)
        repairs = list(cleaner.clean(fields))
        for task in tasks:
            try:
                task.check(fields)
                messages = task.render(fields)
            except Invalid as exc:
                tally.unrendered[f"{task.name} ({exc.reason})"] += 1
                continue
            if task.teacher:   # the teacher writes the user turn: its questions (cached, or asked with --allow-teacher)
                from .teacher.preview import teacher_examples
                written, note = teacher_examples(cfg, task, item.id, messages, allow_teacher, Console(stderr=True))
                for k, each in enumerate(written):
                    show(item.id, f"{task.name} {note or f'teacher q{k + 1}'}", each, chat, repairs, sectioning(fields))
                shown += 1
                continue
            show(item.id, task.name, messages, chat, repairs, sectioning(fields))
            note = grounding.note(messages)
            if note:
                console.print(note)
            shown += 1
    tally.print(shown)
    grounding_summary(grounding, tasks, cleaner, tally.records)
    return 0


def grounding_summary(grounding, tasks, cleaner, records: list[dict]) -> None:
    """Counts by kind of what the targets state that their prompts do not, over every record read."""
    from .preview_grounding import lines
    from .prepare.render import Invalid
    if grounding.policy == "off":
        return
    rendered = []
    for fields in records:
        fields = dict(fields)
        cleaner.clean(fields)
        for task in tasks:
            try:
                task.check(fields)
                rendered.append(task.render(fields))
            except Invalid:
                continue
    for line in lines(grounding.summary(rendered), len(records)):
        console.print(line)


def own_args(args: list[str]) -> tuple[dict, list[str]]:
    """preview's own `n=`, `seed=`, `ids=` (not config keys), and the Hydra overrides."""
    opts: dict = {"n": 5, "seed": 0, "ids": []}
    rest = []
    for a in args:
        key, _, value = a.partition("=")
        if key in ("n", "seed") and value:
            if not value.lstrip("-").isdigit():
                raise WebtuneError(f"preview: {a!r}: {key} takes a whole number, e.g. {key}=5")
            opts[key] = int(value)
        elif key in ("ids", "id") and value:
            opts["ids"] += [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        else:
            rest.append(a)
    return opts, rest


class Tally:
    """What was read on the way: rejections by reason, and how each page was cut into sections."""

    def __init__(self):
        self.rejected: collections.Counter = collections.Counter()     # by the source, by reason
        self.unrendered: collections.Counter = collections.Counter()   # a task the record cannot render
        self.read = 0
        self.pages: dict[str, tuple[str, int]] = {}   # page id -> (sectioned_by, sections)
        self.records: list[dict] = []                 # every record read (their fields)

    def saw(self, item) -> bool:
        """Count one item; True when it is a record to show."""
        self.read += 1
        if not isinstance(item, Rejection):
            self.records.append(item.fields)   # for the grounding summary
        if isinstance(item, Rejection):
            self.rejected[item.reason] += 1
            return False
        by = item.fields.get("sectioned_by")
        if by:
            self.pages[item.group or item.id] = (by, item.fields.get("sections") or 1)
        return True

    def print(self, shown: int) -> None:
        out = Console(highlight=False)
        out.print(f"{shown} example(s) shown from {self.read:,} record(s) read.")
        if self.rejected:
            out.print("rejected by the source: " + ", ".join(f"{n} {r}" for r, n in self.rejected.most_common()))
        if self.unrendered:
            out.print("tasks not rendered (the record lacks what they need): "
                      + ", ".join(f"{n} {r}" for r, n in self.unrendered.most_common()))
        if self.pages:
            by_size = sorted(p for p, (by, _) in self.pages.items() if by == "size")
            at_heads = len(self.pages) - len(by_size)
            sections = sum(n for _, n in self.pages.values())
            line = f"pages read: {len(self.pages)}, {sections} section(s); {at_heads} cut at their headings"
            if by_size:
                line += (f", [yellow]{len(by_size)} cut by size only (no headings found)[/yellow]: "
                         + ", ".join(by_size[:5]) + (" ..." if len(by_size) > 5 else ""))
            out.print(line)


def sampled(records, n: int, seed: int, tally: Tally) -> list:
    """n records drawn (reservoir sampling, seeded) from the first SCAN_PER_SHOWN * n read, in read order."""
    rng = random.Random(seed)
    pool: list = []
    seen = 0
    for item in records:
        if not tally.saw(item):
            continue
        seen += 1
        if len(pool) < n:
            pool.append((seen, item))
        else:
            k = rng.randrange(seen)
            if k < n:
                pool[k] = (seen, item)
        if seen >= SCAN_PER_SHOWN * max(n, 1):
            break
    return [item for _, item in sorted(pool, key=lambda p: p[0])]


def picked(records, ids: list[str], tally: Tally) -> list:
    """The records named (a page's id names each of its sections), in read order."""
    wanted = set(ids)
    found, named = [], set()
    for item in records:
        if not tally.saw(item):
            if item.id in wanted:
                named.add(item.id)
            continue
        page = item.id.rsplit("/s", 1)[0] if "/s" in item.id.rsplit("#", 1)[-1] else item.id
        hit = item.id if item.id in wanted else page if page in wanted else None
        if hit:
            found.append(item)
            named.add(hit)
        elif named == wanted and found:
            break
    missing = [i for i in ids if i not in named]
    if missing:
        raise WebtuneError(f"preview: no record {missing[0]!r} in the source"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                           + "; ids look like docs:page.html#1/s2 (see `webtune ledger RUN`)")
    return found


def sectioning(fields: dict) -> str:
    """` · 2/7 at headings` for a page's section (of 7, the page cut at its headings, or by size when
    it has none); empty for any other record."""
    by = fields.get("sectioned_by")
    if not by:
        return ""
    return f" · {fields.get('section')}/{fields.get('sections')} {'at headings' if by == 'headings' else 'by size'}"


def show(record_id: str, task: str, messages: list[dict], chat, repairs, note: str = "") -> None:
    body = Text()
    title = f"{record_id} · {task}{note}"
    if chat is None:
        for m in messages:
            body.append(f"{m['role']}: ", style="bold")
            body.append(m["content"] + "\n", style="green" if m["role"] == "assistant" else "")
    else:
        ids, labels = chat.encode(messages)
        trained = sum(1 for x in labels if x != -100)
        title += f" · {len(ids)} tokens, {trained} trained"
        for tok_id, lab in zip(ids, labels):
            piece = chat.tok.decode([tok_id])
            body.append(piece, style="bold green" if lab != -100 else "dim")
    if repairs:
        title += f" · repaired: {', '.join(map(str, repairs))}"
    console.print(Panel(body, title=title, title_align="left"))
