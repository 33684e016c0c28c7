"""Cleaning: repair text fields in place and say what was repaired.

Each repair is cheap to skip: ftfy runs only on non-ASCII text, the HTML parser only on text that
holds a tag or an entity, the whitespace regexes only when a quick scan finds something to fix.
That keeps the common case (clean ASCII text) at a few string scans per field.

Markdown (pages from the HTML sources) is cleaned around its code: fenced code blocks and inline
code spans are left exactly as they are (indentation, `<tags>` shown as code), and outside them
line indentation is kept (nested lists), so only runs of inner spaces, trailing spaces and extra
blank lines are tidied.
"""
from __future__ import annotations

import html
import re
from typing import Any

import ftfy

# Only the mojibake / encoding repairs: no quote uncurling, width folding or NFC, which would
# change legitimate text and be reported as a repair.
_FTFY = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, fix_character_width=False,
                             fix_latin_ligatures=False, normalization=None, explain=False)

_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?/?>|<!--.*?-->", re.S)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")
_BLOCK_TAGS = ("p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5",
               "h6", "section", "article", "header", "footer", "blockquote", "pre", "dd", "dt")
_DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "svg", "head")

_HSPACE = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_SPACE_AROUND_NL = re.compile(r" *\n *")
_MANY_NL = re.compile(r"\n{3,}")
_NEEDS_WS = re.compile(r"[\t\r\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]|  | \n|\n |\n\n\n")
# a fenced code block (its fence possibly indented under a list item), or an inline code span
_CODE = re.compile(r"^([ \t>]*)(`{3,}|~{3,})[^\n]*\n.*?\n\1\2[ \t]*$|(`+)[^`\n].*?\3", re.M | re.S)
_MARKDOWN = re.compile(r"```|~~~|\n {2,}(?:[-*+]|\d+\.) ")
_INNER_HSPACE = re.compile(r"(?<=\S)[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]{2,}|[\t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]")
_TRAILING = re.compile(r"[ \t]+\n")


def fix_unicode(text: str) -> str:
    """Repair mojibake (UTF-8 read as Latin-1/cp1252 and the like)."""
    if text.isascii():
        return text
    return ftfy.fix_text(text, _FTFY)


def looks_like_html(text: str) -> bool:
    return ("<" in text and _TAG.search(text) is not None) or ("&" in text and _ENTITY.search(text) is not None)


def html_to_text(text: str) -> str:
    """Markup inside a field -> its text: scripts and styles dropped, block elements on their own line."""
    if "<" not in text or _TAG.search(text) is None:
        return html.unescape(text)  # entities only
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.fragment_fromstring(text, create_parent="div")
    except (etree.ParserError, ValueError):
        return html.unescape(_TAG.sub(" ", text))
    etree.strip_elements(root, *_DROP_TAGS, etree.Comment, with_tail=False)
    for el in root.iter(*_BLOCK_TAGS):
        el.tail = "\n" + (el.tail or "")
    return root.text_content()


def _tidy_ascii(text: str) -> bool:
    # substring tests run at memchr speed; most fields pass all of them
    return not ("  " in text or "\n" in text or "\t" in text or "\r" in text or "\f" in text or "\v" in text
                or text[:1].isspace() or text[-1:].isspace())


def normalize_whitespace(text: str) -> str:
    """Runs of spaces -> one space, at most one blank line, no spaces at line ends, trimmed."""
    if text.isascii() and _tidy_ascii(text):
        return text
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _NEEDS_WS.search(text) is not None:
        text = _HSPACE.sub(" ", text)
        text = _SPACE_AROUND_NL.sub("\n", text)
        text = _MANY_NL.sub("\n\n", text)
    return text.strip()


def is_markdown(text: str) -> bool:
    """Text with fenced code or indented list items: cleaned around its code, indentation kept."""
    return _MARKDOWN.search(text) is not None


def outside_code(text: str, fn) -> str:
    """`fn` applied to the parts of Markdown `text` outside code blocks and code spans."""
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out += [fn(text[pos:m.start()]), m.group(0)]
        pos = m.end()
    out.append(fn(text[pos:]))
    return "".join(out)


def without_code(text: str, spans: bool = True) -> str:
    """Markdown `text` with its fenced code blocks removed (code repeats lines by nature), and
    its inline code spans too unless `spans` is False."""
    if not ("```" in text or "~~~" in text or (spans and "`" in text)):
        return text
    return _CODE.sub(lambda m: "" if spans or m.group(2) else m.group(0), text)


def _tidy_prose(part: str) -> str:
    part = _INNER_HSPACE.sub(" ", part.replace("\r\n", "\n"))
    return _MANY_NL.sub("\n\n", _TRAILING.sub("\n", part))


def normalize_markdown(text: str) -> str:
    """normalize_whitespace for Markdown: code untouched, line indentation kept."""
    return outside_code(text, _tidy_prose).strip()


class Cleaner:
    """Applies the configured repairs to a record's string fields (recursing into lists and dicts)."""

    def __init__(self, cfg):
        self.fix_unicode = bool(cfg.fix_unicode)
        self.strip_html = bool(cfg.strip_html)
        self.normalize_whitespace = bool(cfg.normalize_whitespace)
        self.fields = list(cfg.fields or [])

    def clean_text(self, text: str, repairs: set[str], markdown: bool = False) -> str:
        """One text; `markdown`: a page's Markdown from the HTML sources, whose `<...>` is literal
        text (the markup was read already), so it is never stripped and indentation is kept."""
        if "\x00" in text:   # always: a NUL is padding or a broken export, never text (docs/hostile-input.md)
            text = text.replace("\x00", "")
            repairs.add("nul_removed")
        ascii_ = text.isascii()
        if self.fix_unicode and not ascii_:
            fixed = fix_unicode(text)
            if fixed != text:
                repairs.add("mojibake_fixed")
                text = fixed
        code = "`" in text or "~~~" in text  # markup shown as code is the text itself: left alone
        if self.strip_html and not markdown and ("<" in text or "&" in text) and looks_like_html(_CODE.sub(" ", text) if code else text):
            text = outside_code(text, html_to_text) if code else html_to_text(text)
            repairs.add("html_stripped")
            ascii_ = False
        if self.normalize_whitespace and not (ascii_ and _tidy_ascii(text)):
            text = normalize_markdown(text) if markdown or is_markdown(text) else normalize_whitespace(text)
        return text

    def _clean_value(self, value: Any, repairs: set[str], markdown: bool = False) -> Any:
        if isinstance(value, str):
            return self.clean_text(value, repairs, markdown)
        if isinstance(value, list):
            return [self._clean_value(v, repairs, markdown) for v in value]
        if isinstance(value, dict):
            return {k: self._clean_value(v, repairs, markdown) for k, v in value.items()}
        return value

    def clean(self, fields: dict, names: list[str] | None = None) -> dict[str, list[str]]:
        """Clean `fields` in place: the configured fields, else `names`, else every field.
        Returns {repair reason: [field names]}."""
        found: dict[str, list[str]] = {}
        repairs: set[str] = set()
        markdown = fields.get("text_format") == "markdown"  # set by the HTML sources
        for name in (self.fields or names or list(fields)):
            value = fields.get(name)
            if isinstance(value, str):
                fields[name] = self.clean_text(value, repairs, markdown)
            elif isinstance(value, (list, dict)):
                fields[name] = self._clean_value(value, repairs, markdown)
            else:
                continue
            if repairs:
                for reason in repairs:
                    found.setdefault(reason, []).append(name)
                repairs.clear()
        return found
