"""A list of URLs as a source, fetched politely, then read through the same HTML extraction.

acquire() fetches every URL into `raw_dir/pages/<n>.html.gz` and writes `raw_dir/pages/index.jsonl`
(one line per URL, in list order: the file, or why there is none). iter_records() turns that
index into records and rejections, so a run can be rebuilt from the run directory alone.

Politeness: robots.txt (protego) for the User-Agent we send; one request at a time per host with
at least `delay` seconds between them (robots' Crawl-delay wins when longer); hosts fetched in
parallel up to `concurrency`; retries with backoff and Retry-After (urllib3 Retry); a size cap
while streaming; only HTML content types kept. An on-disk cache keyed by URL keeps each page with
its ETag / Last-Modified, so a re-run asks "changed?" and gets a bodiless 304.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urljoin, urlsplit

import orjson

from ..console import progress
from ..errors import WebtuneError
from ..fileio import atomic_write_bytes
from ..records import Record, Rejection, record_id

HTML_TYPES = {"text/html", "application/xhtml+xml"}
RETRY_STATUSES = (429, 500, 502, 503, 504)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([^\s;\"']+)", re.I)
INDEX = "index.jsonl"
MAX_REDIRECTS = 5


@dataclass
class Fetched:
    """One line of the index: what became of one URL."""

    n: int
    url: str
    status: int | None = None       # the HTTP status of the final response
    file: str | None = None         # the page, relative to the index; None when refused
    final_url: str | None = None
    content_type: str | None = None
    charset: str | None = None
    cached: bool = False            # served from the cache after a 304
    reason: str = ""                # why there is no page: robots_disallowed, http_404, not_html, too_large...
    detail: str = ""


# ---------------------------------------------------------------- cache identity
def cache_identity(cfg) -> dict:
    """What a crawl's result depends on (sources.cache keys it): the URLs, in order, and the settings
    that change what is fetched; not the politeness knobs (delay, concurrency, retries, timeout)."""
    return {"urls": read_urls(cfg), "user_agent": cfg.user_agent, "max_bytes": cfg.max_bytes,
            "respect_robots": cfg.respect_robots, "fetch": cfg.get("fetch", "direct")}


# ---------------------------------------------------------------- URL list
def read_urls(cfg) -> list[str]:
    """Inline `urls` then `urls_file` (one per line; blank lines and # comments skipped), each once."""
    urls = [str(u).strip() for u in cfg.urls]
    if cfg.urls_file:
        path = Path(os.path.expanduser(cfg.urls_file))
        if not path.is_file():
            raise WebtuneError(f"source.urls.urls_file: {path} does not exist")
        urls += [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    urls = [u for u in urls if u and not u.startswith("#")]
    for u in urls:
        if urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).netloc:
            raise WebtuneError(f"source.urls: {u!r} is not an http(s) URL")
    if not urls:
        raise WebtuneError("source.urls: no URLs given; set source.urls.urls or source.urls.urls_file")
    return list(OrderedDict.fromkeys(urls))  # a URL listed twice is fetched (and recorded) once


# ---------------------------------------------------------------- fetching
class Fetcher:
    """Fetches the URLs of one host, one at a time, politely. One per host, one per thread."""

    def __init__(self, cfg, cache: "Cache"):
        self.cfg, self.cache = cfg, cache
        self.session = _session(cfg)
        self.robots: dict[str, object] = {}   # origin -> Protego | None (allow all) | str (why refused)
        self.last_at: dict[str, float] = {}   # origin -> when we last sent it a request

    def close(self):
        self.session.close()

    def _wait(self, origin: str, crawl_delay: float | None) -> None:
        """Sleep until this host's last request is `delay` (or robots' Crawl-delay) seconds old."""
        last = self.last_at.get(origin)
        if last is not None:
            pause = last + max(self.cfg.delay, crawl_delay or 0.0) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self.last_at[origin] = time.monotonic()

    def _robots(self, origin: str):
        if origin in self.robots:
            return self.robots[origin]
        from protego import Protego

        import requests

        self._wait(origin, None)
        try:
            r = self.session.get(origin + "/robots.txt", timeout=self.cfg.timeout)
        except requests.RequestException as e:
            rules = f"robots.txt unreachable: {type(e).__name__}"
        else:
            if r.status_code >= 500:     # a server error means "don't crawl" until it answers
                rules = f"robots.txt answered {r.status_code}"
            elif r.status_code >= 400:   # no robots.txt: everything allowed
                rules = None
            else:
                rules = Protego.parse(r.text)
        self.robots[origin] = rules
        return rules

    def allowed(self, url: str) -> tuple[str, str, float | None]:
        """(refusal reason or "", detail, crawl delay) for this URL under its host's robots.txt."""
        if not self.cfg.respect_robots:
            return "", "", None
        origin = _origin(url)
        rules = self._robots(origin)
        if rules is None:
            return "", "", None
        if isinstance(rules, str):
            return "robots_unavailable", f"{origin}: {rules}", None
        delay = rules.crawl_delay(self.cfg.user_agent)
        if not rules.can_fetch(url, self.cfg.user_agent):
            return "robots_disallowed", f"robots.txt of {origin} disallows it for {self.cfg.user_agent!r}", delay
        return "", "", delay

    def _open(self, url: str, headers: dict, crawl_delay: float | None):
        """GET, following redirects by hand so each hop is checked against its host's robots.txt
        and delay. Returns (streamed response, None) or (None, (reason, detail))."""
        current = url
        for hop in range(MAX_REDIRECTS + 1):
            self._wait(_origin(current), crawl_delay)
            r = self.session.get(current, headers=headers, timeout=self.cfg.timeout, stream=True,
                                 allow_redirects=False)
            if not r.is_redirect:
                return r, None
            target = urljoin(current, r.headers["Location"])
            r.close()
            if hop == MAX_REDIRECTS:
                return None, ("too_many_redirects", f"more than {MAX_REDIRECTS} redirects, last to {target}")
            reason, why, crawl_delay = self.allowed(target)
            if reason:
                return None, (reason, f"redirected to {target}: {why}")
            current = target

    def fetch(self, n: int, url: str, pages_dir: Path) -> Fetched:
        import requests

        out = Fetched(n, url)
        out.reason, out.detail, crawl_delay = self.allowed(url)
        if out.reason:
            return out
        cached = self.cache.get(url)
        headers = {}
        if cached:
            if cached.get("etag"):
                headers["If-None-Match"] = cached["etag"]
            if cached.get("last_modified"):
                headers["If-Modified-Since"] = cached["last_modified"]
        try:
            r, refusal = self._open(url, headers, crawl_delay)
            if refusal:
                out.reason, out.detail = refusal
                return out
            with r:
                out.status, out.final_url = r.status_code, r.url
                if r.status_code == 304 and cached:
                    body = self.cache.body(url)
                    out.status, out.cached = cached["status"], True
                    out.content_type, out.charset = cached.get("content_type"), cached.get("charset")
                    out.final_url = cached.get("final_url") or url
                    return _store(out, body, pages_dir)
                if r.status_code >= 300:  # errors, and a 304 we hold no copy for
                    out.reason, out.detail = f"http_{r.status_code}", f"{url} answered {r.status_code} {r.reason}"
                    return out
                ctype = r.headers.get("Content-Type", "")
                out.content_type = ctype.split(";")[0].strip().lower() or None
                m = _CHARSET.search(ctype)
                out.charset = m.group(1) if m else None
                if out.content_type not in HTML_TYPES:
                    out.reason, out.detail = "not_html", f"content type {ctype or 'missing'!r}, not HTML"
                    return out
                body, why = _read_capped(r, self.cfg.max_bytes)
                if why:
                    out.reason, out.detail = "too_large", why
                    return out
                etag, modified = r.headers.get("ETag"), r.headers.get("Last-Modified")
        except requests.RequestException as e:
            out.reason, out.detail = "fetch_failed", f"{type(e).__name__}: {str(e)[:300]}"
            return out
        if etag or modified:
            self.cache.put(url, body, {"status": out.status, "etag": etag, "last_modified": modified,
                                       "content_type": out.content_type, "charset": out.charset,
                                       "final_url": out.final_url})
        return _store(out, body, pages_dir)


def _session(cfg):
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=cfg.retries, connect=cfg.retries, read=cfg.retries, status=cfg.retries,
                  backoff_factor=0.5, backoff_max=30, status_forcelist=RETRY_STATUSES,
                  allowed_methods={"GET", "HEAD"}, respect_retry_after_header=True, raise_on_status=False)
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    s.headers["User-Agent"] = cfg.user_agent
    return s


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _read_capped(r, max_bytes: int) -> tuple[bytes, str]:
    """The body, or why not: stops reading as soon as the cap is passed."""
    declared = r.headers.get("Content-Length")
    if max_bytes and declared and declared.isdigit() and int(declared) > max_bytes:
        return b"", f"Content-Length {int(declared):,} bytes, over source.urls.max_bytes={max_bytes:,}"
    chunks, size = [], 0
    for chunk in r.iter_content(1 << 16):
        size += len(chunk)
        if max_bytes and size > max_bytes:
            return b"", f"body over source.urls.max_bytes={max_bytes:,} bytes"
        chunks.append(chunk)
    return b"".join(chunks), ""


def _store(out: Fetched, body: bytes, pages_dir: Path) -> Fetched:
    name = f"{out.n}.html.gz"
    with gzip.GzipFile(pages_dir / name, "wb", compresslevel=6, mtime=0) as fh:  # same page, same bytes
        fh.write(body)
    out.file = name
    return out


class Cache:
    """Pages with their validators, keyed by URL: `<dir>/<sha256[:2]>/<sha256>.{json,body}`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _path(self, url: str, ext: str) -> Path:
        key = hashlib.sha256(url.encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.{ext}"

    def get(self, url: str) -> dict | None:
        meta, body = self._path(url, "json"), self._path(url, "body")
        if not (meta.is_file() and body.is_file()):
            return None
        try:
            return orjson.loads(meta.read_bytes())
        except orjson.JSONDecodeError:
            return None

    def body(self, url: str) -> bytes:
        return self._path(url, "body").read_bytes()

    def put(self, url: str, body: bytes, meta: dict) -> None:
        for ext, data in (("body", body), ("json", orjson.dumps({"url": url, **meta}))):
            atomic_write_bytes(self._path(url, ext), data)  # a killed run never leaves half an entry


def acquire(cfg, source_name: str, raw_dir: Path, console=None) -> list[Path]:
    """Fetch every URL; returns the index followed by the stored pages. (`fetch: brightdata_crawl`
    goes through Bright Data's Crawl API instead: brightdata_crawl.acquire, chosen by the package.)"""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    urls = read_urls(cfg)
    pages_dir = Path(raw_dir) / "pages"
    pages_dir.mkdir(parents=True, exist_ok=True)
    cache = Cache(Path(os.path.expanduser(cfg.cache_dir)))
    by_host: dict[str, list[tuple[int, str]]] = {}
    for n, url in enumerate(urls, 1):
        by_host.setdefault(_origin(url), []).append((n, url))
    results: dict[int, Fetched] = {}
    columns = (TextColumn(f"[bold]{source_name}[/] fetching"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[refused]} refused"), TimeElapsedColumn())
    lock = threading.Lock()

    def crawl(items: list[tuple[int, str]]) -> None:
        fetcher = Fetcher(cfg, cache)
        try:
            for n, url in items:
                res = fetcher.fetch(n, url, pages_dir)
                with lock:
                    results[n] = res
                    refused = sum(1 for x in results.values() if x.reason)
                    bar.update(task, advance=1, refused=refused)
        finally:
            fetcher.close()

    with progress(*columns, console=console) as bar:
        task = bar.add_task("fetch", total=len(urls), refused=0)
        with ThreadPoolExecutor(max_workers=max(1, cfg.concurrency)) as pool:
            for f in [pool.submit(crawl, items) for items in by_host.values()]:
                f.result()
    index = pages_dir / INDEX
    atomic_write_bytes(index, b"".join(orjson.dumps(asdict(results[n])) + b"\n" for n in sorted(results)))
    return [index] + [pages_dir / results[n].file for n in sorted(results) if results[n].file]


def iter_records(cfg, source_name: str, paths: list[Path], shard: int = 0,
                 n_shards: int = 1, pages=None) -> Iterator[Record | Rejection]:
    """One record per fetched page (id `<source>:<url>#1`), or with `pages.split: section` one per
    section (`<source>:<url>#1/s<N>`); refusals and empty pages as rejections."""
    from .html import extract, markdown_page
    from .pages import page_records, settings

    pages = settings(pages)

    for index in (Path(p) for p in paths):
        if index.name != INDEX:
            continue
        with open(index, "rb") as fh:
            for line in fh:
                e = orjson.loads(line)
                if (e["n"] - 1) % n_shards != shard:
                    continue
                rid = record_id(source_name, e["url"], 1)
                if not e.get("file"):
                    yield Rejection(rid, source_name, e["reason"], e.get("detail", ""))
                    continue
                if e["file"].endswith(".md.gz"):     # a Crawl API page that came as Markdown only
                    got = markdown_page(index.parent / e["file"], e["final_url"] or e["url"])
                else:
                    with gzip.open(index.parent / e["file"], "rb") as page:
                        got = extract(page.read(), url=e["final_url"] or e["url"], header_charset=e.get("charset"))
                if got.fields is None:
                    yield Rejection(rid, source_name, got.reason, f"{e['url']}: {got.detail}")
                    continue
                got.fields["url"] = e["url"]
                if e.get("final_url") and e["final_url"] != e["url"]:
                    got.fields["final_url"] = e["final_url"]
                yield from page_records(rid, source_name, got.fields, pages, got.repairs, group=e["url"])
