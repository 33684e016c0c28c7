"""Main content of an HTML page (trafilatura): title, text and metadata, or why there is none.

Used by the files source (`.html` files) and the urls source (fetched pages). The page's
charset is taken from the HTTP header, else the page's own declaration, else UTF-8 with a
windows-1252 fallback (the usual mislabelled legacy page); a fallback is noted as a repair.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

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
        doc = trafilatura.bare_extraction(text, url=url, with_metadata=True, include_comments=False,
                                          include_tables=True, date_extraction_params=_DATES)
    except Exception as e:  # lxml can choke on truly broken markup; that is a rejection, not a crash
        return Page(reason="broken_html", detail=f"{type(e).__name__}: {e}")
    body = (doc.text or "").strip() if doc is not None else ""
    if not body:
        return Page(reason="no_main_content", detail="no main text found (empty body, or script only)")
    fields = {
        "title": (doc.title or "").strip() or None,
        "text": body,
        "url": url or doc.url,
        "date": doc.date,
        "description": doc.description,
        "sitename": doc.sitename,
        "language": doc.language,
    }
    return Page(fields=fields, repairs=repairs)
