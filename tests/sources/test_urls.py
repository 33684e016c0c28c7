"""The urls source: the real client (requests + urllib3 Retry + protego) against a local website."""
import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from omegaconf import OmegaConf
from rich.console import Console

from tests.fakes.web_server import FakeWeb
from webtune.config import UrlsConfig
from webtune.errors import WebtuneError
from webtune.records import Record, Rejection
from webtune.sources import urls

GEN_PAGES = Path(__file__).resolve().parents[2] / "bench/gen/gen_pages.py"
ARTICLE = ("<html><head><meta charset='utf-8'><title>{t}</title></head><body><nav>Home Blog About</nav>"
           "<article><h1>{t}</h1><p>{t} is a page about chairs, desks and the people who sit at them all day.</p>"
           "<p>Good posture matters more than the price of the chair, says every guide we have read.</p>"
           "</article><footer>All rights reserved</footer></body></html>")


@pytest.fixture(scope="module")
def pages_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    if GEN_PAGES.exists():
        subprocess.run([sys.executable, str(GEN_PAGES), "html", "--n", "6", "--seed", "5", "--out", str(out)],
                       check=True)
    for i in range(6):  # known-good pages too, so the tests never depend on the generator's draws
        (out / f"a{i}.html").write_text(ARTICLE.format(t=f"Article {i}"))
    return out


@pytest.fixture
def web(pages_dir):
    with FakeWeb(pages_dir, crawl_delay=0.2, big_bytes=300_000) as server:
        yield server


def make_cfg(tmp_path, url_list, **kw):
    kw.setdefault("delay", 0.0)
    return OmegaConf.structured(UrlsConfig(urls=url_list, cache_dir=str(tmp_path / "cache"), timeout=5, **kw))


def fetch(cfg, tmp_path, run="raw"):
    paths = urls.acquire(cfg, "web", tmp_path / run, console=Console(quiet=True))
    index = [orjson.loads(x) for x in paths[0].read_bytes().splitlines()]
    return paths, {e["url"]: e for e in index}


def test_pages_become_records_and_every_refusal_a_rejection(web, tmp_path):
    listed = {
        "ok": web.url("/pages/a0.html"),
        "private": web.url("/private/secret.html"),
        "redirect": web.url("/redirect/a1.html"),
        "flaky": web.url("/flaky/a2.html"),
        "big": web.url("/big"),
        "big_stream": web.url("/big-stream"),
        "json": web.url("/data.json"),
        "gone": web.url("/gone"),
        "to_private": web.url("/to-private"),
        "loop": web.url("/loop"),
    }
    cfg = make_cfg(tmp_path, list(listed.values()) + [listed["ok"]], max_bytes=100_000)  # a duplicate, fetched once
    paths, index = fetch(cfg, tmp_path)
    assert paths[0].name == "index.jsonl" and len(index) == len(listed)
    items = {x.id: x for x in urls.iter_records(cfg, "web", paths)}
    assert len(items) == len(listed)

    def item(key):
        return items[f"web:{listed[key]}#1"]

    assert isinstance(item("ok"), Record)
    assert "Article 0 is a page about chairs" in item("ok").fields["text"]
    assert "All rights reserved" not in item("ok").fields["text"]
    assert item("ok").fields["url"] == listed["ok"] and item("ok").group == listed["ok"]
    # robots.txt: refused, and never requested from the server
    assert item("private").reason == "robots_disallowed" and web.hits("/private/secret.html") == []
    # redirects are followed; the record keeps the listed URL and notes where it landed
    assert item("redirect").fields["final_url"] == web.url("/pages/a1.html")
    # 503 with Retry-After, then 200: retried, kept
    assert isinstance(item("flaky"), Record)
    assert [h["status"] for h in web.hits("/flaky/a2.html")] == [503, 200]
    assert item("big").reason == "too_large" and "Content-Length" in item("big").detail
    assert item("big_stream").reason == "too_large"
    assert item("json").reason == "not_html" and "application/json" in item("json").detail
    assert item("gone").reason == "http_404"
    # a redirect is followed hop by hop, each hop checked against robots.txt before it is requested
    assert item("to_private").reason == "robots_disallowed" and "redirected to" in item("to_private").detail
    assert web.hits("/private/secret.html") == []
    assert item("loop").reason == "too_many_redirects" and len(web.hits("/loop")) == 6
    # pages are kept compressed in the raw folder
    assert gzip.decompress((paths[0].parent / index[listed["ok"]]["file"]).read_bytes()) == \
        (web.pages_dir / "a0.html").read_bytes()


def test_clear_user_agent_and_robots_once_per_host(web, tmp_path):
    cfg = make_cfg(tmp_path, [web.url("/pages/a0.html"), web.url("/pages/a1.html"),
                              web.url("/pages/a2.html", host="localhost")])
    fetch(cfg, tmp_path)
    assert all(h["headers"]["User-Agent"] == cfg.user_agent for h in web.log)
    robots = web.hits("/robots.txt")
    assert sorted(h["host"].split(":")[0] for h in robots) == ["127.0.0.1", "localhost"]


def test_per_host_crawl_delay_is_honoured(web, tmp_path):
    one_host = [web.url(f"/pages/a{i}.html") for i in range(4)]
    cfg = make_cfg(tmp_path, one_host, delay=0.05)  # robots' Crawl-delay (0.2 s) is longer: it wins
    fetch(cfg, tmp_path)
    times = sorted(h["time"] for h in web.log)  # robots.txt, then the 4 pages, one host
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) == 5 and min(gaps) >= 0.19


def test_hosts_are_fetched_in_parallel(pages_dir, tmp_path):
    with FakeWeb(pages_dir, crawl_delay=0.3) as web:
        listed = [web.url(f"/pages/a{i}.html", host=h) for i in range(3) for h in ("127.0.0.1", "localhost")]
        fetch(make_cfg(tmp_path, listed, concurrency=2), tmp_path)
        by_host = {}
        for h in web.log:
            by_host.setdefault(h["host"].split(":")[0], []).append(h["time"])
        # the two hosts' requests interleave instead of one host waiting for the other to finish
        a, b = sorted(by_host.values(), key=min)
        assert min(b) < max(a)


def test_rerun_revalidates_from_the_cache_and_downloads_nothing(web, tmp_path):
    listed = [web.url("/pages/a3.html"), web.url("/pages/a4.html")]
    cfg = make_cfg(tmp_path, listed)
    first_paths, first = fetch(cfg, tmp_path, "run1")
    assert [h["status"] for h in web.hits("/pages/a3.html")] == [200]
    second_paths, second = fetch(cfg, tmp_path, "run2")
    assert [h["status"] for h in web.hits("/pages/a3.html")] == [200, 304]
    assert web.hits("/pages/a3.html")[1]["headers"]["If-None-Match"].startswith('"')
    assert all(second[u]["cached"] and second[u]["status"] == 200 for u in listed)
    a = [x.fields for x in urls.iter_records(cfg, "web", first_paths)]
    b = [x.fields for x in urls.iter_records(cfg, "web", second_paths)]
    assert a == b and len(a) == 2


def test_a_changed_page_is_downloaded_again(web, tmp_path):
    web.pages["live.html"] = ARTICLE.format(t="First version").encode()
    cfg = make_cfg(tmp_path, [web.url("/pages/live.html")])
    fetch(cfg, tmp_path, "run1")
    web.pages["live.html"] = ARTICLE.format(t="Second version").encode()
    paths, index = fetch(cfg, tmp_path, "run2")
    assert [h["status"] for h in web.hits("/pages/live.html")] == [200, 200]
    [rec] = urls.iter_records(cfg, "web", paths)
    assert "Second version" in rec.fields["text"]


def test_robots_server_error_refuses_the_host(pages_dir, tmp_path):
    with FakeWeb(pages_dir, robots_status=500) as web:
        cfg = make_cfg(tmp_path, [web.url("/pages/a0.html")], retries=1)
        paths, _ = fetch(cfg, tmp_path)
        [item] = urls.iter_records(cfg, "web", paths)
        assert item.reason == "robots_unavailable" and "500" in item.detail
        assert web.hits("/pages/a0.html") == []


def test_connection_refused_is_a_rejection(tmp_path, web):
    web.stop()  # nothing listens on the port any more
    cfg = make_cfg(tmp_path, [web.url("/pages/a0.html")], retries=1, respect_robots=False)
    paths, _ = fetch(cfg, tmp_path)
    [item] = urls.iter_records(cfg, "web", paths)
    assert isinstance(item, Rejection) and item.reason == "fetch_failed" and "ConnectionError" in item.detail


def test_shards_split_the_pages(web, tmp_path):
    cfg = make_cfg(tmp_path, [web.url(f"/pages/a{i}.html") for i in range(5)] + [web.url("/gone")])
    paths, _ = fetch(cfg, tmp_path)
    whole = [x.id for x in urls.iter_records(cfg, "web", paths)]
    parts = [[x.id for x in urls.iter_records(cfg, "web", paths, s, 2)] for s in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(whole) and len(whole) == 6 and parts[0] and parts[1]


def test_url_list_from_a_file_and_bad_lists(tmp_path, web):
    listing = tmp_path / "urls.txt"
    listing.write_text(f"# my pages\n{web.url('/pages/a0.html')}\n\n{web.url('/pages/a1.html')}\n")
    cfg = OmegaConf.structured(UrlsConfig(urls_file=str(listing)))
    assert urls.read_urls(cfg) == [web.url("/pages/a0.html"), web.url("/pages/a1.html")]
    with pytest.raises(WebtuneError, match="ftp://x"):
        urls.read_urls(OmegaConf.structured(UrlsConfig(urls=["ftp://x/y"])))
    with pytest.raises(WebtuneError, match="nope.txt"):
        urls.read_urls(OmegaConf.structured(UrlsConfig(urls_file=str(tmp_path / "nope.txt"))))
    with pytest.raises(WebtuneError, match="no URLs"):
        urls.read_urls(OmegaConf.structured(UrlsConfig()))
