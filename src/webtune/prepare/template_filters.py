"""The Jinja filters of every template, in one place (registered in render's environment).

  {{ text | first_sentences(2) }}        the first two sentences (a code block or table counts as one)
  {{ text | truncate_sentences(1500) }}  at most 1,500 characters, cut only between sentences or blocks
                                          (never inside a sentence, a code block or a table; no `…`)
  {{ title | clean_title }}              without permalink signs and a ` — Site name` suffix
  {{ title | subject }}                  what a page is about: `argparse` for "`argparse` — Parser for..."
  {{ heading | code_name }}              the API name a heading is about ("The add_argument() method"
                                          -> "add_argument()"), or "" when it names none

and one test: `{% if heading is match('(?i)^how to ') %}` (re.search).

The text helpers live in `webtune.prose`, shared with the sources that split pages.
"""
from __future__ import annotations

import re

from ..prose import clean_title, first_sentences, truncate_sentences

_SUBJECT_SEP = re.compile(r"\s+[—–]\s+|:\s+")
_CODE_NAME = re.compile(r"`([^`]+)`|\b([A-Za-z_][\w.]*\(\))|^([a-z_][\w.]*[a-z0-9_])$")


def subject(title: str) -> str:
    """The part of a page title before its ` — explanation`."""
    title = clean_title(title or "")
    return _SUBJECT_SEP.split(title, maxsplit=1)[0].strip() or title


_SIGNATURE = re.compile(r"^((?:[a-z]+\s+)*)([A-Za-z_][\w.]*)\s*(\()?")
_TYPE_WORDS = {"class", "exception"}


def code_name(heading: str) -> str:
    """"The add_argument() method" -> "add_argument()"; "`class collections.Counter([iterable])`"
    -> "collections.Counter"; "`os.access(path, mode)`" -> "os.access()"; "" when no API name."""
    m = _CODE_NAME.search((heading or "").strip())
    name = next((g for g in m.groups() if g), "") if m else ""
    sig = _SIGNATURE.match(name)
    if not sig:
        return name if re.search(r"[A-Za-z]", name) else ""
    is_type = bool(set(sig.group(1).split()) & _TYPE_WORDS)
    return sig.group(2) + ("()" if sig.group(3) and not is_type else "")


FILTERS = {
    "first_sentences": first_sentences,
    "truncate_sentences": truncate_sentences,
    "clean_title": clean_title,
    "subject": subject,
    "code_name": code_name,
}

TESTS = {"match": lambda value, pattern: isinstance(value, str) and re.search(pattern, value) is not None}
