"""The marketplace source (kind brightdata_dataset) against the fake Bright Data server on 127.0.0.1."""
import argparse
import gzip
import io
import json
import time

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from tests.fakes.brightdata_server import FakeBrightData
from webtune.config import SourceConfig
from webtune.errors import WebtuneError
from webtune.paths import SHIPPED
from webtune.records import Record
from webtune.sources import brightdata, brightdata_market

ENV = "WEBTUNE_TEST_BD_TOKEN"
PRODUCTS = "gd_l7q7dkf244hwjntr0"
BRANDS = ["ACME", "Stanley", "Yeti", "Owala"]
TUMBLERS = {"operator": "and", "filters": [{"name": "title", "operator": "includes", "value": "tumbler"},
                                          {"name": "rating", "operator": ">=", "value": 4.5}]}


def catalogue(n=40):
    return [{"title": f"{'Tumbler' if i % 2 else 'Mug'} {i}", "brand": BRANDS[i % 4], "rating": 3.5 + (i % 4) / 2,
             "description": f"Item {i}, a fine thing.", "categories": ["Kitchen", "Drinkware" if i % 3 else "Mugs"]}
            for i in range(n)]


@pytest.fixture
def fake(monkeypatch):
    with FakeBrightData() as server:
        server.add_market(PRODUCTS, "Amazon products", catalogue())
        monkeypatch.setenv(ENV, server.token)
        yield server


def make_cfg(fake, **over):
    src = OmegaConf.merge(OmegaConf.structured(SourceConfig), OmegaConf.load(SHIPPED / "conf" / "source" /
                                                                             "brightdata_marketplace.yaml"))
    values = dict(base_url=fake.base_url, api_key_env=ENV, poll_interval=0.01, poll_timeout=20.0, timeout=5.0,
                  requests_per_hour=10**6, rate_limit_wait=0.01, retry_backoff=0.01)
    values.update(over)
    given_filter = values.pop("filter", TUMBLERS)
    cfg = OmegaConf.merge(src.brightdata, values)
    cfg.filter = given_filter                 # replaced, not merged into the shipped one
    return cfg


def quiet():
    return Console(file=io.StringIO(), width=120, soft_wrap=True)


def acquire(cfg, raw_dir, console=None, **kwargs):
    return brightdata_market.acquire(cfg, "market", raw_dir, console=console or quiet(), **kwargs)


def lines(path):
    with gzip.open(path, "rt") as fh:
        return [json.loads(x) for x in fh]


def test_the_shipped_config_is_a_marketplace_source():
    src = OmegaConf.merge(OmegaConf.structured(SourceConfig),
                          OmegaConf.load(SHIPPED / "conf" / "source" / "brightdata_marketplace.yaml"))
    assert src.kind == "brightdata_dataset" and src.brightdata.records_limit and src.brightdata.price_per_1k == 2.5
    assert src.brightdata.poll_interval * src.brightdata.requests_per_hour >= 3600    # polls fit the hourly budget


def test_filter_with_records_limit_downloads_at_most_that_many(fake, tmp_path):
    console = quiet()
    cfg = make_cfg(fake, records_limit=5, max_cost=None)
    path = acquire(cfg, tmp_path, console)
    [sent] = fake.filters
    assert sent["dataset_id"] == PRODUCTS and sent["records_limit"] == 5
    assert sent["filter"] == {"operator": "and", "filters": [{"name": "title", "operator": "includes", "value": "tumbler"},
                                                             {"name": "rating", "operator": ">=", "value": 4.5}]}
    sid = sent["snapshot_id"]
    assert sid.startswith("snap_") and path.name == f"{sid}.jsonl.gz"
    got = lines(path)
    expected = [r for r in catalogue() if "Tumbler" in r["title"] and r["rating"] >= 4.5][:5]
    assert got == expected and len(got) == 5
    assert [r["endpoint"] for r in fake.requests] == ["filter", "market_status", "market_status", "market_status",
                                                      "market_download"]
    state = json.loads((tmp_path / "snapshot.json").read_text())
    assert state["snapshot_id"] == sid and state["status"]["dataset_size"] == 5 and state["status"]["cost"] == 0.0125
    items = list(brightdata.iter_records(path, "market", sid, ["title"]))
    assert [i.id for i in items] == [f"market:{sid}#{n}" for n in range(1, 6)]
    assert all(isinstance(i, Record) for i in items)
    out = console.file.getvalue()
    assert "Bright Data marketplace filter: caps: records_limit=5; records: at most 5; cost: about $0.01 at $2.5 per 1,000" in out


def test_a_sample_is_a_small_records_limit_on_a_present_field(fake, tmp_path):
    path = acquire(make_cfg(fake, filter=None, records_limit=3, max_cost=None), tmp_path)
    assert fake.count("metadata") == 1
    assert fake.filters[0]["filter"] == {"name": "title", "operator": "is_not_null"}
    assert lines(path) == catalogue()[:3]


def test_building_after_ready_is_retried(fake, tmp_path):
    fake.building_after_ready = 2
    path = acquire(make_cfg(fake, records_limit=4, max_cost=None), tmp_path)
    assert fake.count("market_download") == 3 and len(lines(path)) == 4


def test_value_lists_from_files_go_as_multipart(fake, tmp_path):
    (tmp_path / "brands.csv").write_text("brand\nStanley\nOwala\n")
    cfg = make_cfg(fake, filter={"name": "brand", "operator": "in", "value": "brands.csv"},
                   filter_files=[str(tmp_path / "brands.csv")], records_limit=100, max_cost=None)
    path = acquire(cfg, tmp_path / "raw")
    assert fake.filters[0]["files"] == {"brands.csv": ["Stanley", "Owala"]}
    assert {r["brand"] for r in lines(path)} == {"Stanley", "Owala"} and len(lines(path)) == 20
    assert brightdata_market.cache_identity(cfg)["filter_files"]["brands.csv"]   # the file's bytes key the cache


@pytest.mark.parametrize("over, message", [
    ({"filter": {"name": "title", "operator": "contains", "value": "x"}}, r"filter\.operator='contains' is not one of"),
    ({"filter": {"operator": "and", "filters": [{"name": "t", "operator": "=", "value": 1, "extra": 2}]}},
     r"filter\.filters\[0\]: key 'extra' is not allowed"),
    ({"filter": {"name": "brand", "operator": "in", "value": "brands.csv"}}, "names a file that is not in"),
    ({"filter": None, "records_limit": None}, "filter is not set: give a filter, or a records_limit"),
    ({"records_limit": 1000, "max_cost": 1.0}, r"would cost about \$2\.50 \(1,000 records at \$2\.5/1k\), over "
                                                 r"source\.brightdata\.max_cost=1"),
    ({"records_limit": None, "max_records": 10}, "has no bound on its records: set source.brightdata.records_limit"),
])
def test_bad_filters_and_bounds_refuse_before_any_request(fake, tmp_path, over, message):
    with pytest.raises(WebtuneError, match=message) as err:
        acquire(make_cfg(fake, **over), tmp_path)
    assert fake.requests == [] and "\n" not in str(err.value)


def test_no_match_is_one_line_and_free(fake, tmp_path):
    with pytest.raises(WebtuneError, match=r"matched no records of dataset gd_\w+ \(422.*nothing was billed"):
        acquire(make_cfg(fake, filter={"name": "title", "operator": "includes", "value": "zzz"}, max_cost=None), tmp_path)
    assert not (tmp_path / "snapshot.json").exists()


def test_poll_timeout_then_resume_filters_once(fake, tmp_path):
    fake.market_polls_per_status = 10**6
    with pytest.raises(WebtuneError, match=r"snapshot snap_\w+ is still scheduled.*webtune resume"):
        acquire(make_cfg(fake, poll_timeout=0.2, max_cost=None), tmp_path)
    fake.market_polls_per_status = 1
    path = acquire(make_cfg(fake, max_cost=None), tmp_path)
    assert len(fake.filters) == 1 and path.name == f"{fake.filters[0]['snapshot_id']}.jsonl.gz"


def test_polls_respect_the_hourly_budget(fake, tmp_path):
    start = time.monotonic()
    acquire(make_cfg(fake, poll_interval=0.001, requests_per_hour=36000, max_cost=None), tmp_path)   # >= 0.1 s apart
    assert time.monotonic() - start >= 0.2 and fake.count("market_status") == 3


def test_preview_without_allow_paid_refuses_the_filter(fake, tmp_path):
    from webtune.errors import PaidRequestRefused
    with pytest.raises(PaidRequestRefused, match="--allow-trigger"):
        acquire(make_cfg(fake, max_cost=None), tmp_path, allow_paid=False)
    assert fake.billing_requests() == 0


def test_datasets_command_lists_and_searches(fake, capsys):
    fake.add_market("gd_l1vijqt9jfj7olije", "Crunchbase companies information", catalogue(7))
    ns = argparse.Namespace(search="crunch", base_url=fake.base_url, api_key_env=ENV)
    assert brightdata_market.datasets_command(ns) == 0
    out = capsys.readouterr().out
    assert "gd_l1vijqt9jfj7olije" in out and "Crunchbase companies information" in out and PRODUCTS not in out
    assert "1 of 2" in out and fake.count("list") == 1
