"""Main content of an HTML page as Markdown: title, text, headings and metadata, or why there is none.

Used by the files source (`.html` files) and the urls source (fetched pages). The page's
charset is taken from the HTTP header, else the page's own declaration, else UTF-8 with a
windows-1252 fallback (the usual mislabelled legacy page); a fallback is noted as a repair.

trafilatura decides what the main content is (navigation, sidebars and footers dropped) and
returns it as a tree of headings, paragraphs, lists, tables, quotes and code; `markdown` below
writes that tree as Markdown: headings with their levels, paragraphs re-flowed onto one line,
lists (nested, with their code), tables, links' text. trafilatura's own Markdown writer is not
used because it keeps every source line break, drops blank lines inside code and flattens some
code blocks onto one line (measured in bench/pages.py): each `<pre>` is swapped for a
placeholder word before extraction and written back verbatim, as a fenced block, after it.
Permalink anchors (`<a class="headerlink">¶</a>` and the like) are removed before extraction,
and title decorations (` — Site name`) by `prose.clean_title`.

Headings are taken from the page's own HTML, not from what the extractor keeps of them (it drops
them on some generators' pages: every `<h1>`/`<h2>` of Debian's SQLite docs): each `<h1>`-`<h6>`,
and the heading-like elements doc generators write (`_heading_like`: SQLite's `fancy_title`,
Sphinx's `rubric`, Doxygen's title, ARIA `role="heading"`), is swapped for a placeholder
paragraph, which the extractor keeps like any paragraph, and written back as a Markdown heading
of its level (section numbers such as `1.2.` dropped). A page that uses `<h1>` for its numbered
sections gets its title as the one level-1 heading and the rest one level down. Site chrome
(navigation, sidebars, menus, tables of contents, footers: `_CHROME`) is removed before
extraction, and trailing footer lines (`This page last modified...`, `© Copyright...`) after it.
The title is the generator's title element, else the page's one `<h1>`, else `<title>`.
"""
from __future__ import annotations

import codecs
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..prose import PERMALINK_SIGNS, clean_title, strip_permalinks

# <meta charset="x"> or <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
# WHATWG: browsers decode these labels as windows-1252, which is a superset.
# Dates from the page's markup only: guessing from the body text is slow and finds copyright years.
_DATES = {"extensive_search": False, "original_date": True}
_AS_CP1252 = {"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "us-ascii", "ascii", "cp819"}


@dataclass
class Page:
    """What extraction gives: `fields` for a Record, or a `reason` (and `detail`) for a Rejection."""

    fields: dict | None = None
    reason: str = ""
    detail: str = ""
    repairs: list[str] = field(default_factory=list)


def declared_charset(data: bytes, header_charset: str | None = None) -> str | None:
    """The charset the server or the page declares (HTTP header first), as a Python codec name."""
    label = header_charset
    if not label:
        m = _META_CHARSET.search(data[:4096])
        label = m.group(1).decode("ascii", "replace") if m else None
    if not label:
        return None
    label = label.strip().lower()
    if label in _AS_CP1252:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode(data: bytes, header_charset: str | None = None) -> tuple[str, list[str]]:
    """Bytes to text honouring the declared charset; returns the text and any repairs made."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", "replace"), []
    charset = declared_charset(data, header_charset)
    if charset:
        try:
            return data.decode(charset), []
        except UnicodeDecodeError as e:
            text = data.decode(charset, "replace")
            return text, [f"bad_bytes: invalid {charset} at byte {e.start}, replaced"]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace"), ["charset_guessed: no charset declared and not UTF-8, read as windows-1252"]


def extract(data: bytes, url: str | None = None, header_charset: str | None = None) -> Page:
    """Extract the main content of one page."""
    import trafilatura  # heavy import, only for the stages that read HTML

    if not data.strip():
        return Page(reason="empty_file", detail="the page is empty")
    text, repairs = decode(data, header_charset)
    try:
        tree, held = _prepared(text)
        if tree is None:  # not HTML at all (binary garbage): trafilatura's own loader refuses it
            return Page(reason="no_main_content", detail="no main text found (not HTML, or empty)")
        doc = trafilatura.bare_extraction(tree, url=url, with_metadata=True, include_comments=False,
                                          include_tables=True, include_formatting=True, favor_recall=True,
                                          date_extraction_params=_DATES)
    except Exception as e:  # lxml can choke on truly broken markup; that is a rejection, not a crash
        return Page(reason="broken_html", detail=f"{type(e).__name__}: {e}")
    if doc is None or doc.body is None:
        return Page(reason="no_main_content", detail="no main text found (empty body, or script only)")
    body, headings = markdown(doc.body, held)
    body = _without_footer(body)
    if not body:
        return Page(reason="no_main_content", detail="no main text found (empty body, or script only)")
    title = (held.title or clean_title(held.title_tag, doc.sitename) or clean_title(doc.title or "", doc.sitename)
             or (headings[0]["title"] if headings else None))
    fields = {
        "title": title or None,
        "text": body,
        "text_format": "markdown",  # prepare's cleaning: `<...>` in it is literal text, indentation kept
        "headings": headings,
        "url": url or doc.url,
        "date": doc.date,
        "description": doc.description,
        "sitename": doc.sitename,
        "language": doc.language,
    }
    return Page(fields=fields, repairs=repairs)


# ---------------------------------------------------------------- before extraction
_PLACEHOLDER = "WEBTUNEPRE{:06d}"
_HEAD_PLACEHOLDER = "WEBTUNEHEAD{:06d}"
_PLACEHOLDER_RE = re.compile(r"WEBTUNE(PRE|HEAD)(\d{6})")
_CODE_TAGS = ("code", "tt", "kbd", "samp")
# Site chrome, never page content: navigation, sidebars, menus, tables of contents, footers
# (Sphinx, MkDocs, Javadoc, Doxygen and SQLite's own names among them).
_CHROME_CLASSES = ("footer", "sphinxsidebar", "related", "menu", "searchmenu", "navbar", "breadcrumb",
                   "breadcrumbs", "toc", "fancy_toc", "md-sidebar", "md-footer", "md-header", "md-tabs",
                   "top-nav", "topNav", "bottomNav", "subNav", "sub-nav", "wy-nav-side", "rst-footer-buttons",
                   "navheader", "navfooter", "sidebar", "sr-only", "skip-nav", "skip-link")
_CHROME = ("//nav | //footer | //*[@role='navigation' or @role='contentinfo' or @role='search'] | //*[@id='footer'] | "
           + " | ".join(f"//*[contains(concat(' ', normalize-space(@class), ' '), ' {c} ')]" for c in _CHROME_CLASSES))
_CONTENT = "descendant-or-self::*[self::main or self::article or @role='main']"
_NUMBERED = re.compile(r"^(?:\d+\.)+(?:\d+)?\s+(?=\S)")  # "1.2. ", "3.1 " (Sphinx), not "2.0 release"


def _classes(el) -> list[str]:
    return (el.get("class") or "").split()


def _heading_like(el) -> tuple[int | None, bool]:
    """Doc generators' heading-like elements: (level, names the page title); level 0: one below the
    heading before it. (None, False) for anything else."""
    tag, classes = el.tag, _classes(el)
    if el.get("role") == "heading":                                    # ARIA
        aria = el.get("aria-level") or "2"
        return (int(aria) if aria.isdigit() and 1 <= int(aria) <= 6 else 2), False
    if tag == "div" and classes == ["fancy_title"]:                     # SQLite: the page title
        return 1, True
    if tag in ("h1", "h2") and "title" in classes and "header" in _classes(el.getparent()):  # Javadoc
        return 1, True
    if tag == "div" and classes == ["title"] and "headertitle" in _classes(el.getparent()):  # Doxygen
        return 1, True
    if tag == "p" and "rubric" in classes:                             # Sphinx
        return 0, False
    return None, False


@dataclass
class _Held:
    """What is taken out of the page before extraction and written back after it."""

    code: list[str] = field(default_factory=list)     # <pre> texts, by placeholder number
    heads: list[dict] = field(default_factory=list)   # {level, title}, by placeholder number
    title: str = ""       # the generator's title element, or the page's one unnumbered <h1>
    title_tag: str = ""   # <title>


def _prepared(text: str):
    """The page as an lxml tree with site chrome and permalink anchors removed, each <pre> and
    each heading replaced by a placeholder word; returns (tree, what was held out)."""
    from trafilatura.utils import load_html

    tree = load_html(text)
    if tree is None:
        return None, _Held()
    held = _Held(title_tag=" ".join((tree.findtext(".//title") or "").split()))
    for a in list(tree.iter("a")):
        if _is_permalink(a):
            a.drop_tree()  # keeps the text after it
    _drop_chrome(tree)
    for el in tree.xpath("//section[@id] | //*[contains(concat(' ', normalize-space(@class), ' '), ' section ')][@id]"):
        del el.attrib["id"]   # a section's anchor ("menus", "sharing") is no boilerplate sign to the extractor
    _hold_headings(tree, held)
    _keep_content_lists(tree)
    for pre in list(tree.iter("pre")):
        held.code.append(pre.text_content())
        tail = pre.tail
        pre.clear()
        pre.text, pre.tail = _PLACEHOLDER.format(len(held.code) - 1), tail
    return tree, held


_LAST_MODIFIED = re.compile(r"(?i)^\s*(this page (was )?last (modified|updated)|last updated on)\b")


def _drop_chrome(tree) -> None:
    """Remove navigation, sidebars, menus and footers (a last-modified line too: SQLite's is a plain
    paragraph); never an element holding the main content."""
    stamps = [el for el in tree.iter("p", "div") if _LAST_MODIFIED.match(el.text_content() or "")
              and len(el.text_content()) < 300]
    for el in tree.xpath(_CHROME) + stamps:
        parent = el.getparent()
        if parent is None or el.tag in ("html", "body") or el.xpath(_CONTENT):
            continue
        tail, prev = el.tail, el.getprevious()
        parent.remove(el)
        if tail and tail.strip():  # the text after it stays
            if prev is not None:
                prev.tail = (prev.tail or "") + tail
            else:
                parent.text = (parent.text or "") + tail


def _keep_content_lists(tree) -> None:
    """Unlink the lists that are page content, so the extractor does not drop them for their link
    density (it takes a list of links for navigation): a list inside the page's main content
    element, or one a sentence leads into ("...the following functions:"). Only their links' text
    is written anyway."""
    for lst in tree.xpath("//ul | //ol | //dl"):
        if not (lst.xpath(_MAIN_ANCESTOR) or _led_into(lst)):
            continue
        for a in list(lst.iter("a")):
            a.drop_tag()


_MAIN_ANCESTOR = ("ancestor::*[self::main or self::article or @role='main' or "
                  "contains(concat(' ', normalize-space(@class), ' '), ' body ') or "
                  "contains(concat(' ', normalize-space(@class), ' '), ' md-content ') or "
                  "contains(concat(' ', normalize-space(@class), ' '), ' fancy ')]")


def _led_into(lst) -> bool:
    """Does a sentence ending in a colon come just before the list?"""
    prev = lst.getprevious()
    text = (prev.tail if prev is not None else lst.getparent().text) or ""
    if not text.strip() and prev is not None:
        text = prev.text_content()
    return text.strip().endswith(":")


def _hold_headings(tree, held: _Held) -> None:
    """Each heading (and heading-like element) -> a placeholder paragraph; its level and text held."""
    found = []  # (element, level, names the page title), in page order
    for el in tree.iter():
        if not isinstance(el.tag, str) or (found and any(a is found[-1][0] for a in el.iterancestors())):
            continue
        tag = el.tag
        level, titled = _heading_like(el)
        if level is None and len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            level = int(tag[1])
        if level is None:
            continue
        found.append((el, level or min((found[-1][1] + 1) if found else 2, 6), titled))
    h1s = [el for el, level, titled in found if level == 1 and not titled]
    single = ""
    for el, level, titled in found:
        raw = strip_permalinks(_flat(el.text_content()))
        title = _heading_text(el)
        if not title:
            continue
        if titled:
            held.title = held.title or _plain(title)
        elif len(h1s) == 1 and el is h1s[0] and not _NUMBERED.match(raw) and not el.xpath("ancestor::header|ancestor::a"):
            single = _plain(title)
        if len(h1s) > 1 and not titled:   # <h1> numbers the page's sections: they go one level down
            level = min(level + 1, 6)
        held.heads.append({"level": level, "title": title})
        p = el.makeelement("p", {})
        p.text, p.tail = _HEAD_PLACEHOLDER.format(len(held.heads) - 1), el.tail
        el.getparent().replace(el, p)
    held.title = held.title or single


def _heading_text(el) -> str:
    """A heading's text on one line: code spans kept, permalink signs and section numbers dropped."""
    parts = [el.text or ""]
    for child in el:
        if isinstance(child.tag, str):
            inner = child.text_content()
            code = child.tag in _CODE_TAGS or (child.tag == "a" and len(child) == 1 and child[0].tag in _CODE_TAGS
                                                and not (child.text or "").strip() and not (child[0].tail or "").strip())
            if code and inner.strip():  # the white space around it stays outside the code span
                inner = inner[:len(inner) - len(inner.lstrip())] + _code_span(inner) + inner[len(inner.rstrip()):]
            parts.append(inner)
        parts.append(child.tail or "")
    return _NUMBERED.sub("", strip_permalinks(_flat("".join(parts)))).strip()


def _plain(title: str) -> str:
    """A heading's text as a title: without code span marks."""
    return " ".join(title.replace("`", "").split())


def _is_permalink(a) -> bool:
    label = (a.text_content() or "").strip()
    marked = any(c in (a.get("class") or "") for c in ("headerlink", "anchor", "permalink"))
    return (marked or (a.get("href") or "").startswith("#")) and (label == "" or all(c in PERMALINK_SIGNS + "#" for c in label))


# ---------------------------------------------------------------- after extraction
_FOOTER_LINE = re.compile(r"(?i)^[*_]*(this page (was )?last (modified|updated)|last (modified|updated)( on)?\b|"
                          r"page (last )?(generated|updated)|generated (by|on)\b|built with\b|created using\b|"
                          r"©|\(c\) copyright|copyright ©|© copyright)")


def _without_footer(body: str) -> str:
    """The page's Markdown without trailing footer lines (a last-modified date, a copyright)."""
    parts = body.split("\n\n")
    while parts and len(parts[-1]) < 300 and _FOOTER_LINE.match(parts[-1].strip()):
        parts.pop()
    return "\n\n".join(parts)


# ---------------------------------------------------------------- trafilatura's tree -> Markdown
_INLINE_MARKS = {"#b": "**", "#i": "*", "#u": "", "#t": "`", "#sub": "", "#sup": ""}
_BLOCKS = {"head", "p", "list", "item", "quote", "table", "div", "code", "graphic"}


def markdown(body, held: _Held) -> tuple[str, list[dict]]:
    """The tree trafilatura extracted as Markdown, and its headings ({level, title})."""
    out: list[str] = []
    headings = _Headings()
    _blocks(body, out, headings, held)
    text = "\n\n".join(b for b in out if b.strip())
    # a heading placeholder the extractor left inside a table cell or a link: its title, as text
    return _PLACEHOLDER_RE.sub(lambda m: _plain(held.heads[int(m.group(2))]["title"]) if m.group(1) == "HEAD"
                               else m.group(0), text), list(headings)


class _Headings(list):
    """The headings met so far, and the levels of the API entries being written (nested dl)."""

    def __init__(self):
        super().__init__()
        self.entries: list[int] = []

    def base(self) -> int:
        """The level an API entry's heading sits under: its enclosing entry, else the last real heading."""
        if self.entries:
            return self.entries[-1]
        return next((h["level"] for h in reversed(self) if not h.get("api")), 1)


def _blocks(el, out: list[str], headings: list[dict], held: _Held) -> None:
    """Append the Markdown blocks of `el`'s children (its own text and tails as paragraphs)."""
    # a list item's own text is its content ("<li>Plain text</li>"); a list's or a table's is white space
    pending: list[str] = [el.text or ""] if el.tag not in _BLOCKS or el.tag in ("div", "quote", "item") else []
    for child in el:
        if (child.tag in _BLOCKS and not _inline_code(child)) or _holds_code(child):
            _paragraph(pending, out, held, headings)
            pending = []
            _block(child, out, headings, held)
            pending.append(child.tail or "")
        else:
            pending.append(_inline(child) + (child.tail or ""))
    _paragraph(pending, out, held, headings)


def _block(el, out, headings, held) -> None:
    tag = el.tag
    if tag == "head":
        title = strip_permalinks(_flat(_inline_children(el)))
        if title:
            level = int((el.get("rend") or "h2")[1:] or 2) if (el.get("rend") or "").startswith("h") else 2
            headings.append({"level": level, "title": title})
            out.append("#" * level + " " + title)
    elif tag == "p":
        _paragraph([_inline_children(el)], out, held, headings)
    elif tag == "list" and _holds_heading(el):  # a list used for layout (old Javadoc): its items are blocks
        for item in el.iterchildren("item"):
            _blocks(item, out, headings, held)
    elif tag == "list":
        out.append(_list(el, held, headings))
    elif tag == "table":
        out.append(_table(el))
    elif tag == "quote":
        inner: list[str] = []
        _blocks(el, inner, headings, held)
        # a quoted code block is written as a plain one: documentation quotes code to indent it
        out.extend(b if b.startswith("```") else _prefixed(b, "> ", "> ") for b in inner if b.strip())
    elif tag == "code":
        _paragraph([_text(el)], out, held, headings, block_code=True)
    elif tag == "graphic":
        return
    else:
        _blocks(el, out, headings, held)


def _paragraph(parts: list[str], out: list[str], held: _Held, headings: list[dict],
               block_code: bool = False) -> None:
    """Inline text -> one re-flowed paragraph; a placeholder inside it -> the verbatim code block,
    or the heading it stands for."""
    text = "".join(parts)
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(text):
        _prose(text[pos:m.start()], out, block_code)
        if m.group(1) == "PRE":
            out.append(fence(held.code[int(m.group(2))]))
        else:
            head = held.heads[int(m.group(2))]
            headings.append(dict(head))
            out.append("#" * head["level"] + " " + head["title"])
        pos = m.end()
    _prose(text[pos:], out, block_code)


def _prose(text: str, out: list[str], block_code: bool) -> None:
    if block_code and text.strip():
        out.append(fence(text))
        return
    flat = _flat(text).strip("` ") if text.strip().strip("`") == "" else _flat(text)
    if flat:
        out.append(flat)


def fence(code: str) -> str:
    """A fenced code block holding `code` verbatim (a longer fence when the code holds ```)."""
    code = code.strip("\n")
    ticks = "`" * max(3, max((len(m) + 1 for m in re.findall(r"`{3,}", code)), default=3))
    return f"{ticks}\n{code}\n{ticks}"


def _list(el, held: _Held, headings: list[dict]) -> str:
    """A list as Markdown. In a definition list an API entry's signature (`f(x)`, `mod.attr`) is a
    heading one level below the heading it stands under, so each function is its own section."""
    ordered = el.get("rend") == "ol"
    lines = []
    number, entry = 0, None
    for item in el.iter("item"):
        if item.getparent() is not el:
            continue
        rend = item.get("rend") or ""
        if rend.startswith("dt"):      # a definition list: the term on its own line, then its text
            term, entry = _term(item, headings)
            lines.append(term)
            continue
        inner: list[str] = []
        dd = rend.startswith("dd")
        if dd and entry:
            headings.entries.append(entry)
        _blocks(item, inner, headings if dd else _Headings(), held)
        if dd and entry:
            headings.entries.pop()
        inner = [b for b in inner if b.strip()]
        if not inner:
            continue
        if rend.startswith("dd"):
            lines.extend(inner)
            continue
        number += 1
        marker = f"{number}. " if ordered else "- "
        # a nested list sits right under its item's text (a tight list), other blocks a blank line apart
        joined = inner[0] + "".join(("\n" if _LIST_START.match(b) else "\n\n") + b for b in inner[1:])
        lines.append(_prefixed(joined, marker, " " * len(marker)))
    return "\n\n".join(lines) if el.get("rend") == "dl" else "\n".join(lines)


_LIST_START = re.compile(r"^(?:- |\d+\. )")


def _term(item, headings: "_Headings") -> tuple[str, int | None]:
    """A definition list's term: an API signature as a code heading (and its level), a word or
    phrase in bold (and None)."""
    term = strip_permalinks(_flat(_text(item)))
    if not term or not _API.search(term):
        return (f"**{term}**" if term else ""), None
    level = min(headings.base() + 1, 6)
    headings.append({"level": level, "title": _code_span(term), "api": True})
    return "#" * level + " " + _code_span(term), level


_API = re.compile(r"^(?:[a-z]+ )*[A-Za-z_][\w]*(?:\.[\w]+)*(?:\(.*\))?(?: -> .*)?$|^[\w.]+\(.*\)")


def _prefixed(block: str, first: str, rest: str) -> str:
    """A block under a list marker or a quote sign: the first line after `first`, the others after `rest`."""
    lines = block.split("\n")
    return "\n".join([first + lines[0]] + [(rest + ln) if ln else rest.rstrip() for ln in lines[1:]])


def _table(el) -> str:
    rows = []
    for row in el.iter("row"):
        cells = [_flat(_inline_children(c)).replace("|", "\\|") for c in row.iter("cell")]
        if cells:
            rows.append(cells)
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["|" + "|".join(f" {c} " if c else " " for c in r) + "|" for r in rows]
    lines.insert(1, "|" + "---|" * width)
    return "\n".join(lines)


def _holds_code(el) -> bool:
    """An inline element holding a code block or a heading (the extractor nests them so): a block."""
    return el.tag in ("hi", "ref", "span") and _PLACEHOLDER_RE.search("".join(el.itertext())) is not None


def _inline_code(el) -> bool:
    """A `code` element on one line: the page's inline `<code>` (every `<pre>` is a placeholder)."""
    if el.tag != "code":
        return False
    text = _text(el)
    return "\n" not in text.strip() and len(text) < 200 and not _PLACEHOLDER_RE.search(text)


def _holds_heading(el) -> bool:
    return any("WEBTUNEHEAD" in t for t in el.itertext())


def _inline_children(el) -> str:
    return (el.text or "") + "".join(_inline(c) + (c.tail or "") for c in el)


def _inline(el) -> str:
    """An inline element as Markdown: emphasis, code spans, links' text; a line break as a space."""
    tag = el.tag
    if tag == "lb":
        return " "
    if tag == "code":
        return _code_span(_text(el))
    inner = _inline_children(el)
    if tag == "hi":
        mark = _INLINE_MARKS.get(el.get("rend") or "", "")
        if mark == "`":
            return _code_span(inner)
        stripped = inner.strip()
        if not (stripped and mark):
            return inner
        return inner[:len(inner) - len(inner.lstrip())] + mark + stripped + mark + inner[len(inner.rstrip()):]
    return inner


def _code_span(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return ""
    if _PLACEHOLDER_RE.search(text):
        return text
    ticks = "``" if "`" in text else "`"
    return f"{ticks}{text}{ticks}"


def _text(el) -> str:
    return "".join(el.itertext())


def _flat(text: str) -> str:
    """Lines joined inside a paragraph: every run of white space becomes one space."""
    return " ".join(text.split())


MARKDOWN_HEADING = re.compile(r"^#\s+(.+)$", re.M)


def markdown_page(path: Path, url: str) -> Page:
    """A Crawl API page that came as Markdown only: its first `# ` heading is the title."""
    with gzip.open(path, "rb") as fh:
        text = fh.read().decode("utf-8", "replace").strip()
    if not text:
        return Page(reason="empty_file", detail="the page is empty")
    heading = MARKDOWN_HEADING.search(text)
    title = heading.group(1).strip() if heading else None
    return Page(fields={"title": title, "text": text, "url": url}, repairs=["markdown_fallback: no page_html"])

