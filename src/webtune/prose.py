"""Prose units shared by the sources and the Jinja filters: Markdown blocks, sentences, titles.

A cut in a training target must fall where the source text itself has a boundary: between two
Markdown blocks (paragraph, list, table, code block, heading) or after a sentence inside a
paragraph. Blocks come from markdown-it's block parser (so a `#` line inside a code block is
never taken for a heading); sentences from sentencex (abbreviations such as "e.g." and
numbers such as "3.5" are not sentence ends). Code, tables and lists are never cut inside.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

PERMALINK_SIGNS = "¶§🔗⚓"
_SEPARATORS = re.compile(r"\s+[—–|·•-]\s+")
_SITE_WORDS = re.compile(r"(?i)\b(documentation|docs|manual|reference|wiki|blog)\s*$")
_SPLITTABLE = {"paragraph"}


@dataclass
class Block:
    kind: str       # paragraph, heading, fence, code_block, bullet_list, ordered_list, table, blockquote, hr, html_block
    text: str       # the block's Markdown source
    level: int = 0  # a heading's level (1-6)

    @property
    def heading(self) -> str:
        """A heading block's text, without its `#` marks."""
        return self.text.lstrip("#").strip() if self.kind == "heading" else ""


@lru_cache(maxsize=1)
def _markdown():
    from markdown_it import MarkdownIt
    return MarkdownIt("commonmark").enable("table")


def blocks(text: str) -> list[Block]:
    """The top-level Markdown blocks of `text`, in order, each with its own source text."""
    lines = text.split("\n")
    out = []
    for tok in _markdown().parse(text):
        if tok.level != 0 or tok.map is None or tok.nesting == -1:
            continue
        start, end = tok.map
        kind = tok.type.removesuffix("_open")
        level = int(tok.tag[1]) if kind == "heading" else 0
        out.append(Block(kind, "\n".join(lines[start:end]).rstrip(), level))
    return out


def sentence_ends(paragraph: str, language: str = "en") -> list[int]:
    """Offsets just after each sentence of one paragraph (the last is its length)."""
    from sentencex import get_sentence_boundaries

    ends = [b["end_index"] for b in get_sentence_boundaries(language or "en", paragraph)
            if b["boundary_symbol"] and b["end_index"] < len(paragraph.rstrip())]
    return ends + [len(paragraph)]


def sentences(paragraph: str, language: str = "en") -> list[str]:
    """One paragraph as its sentences (each stripped); joined with spaces they give it back."""
    start, out = 0, []
    for end in sentence_ends(paragraph, language):
        if paragraph[start:end].strip():
            out.append(paragraph[start:end].strip())
        start = end
    return out


def units(text: str, language: str = "en") -> list[tuple[str, str]]:
    """The uncuttable pieces of `text` in order, as (separator before it, piece): the sentences of
    each paragraph (joined by a space), every other block whole (blocks joined by a blank line)."""
    out: list[tuple[str, str]] = []
    for block in blocks(text):
        sep = "\n\n"
        if block.kind in _SPLITTABLE:
            for sentence in sentences(" ".join(block.text.split()), language):
                out.append((sep, sentence))
                sep = " "
        else:
            out.append((sep, block.text))
    return out


def join_units(pieces: list[tuple[str, str]]) -> str:
    return "".join(sep + piece for sep, piece in pieces)[len(pieces[0][0]):] if pieces else ""


def truncate_sentences(text: str, chars: int, language: str = "en") -> str:
    """The longest start of `text` of at most `chars` characters that ends at a sentence or block
    boundary; at least the first block or sentence, even when that alone is longer, except a
    sentence over twice `chars` (unpunctuated text such as auto-captions), cut between words."""
    if len(text) <= chars:
        return text
    pieces = units(text, language)
    taken, size = [], 0
    for sep, piece in pieces:
        grow = len(piece) + (len(sep) if taken else 0)
        if taken and size + grow > chars:
            break
        taken.append((sep, piece))
        size += grow
    first = taken[0][1] if taken else ""
    if len(taken) == 1 and len(first) > 2 * chars and not first.startswith(("```", "~~~", "|")):
        return first[:first.rfind(" ", 0, chars + 1)].rstrip() if " " in first[:chars + 1] else first[:chars]
    return join_units(taken)


def first_sentences(text: str, n: int = 1, language: str = "en") -> str:
    """The first `n` sentences of `text` (a non-paragraph block counts as one)."""
    return join_units(units(text, language)[:max(n, 0)])


def ends_sentence(text: str, strict: bool = False) -> bool:
    """Does this text end where a sentence ends: a full stop, ?, ! or … (and, unless `strict`, a
    colon or semicolon, which in documentation lead into a list or a code block)?"""
    marks = ".!?…" if strict else ".!?…:;"
    return bool(re.search(rf"[{marks}][\"'”’)\]*_`]*$", text.rstrip()))


def strip_permalinks(text: str) -> str:
    """Permalink signs that documentation generators append to headings (`Title¶`)."""
    return text.translate({ord(c): None for c in PERMALINK_SIGNS}).strip()


def clean_title(title: str, site: str | None = None) -> str:
    """A page title without its decorations: permalink signs, and a trailing ` — Site name`
    (the site's name when known, else a last part naming documentation, docs, a manual...)."""
    title = " ".join(strip_permalinks(title or "").split())
    cuts = list(_SEPARATORS.finditer(title))
    if cuts:
        last = title[cuts[-1].end():]
        if (site and last.casefold() == " ".join(site.split()).casefold()) or _SITE_WORDS.search(last):
            return title[:cuts[-1].start()]
    return title
