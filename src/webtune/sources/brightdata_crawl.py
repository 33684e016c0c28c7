"""A URL list through Bright Data's Crawl API (now "Fetch API", dataset gd_m6gjtfmeh43we6cqc).

`source=urls` with `source.urls.fetch: brightdata_crawl`: for sites that block a plain fetch. The
whole list is one collection (sync for at most 20 URLs in mode auto, else trigger and poll; the
same once-only, resume and cost rules as every scraper, settings under `source.brightdata`). The
records are then written in the layout a direct fetch writes, `pages/index.jsonl` plus
`pages/<n>.html.gz` (each record's `page_html`), so the pages go through the same extraction and
sectioning. Where a record has no `page_html` its `markdown` is kept as `pages/<n>.md.gz` and read
as the page's text; a failed URL (an error record) or one with no record is a rejection.
"""
from __future__ import annotations

import gzip
from dataclasses import asdict
from pathlib import Path

import orjson
from rich.console import Console

from ..errors import WebtuneError
from ..fileio import atomic_write_bytes
from .brightdata import collect
from .html import MARKDOWN_HEADING
from .urls import INDEX, Fetched, read_urls

DATASET = "gd_m6gjtfmeh43we6cqc"
FIELDS = ["error", "error_code", "input", "markdown", "page_html", "page_title", "url"]   # what the pages need
MARKDOWN = ".md.gz"


def acquire(urls_cfg, bd_cfg, source_name: str, raw_dir: Path, console: Console | None = None,
            allow_paid: bool = True) -> list[Path]:
    """Collect the URL list once; returns the index followed by the stored pages (as a direct fetch)."""
    if bd_cfg is None:
        raise WebtuneError(f"source {source_name!r}: source.urls.fetch=brightdata_crawl needs the source.brightdata "
                           "settings (api_key_env, base_url, mode) passed to urls.acquire")
    urls = read_urls(urls_cfg)
    raw_dir = Path(raw_dir)
    snapshot = collect(bd_cfg, source_name, raw_dir / "crawl", DATASET, lambda: [{"url": u} for u in urls], FIELDS,
                       request="Crawl API collection", console=console, allow_paid=allow_paid)
    pages_dir = raw_dir / "pages"
    pages_dir.mkdir(parents=True, exist_ok=True)
    results = [_page(n, url, record, pages_dir) for n, (url, record) in enumerate(_by_url(snapshot, urls), 1)]
    index = pages_dir / INDEX
    atomic_write_bytes(index, b"".join(orjson.dumps(asdict(r)) + b"\n" for r in results))
    return [index] + [pages_dir / r.file for r in results if r.file]


def _by_url(snapshot: Path, urls: list[str]) -> list[tuple[str, dict | None]]:
    """Each listed URL with its record (matched by the input URL, else the final URL), in list order."""
    found: dict[str, dict] = {}
    with gzip.open(snapshot, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue                        # no URL to pin it on; the URL it was for is "missing"
            if not isinstance(record, dict):
                continue
            given = record.get("input") if isinstance(record.get("input"), dict) else {}
            for key in (given.get("url"), record.get("url")):
                if isinstance(key, str) and key not in found:
                    found[key] = record
    return [(url, found.get(url)) for url in urls]


def _page(n: int, url: str, record: dict | None, pages_dir: Path) -> Fetched:
    out = Fetched(n, url)
    if record is None:
        out.reason, out.detail = "brightdata_missing", "the Crawl API returned no record for this URL"
        return out
    html = record.get("page_html") or record.get("html")        # `html` in some of Bright Data's docs
    markdown = record.get("markdown")
    if record.get("error_code") or (record.get("error") and not (html or markdown)):
        out.reason = f"brightdata_error:{record.get('error_code') or 'unknown'}"
        out.detail = str(record.get("error") or record.get("error_code"))
        return out
    out.status, out.final_url = 200, record.get("url") or url
    if html:
        out.file, out.content_type, out.charset = f"{n}.html.gz", "text/html", "utf-8"
        body = html.encode("utf-8")
    elif markdown:
        out.file, out.content_type = f"{n}{MARKDOWN}", "text/markdown"
        title = record.get("page_title")
        body = (markdown if not title or MARKDOWN_HEADING.search(markdown) else f"# {title}\n\n{markdown}").encode("utf-8")
    else:
        out.reason, out.detail = "empty_file", "the Crawl API record has neither page_html nor markdown"
        return out
    with gzip.open(pages_dir / out.file, "wb", compresslevel=6) as fh:
        fh.write(body)
    return out
