"""A URL list through the Crawl API (source=urls, fetch: brightdata_crawl) against the fake Bright Data server."""
import io

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from tests.fakes.brightdata_server import CRAWL, FakeBrightData, doc_page
from webtune.config import SourceConfig
from webtune.errors import WebtuneError
from webtune.paths import SHIPPED
from webtune.records import Record, Rejection
from webtune import sources
from webtune.sources import brightdata_crawl, urls
from webtune.sources.html import extract

ENV = "WEBTUNE_TEST_BD_TOKEN"
URLS = [f"https://docs.example.com/guide/{name}" for name in ("install", "configure", "deploy")]


@pytest.fixture
def fake(monkeypatch):
    with FakeBrightData() as server:
        monkeypatch.setenv(ENV, server.token)
        yield server


def source(fake, tmp_path, urls_list=URLS, **bd):
    src = OmegaConf.merge(OmegaConf.structured(SourceConfig), OmegaConf.load(SHIPPED / "conf" / "source" / "urls.yaml"),
                          {"urls": {"urls": urls_list, "urls_file": None, "fetch": "brightdata_crawl",
                                    "cache_dir": str(tmp_path / "http")},
                           "brightdata": {"base_url": fake.base_url, "api_key_env": ENV, "poll_interval": 0.01,
                                          "timeout": 5.0, "rate_limit_wait": 0.01, **bd}})
    return src


def quiet():
    return Console(file=io.StringIO(), width=120, soft_wrap=True)


def crawl(src, raw_dir, **kwargs):
    return sources.acquire(src, raw_dir, console=quiet(), **kwargs)   # the package picks the Crawl API


def records(src, paths):
    return list(urls.iter_records(src.urls, src.name, paths, pages=src.pages))


def test_a_url_list_is_one_collection_read_like_a_direct_fetch(fake, tmp_path):
    src = source(fake, tmp_path)
    paths = crawl(src, tmp_path / "raw")
    assert fake.count("scrape") == 1 and fake.count("trigger") == 0           # 3 URLs: one sync request
    [sent] = fake.triggers
    assert sent["query"]["dataset_id"] == CRAWL and sent["inputs"] == [{"url": u} for u in URLS]
    assert sent["query"]["custom_output_fields"] == "error|error_code|input|markdown|page_html|page_title|url"
    assert paths[0].name == "index.jsonl" and [p.name for p in paths[1:]] == ["1.html.gz", "2.html.gz", "3.html.gz"]
    items = records(src, paths)
    assert [i.id for i in items] == [f"web:{u}#1" for u in URLS]
    for url, item in zip(URLS, items):
        direct = extract(doc_page(url).encode(), url=url, header_charset="utf-8").fields   # what a direct fetch reads
        assert isinstance(item, Record) and item.fields["url"] == url
        assert item.fields["text"] == direct["text"] and item.fields["title"] == direct["title"]
        assert "Home | API" not in item.fields["text"]                                   # navigation dropped
    before = len(fake.requests)
    assert crawl(src, tmp_path / "raw") == paths and len(fake.requests) == before         # resume: no request


def test_many_urls_are_triggered_once_and_polled(fake, tmp_path):
    many = [f"https://docs.example.com/api/m{i}" for i in range(25)]
    src = source(fake, tmp_path, many)
    items = records(src, crawl(src, tmp_path / "raw"))
    assert fake.count("trigger") == 1 and fake.count("scrape") == 0 and fake.count("progress") == 3
    assert [i.fields["url"] for i in items] == many


def test_markdown_is_the_fallback_and_failures_are_rejections(fake, tmp_path):
    fake.markdown_only = {URLS[1]}
    fake.dead_urls = {URLS[2]}
    src = source(fake, tmp_path)
    paths = crawl(src, tmp_path / "raw")
    assert [p.name for p in paths[1:]] == ["1.html.gz", "2.md.gz"]
    first, second, third = records(src, paths)
    assert isinstance(first, Record) and isinstance(second, Record)
    assert second.fields["title"] == "configure - Docs" and "handles one part of the system" in second.fields["text"]
    assert second.repairs == ["markdown_fallback: no page_html"]
    assert isinstance(third, Rejection) and third.reason == "brightdata_error:dead_page"
    assert "dead page" in third.detail and third.id == f"web:{URLS[2]}#1"


def test_sections_come_out_as_for_a_direct_fetch(fake, tmp_path):
    fake.pages = {URLS[0]: "<html><head><title>Install</title></head><body><main><h1>Install</h1>"
                           "<p>" + "Install the package with pip, then check the version it reports. " * 4 + "</p>"
                           "<h2>From source</h2><p>" + "Clone the repository and run the build script there. " * 4 +
                           "</p></main></body></html>"}
    src = source(fake, tmp_path, URLS[:1])
    src.pages.split = "section"
    src.pages.min_chars = 10
    items = records(src, crawl(src, tmp_path / "raw"))
    assert [i.id for i in items] == [f"web:{URLS[0]}#1/s1", f"web:{URLS[0]}#1/s2"]
    assert items[1].fields["section_title"] == "From source" and items[1].group == URLS[0]


def test_the_crawl_follows_the_bounds_and_the_paid_flag(fake, tmp_path):
    from webtune.errors import PaidRequestRefused
    src = source(fake, tmp_path, max_cost=0.5)
    with pytest.raises(WebtuneError, match="max_cost=0.5 needs a price"):
        crawl(src, tmp_path / "a")
    with pytest.raises(PaidRequestRefused):
        crawl(source(fake, tmp_path), tmp_path / "b", allow_paid=False)
    assert fake.requests == []


def test_no_brightdata_settings_is_one_clear_line(fake, tmp_path):
    src = source(fake, tmp_path)
    with pytest.raises(WebtuneError, match="fetch=brightdata_crawl needs the source.brightdata settings"):
        brightdata_crawl.acquire(src.urls, None, "web", tmp_path)
