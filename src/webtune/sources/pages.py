"""A page as sections: one sub-record per section of its Markdown text, split by heading.

`source.pages` (PagesConfig), shared by the files and urls sources:
  split: none      the page is one record (id `<source>:<file>#1`)
  split: section   one sub-record per section, id `<page id>/s<N>` (N from 1, in page order), with
                   `page_title`, `section_title`, `section_path` (the heading trail, the page title
                   first), `text` (the section's Markdown without its own heading), `level`, and
                   the page's metadata (`title`, `url`, `file`, `date`, ...), and how the page
                   was cut (`sectioned_by`: `headings`, or `size` when it has none below its title).
A section shorter than `min_chars` is merged into its neighbour (a heading with no text of its
own only names its subsections, in their `section_path`); one longer than `max_chars` is split
into parts (`part`, `parts`) between blocks, a paragraph longer than that between sentences;
code blocks, tables and list items are never cut. The ledger folds the sub-records into the
page's one line (the page is the counting unit).

Every page record (or the first section) also gets the page's `lead` paragraph, when it has a
real one (prose of whole sentences before the first subheading), and its `outline` (the titles
of its top sections): the summary task renders only where `lead` is present.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

from ..config import plain
from ..errors import WebtuneError
from ..prose import Block, blocks, ends_sentence, sentences
from ..records import Record

SPLITS = ("none", "section")
LEAD_MIN_CHARS = 80
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+[.)]) ", re.M)
_PAGE_ONLY = ("text", "headings")


@dataclass
class Section:
    title: str
    level: int
    path: list[str]
    blocks: list[Block] = field(default_factory=list)
    part: int = 1
    parts: int = 1

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


def settings(cfg):
    """source.pages as plain attributes (checked), or None when the source has no such block."""
    if cfg is None:
        return None
    cfg = plain(cfg)
    check(cfg)
    return cfg


def check(cfg) -> None:
    if cfg.split not in SPLITS:
        raise WebtuneError(f"source.pages.split={cfg.split!r} is not one of {', '.join(SPLITS)}")
    if cfg.max_chars and cfg.min_chars > cfg.max_chars:
        raise WebtuneError(f"source.pages.min_chars={cfg.min_chars} is over max_chars={cfg.max_chars}; "
                           f"lower min_chars or raise max_chars")


def page_records(page_id: str, source: str, fields: dict, cfg, repairs: list[str],
                 group: str | None = None) -> Iterator[Record]:
    """The page as one record, or (split: section) as its sections' sub-records."""
    page_blocks = blocks(fields.get("text") or "")
    fields = {**fields, **lead_fields(page_blocks, fields.get("title"))}
    if cfg is None or cfg.split == "none":
        yield Record(page_id, source, fields, group=group, repairs=repairs)
        return
    meta = {k: v for k, v in fields.items() if k not in _PAGE_ONLY and k not in ("lead", "outline")}
    parts = split(page_blocks, fields.get("title") or "", cfg.min_chars, cfg.max_chars, fields.get("language"))
    by = sectioned_by(page_blocks)
    for n, sec in enumerate(parts, 1):
        sub = {**meta, "page_title": fields.get("title"), "section_title": sec.title,
               "section_path": sec.path, "text": sec.text, "level": sec.level,
               "section": n, "sections": len(parts), "part": sec.part, "parts": sec.parts, "sectioned_by": by}
        if n == 1 and "lead" in fields:
            sub["lead"], sub["outline"] = fields["lead"], fields["outline"]
        yield Record(f"{page_id}/s{n}", source, sub, group=group or page_id, repairs=repairs if n == 1 else [])


# ---------------------------------------------------------------- sections
def sectioned_by(page_blocks: list[Block]) -> str:
    """"headings" when the page has a heading below its title, else "size" (cut by max_chars only):
    preview and the report show it, so a page whose headings were not found is seen."""
    for i, block in enumerate(page_blocks):
        if block.kind == "heading" and (block.level > 1 or i > 0):
            return "headings"
    return "size"


def split(page_blocks: list[Block], page_title: str, min_chars: int = 0, max_chars: int = 0,
          language: str | None = None) -> list[Section]:
    """The page's sections, tiny ones merged, long ones split into parts."""
    sections = _merge_tiny(_by_heading(page_blocks, page_title), min_chars, max_chars)
    return [part for sec in sections for part in _split_long(sec, max_chars, language or "en")]


def _by_heading(page_blocks: list[Block], page_title: str) -> list[Section]:
    """One section per heading (the lead before the first subheading is the page's own section);
    a heading with no text before its next heading makes an empty section (merged away later)."""
    root = page_title or next((b.heading for b in page_blocks if b.kind == "heading"), "")
    current = Section(root, 1, [root])
    out, trail = [], []  # trail: (level, title) of the headings above the current one
    for i, block in enumerate(page_blocks):
        if block.kind != "heading":
            current.blocks.append(block)
            continue
        if block.level == 1 and not out and not current.blocks:
            continue  # the page's own title
        if current.blocks or out:
            out.append(current)
        trail = [t for t in trail if t[0] < block.level] + [(block.level, block.heading)]
        current = Section(block.heading, block.level, [root] + [t for _, t in trail])
    if current.blocks:
        out.append(current)
    return out


def _merge_tiny(sections: list[Section], min_chars: int, max_chars: int) -> list[Section]:
    """A section under `min_chars` joins the one before it (its heading, and those of the empty
    sections between them, kept as Markdown headings, so it stays a span of the page), or takes
    in the one after it when it is the tiny one, if the result stays within `max_chars`. A heading
    with no text of its own makes no section: it names its subsections, in their `section_path`."""
    out: list[Section] = []
    between: list[Section] = []  # empty sections since the last one kept
    for sec in sections:
        if not sec.blocks:
            between.append(sec)
            continue
        prev = out[-1] if out else None
        joined = [_heading(s) for s in between + [sec]] + sec.blocks
        size = len(sec.text) + sum(len(b.text) + 2 for b in joined[:len(between) + 1])
        if min_chars and prev is not None and (len(sec.text) < min_chars or len(prev.text) < min_chars) \
                and (not max_chars or len(prev.text) + 2 + size <= max_chars):
            prev.blocks += joined
        else:
            out.append(sec)
        between = []
    return out


def _heading(sec: Section) -> Block:
    return Block("heading", "#" * sec.level + " " + sec.title, sec.level)


def _split_long(sec: Section, max_chars: int, language: str) -> list[Section]:
    if not max_chars or len(sec.text) <= max_chars:
        return [sec]
    groups: list[list[Block]] = [[]]
    for unit in _glued(_pieces(sec.blocks, max_chars, language)):
        size = sum(len(b.text) + 2 for b in groups[-1])
        if groups[-1] and size + sum(len(b.text) + 2 for b in unit) - 2 > max_chars:
            groups.append([])
        groups[-1].extend(unit)
    return [Section(sec.title, sec.level, sec.path, g, k, len(groups)) for k, g in enumerate(groups, 1)]


def _glued(pieces: Iterator[Block]) -> Iterator[list[Block]]:
    """The blocks in runs that stay in one part: a paragraph ending in a colon ("For example:")
    with the block it introduces."""
    run: list[Block] = []
    for block in pieces:
        run.append(block)
        if not (block.kind == "paragraph" and block.text.rstrip().endswith(":")):
            yield run
            run = []
    if run:
        yield run


def _pieces(section_blocks: list[Block], max_chars: int, language: str) -> Iterator[Block]:
    """The blocks, with a paragraph over `max_chars` cut between sentences and a list between
    items; code, tables and the rest stay whole (they cannot be cut cleanly)."""
    for block in section_blocks:
        if len(block.text) <= max_chars:
            yield block
        elif block.kind == "paragraph":
            yield from _grouped(sentences(block.text, language), " ", "paragraph", max_chars)
        elif block.kind in ("bullet_list", "ordered_list"):
            starts = [m.start() for m in _LIST_ITEM.finditer(block.text)] or [0]
            items = [block.text[a:b] for a, b in zip(starts, starts[1:] + [len(block.text)])]
            yield from _grouped(items, "", block.kind, max_chars)
        else:
            yield block


def _grouped(items: list[str], sep: str, kind: str, max_chars: int) -> Iterator[Block]:
    group: list[str] = []
    for item in items:
        if group and len(sep.join(group + [item]).rstrip()) > max_chars:
            yield Block(kind, sep.join(group).rstrip())
            group = []
        group.append(item)
    if group:
        yield Block(kind, sep.join(group).rstrip())


# ---------------------------------------------------------------- lead paragraph
def lead_fields(page_blocks: list[Block], title: str | None) -> dict:
    """{lead, outline} when the page opens with a real lead paragraph, else {}."""
    top = [b for b in page_blocks if b.kind == "heading" and b.level > 1]
    lead = _lead(page_blocks)
    if not lead:
        return {}
    shallowest = min((b.level for b in top), default=0)
    return {"lead": lead, "outline": [b.heading for b in top if b.level == shallowest]}


def _lead(page_blocks: list[Block]) -> str | None:
    """The page's first paragraph before any subheading, code or list (short notes and
    `**Label:**` lines skipped), when it is prose of whole sentences: not one that leads into what
    follows with a colon."""
    for i, block in enumerate(page_blocks):
        if block.kind == "heading" and (block.level > 1 or i > 0):
            return None
        if block.kind == "heading":
            continue
        if block.kind != "paragraph":
            return None
        text = block.text
        if len(text) < LEAD_MIN_CHARS or text.startswith(("**", "`", "|")):
            continue
        return text if ends_sentence(text, strict=True) else None
    return None
