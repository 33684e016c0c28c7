"""End-to-end runs of the data stages on Bright Data sources, against the fake Bright Data server on
127.0.0.1: the real config composition, runner, source cache, prepare, mix and ledger (in-process),
and the real CLI in a subprocess where a signal or a sweep is part of the story."""
import io
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from tests.conftest import REPO, SMALL, TINY_MODEL
from tests.fakes.brightdata_server import FakeBrightData
from tests.sigint import default_sigint
from webtune.errors import WebtuneError

ENV = "WEBTUNE_TEST_BD_TOKEN"
DATA = {"source", "prepare", "mix", "ledger"}
PRODUCTS = "gd_l7q7dkf244hwjntr0"
FIVE = [f"https://www.amazon.com/dp/B0RUN000{i}" for i in range(5)]
TWELVE = [f"https://www.amazon.com/dp/B0RUN10{i:02d}" for i in range(12)]     # enough for every split


@pytest.fixture
def fake(monkeypatch):
    with FakeBrightData() as server:
        monkeypatch.setenv(ENV, server.token)
        yield server


def long_records(inputs):
    """Products whose descriptions pass the default filters (min words) and differ (dedupe)."""
    return [{"title": f"Steel tumbler model {i}", "brand": "ACME", "url": given.get("url"),
             "description": f"Model {i} keeps drinks cold for {i + 10} hours and fits every cup holder. "
                            f"Its lid number {i} seals tight, and the steel wall never sweats.",
             "features": ["steel", f"{i + 10} hours cold"], "input": given} for i, given in enumerate(inputs)]


def bd(fake, **over) -> list[str]:
    values = {"base_url": fake.base_url, "api_key_env": ENV, "poll_interval": 0.02, "timeout": 10,
              "rate_limit_wait": 0.01, "retry_backoff": 0.01, **over}
    return [f"source.brightdata.{k}={v}" for k, v in values.items()]


def run_data(tmp_path, overrides: list[str], console=None) -> Path:
    """`webtune prepare` in-process: compose, then the runner on the data stages."""
    from webtune.hydra_setup import compose
    from webtune.runner import Runner
    from webtune.stages import build_stages
    cfg = compose([f"runs_dir={tmp_path / 'runs'}", "mix.general.enabled=false", "prepare.workers=1",
                   *TINY_MODEL, *overrides])
    run_dir = tmp_path / "runs" / "run"
    Runner(cfg, run_dir, build_stages(), console or quiet(), log=lambda *a: None).run(only=DATA)
    return run_dir


def quiet():
    return Console(file=io.StringIO(), width=160, soft_wrap=True)


def ledger(run_dir: Path, source: str) -> list[dict]:
    lines = [orjson.loads(x) for x in (run_dir / "ledger.jsonl").read_bytes().splitlines()]
    return [x for x in lines if x["source"] == source]


def examples(run_dir: Path) -> list[dict]:
    return [orjson.loads(x) for x in (run_dir / "data" / "examples.jsonl").read_bytes().splitlines()]


# ---------------------------------------------------------------- marketplace
def market(fake, n=30):
    fake.add_market(PRODUCTS, "Amazon products", [
        {**rec, "title": f"Steel tumbler model {rec['title'].rsplit(' ', 1)[1]}", "rating": 4.5 + (i % 2) * 0.3}
        for i, rec in enumerate(long_records([{}] * n))])


def test_marketplace_filter_with_records_limit_reconciles_in_the_ledger(fake, tmp_path):
    market(fake)
    run_dir = run_data(tmp_path, ["source=brightdata_marketplace", "source.brightdata.records_limit=4",
                                  'source.brightdata.filter={name: rating, operator: ">=", value: 4.5}',
                                  *bd(fake, requests_per_hour=10**6)])
    [sent] = fake.filters
    sid = sent["snapshot_id"]
    assert sent["records_limit"] == 4 and fake.count("market_download") == 1
    rows = ledger(run_dir, "market")
    assert sorted(r["id"] for r in rows) == [f"market:{sid}#{n}" for n in range(1, 5)]     # at most 4, each once
    assert {r["status"] for r in rows} <= {"kept", "rejected"} and any(r["status"] == "kept" for r in rows)
    kept = {r["id"] for r in rows if r["status"] == "kept"}
    assert kept == {e["record_id"] for e in examples(run_dir)}          # every kept record made its example


def test_marketplace_sample(fake, tmp_path):
    market(fake)
    run_dir = run_data(tmp_path, ["source=brightdata_marketplace", "source.brightdata.records_limit=2", *bd(fake, requests_per_hour=10**6)])
    assert fake.filters[0]["filter"] == {"name": "title", "operator": "is_not_null"}
    assert len(ledger(run_dir, "market")) == 2


# ---------------------------------------------------------------- Crawl API -> docs_qa
def test_crawl_api_url_list_feeds_docs_qa(fake, tmp_path):
    urls = [f"https://docs.example.com/guide/{n}" for n in ("install", "configure", "deploy", "upgrade")]
    run_dir = run_data(tmp_path, ["source=urls", "template=docs_qa", "source.urls.fetch=brightdata_crawl",
                                  f"source.urls.urls=[{','.join(urls)}]", "source.urls.urls_file=null",
                                  *bd(fake)])
    assert fake.count("scrape") == 1 and fake.triggers[0]["query"]["dataset_id"] == "gd_m6gjtfmeh43we6cqc"
    rows = ledger(run_dir, "web")
    assert sorted(r["id"] for r in rows) == sorted(f"web:{u}#1" for u in urls)
    made = examples(run_dir)
    assert made and all(m["messages"][-1]["role"] == "assistant" for m in made)
    assert any("handles one part of the system" in m["messages"][-1]["content"] for m in made)


# ---------------------------------------------------------------- sync scrapes
def test_sync_scrape_of_five_urls(fake, tmp_path):
    fake.make_records = long_records
    run_dir = run_data(tmp_path, ["source=brightdata_amazon", f"source.brightdata.inputs=[{','.join(FIVE)}]",
                                  *bd(fake)])
    assert fake.count("scrape") == 1 and fake.count("trigger") == 0 and fake.count("progress") == 0
    rows = ledger(run_dir, "amazon")
    assert len(rows) == 5 and all(r["id"].startswith("amazon:sync_") for r in rows)
    assert sum(r["status"] == "kept" for r in rows) == 5
    asked = fake.triggers[0]["query"]["custom_output_fields"].split("|")
    # url: the split group (group_field)
    assert asked == sorted(["brand", "description", "error", "error_code", "features", "input", "title", "url"])


def test_sync_scrape_that_times_out_is_polled(fake, tmp_path):
    fake.make_records = long_records
    fake.scrape_times_out = True
    run_dir = run_data(tmp_path, ["source=brightdata_amazon", f"source.brightdata.inputs=[{','.join(FIVE)}]",
                                  *bd(fake)])
    sid = fake.triggers[0]["snapshot_id"]
    assert fake.count("scrape") == 1 and fake.count("progress") >= 1 and fake.count("snapshot") == 1
    assert sorted(r["id"] for r in ledger(run_dir, "amazon")) == sorted(f"amazon:{sid}#{n}" for n in range(1, 6))


# ---------------------------------------------------------------- before paying
def test_max_cost_refuses_before_any_request_that_bills(fake, tmp_path):
    with pytest.raises(WebtuneError, match=r"max_cost=1 needs a price to compare with: set source\.brightdata\."
                                           r"price_per_1k") as err:
        run_data(tmp_path, ["source=brightdata_amazon", *bd(fake, max_cost=1)])
    assert fake.billing_requests() == 0 and "\n" not in str(err.value)
    with pytest.raises(WebtuneError, match=r"would cost about \$0\.0030 .* over source\.brightdata\.max_cost=0\.001"):
        run_data(tmp_path, ["source=brightdata_amazon", *bd(fake, max_cost=0.001, price_per_1k=1.5)])
    assert fake.requests == []


def test_a_429_on_the_first_trigger_is_waited_out(fake, tmp_path):
    fake.make_records = long_records
    fake.fail("trigger", status=429, body="You have too many running jobs for this dataset.")
    console = quiet()
    run_dir = run_data(tmp_path, ["source=brightdata_amazon", *bd(fake, mode="async")], console)
    assert fake.count("trigger") == 2 and len(fake.triggers) == 1
    assert len(ledger(run_dir, "amazon")) == 2
    assert "answered 429 to the trigger" in console.file.getvalue()


# ---------------------------------------------------------------- the real CLI: Ctrl-C, sweeps, preview, resume
def cli_env(fake) -> dict:
    return {**os.environ, ENV: fake.token, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def cli(fake, *args, stdin=subprocess.DEVNULL, log=None):
    return subprocess.Popen([sys.executable, "-m", "webtune", *args], cwd=REPO, env=cli_env(fake), stdin=stdin,
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=default_sigint)


def wait_until(ready, proc, what, log: Path, timeout=120):
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def prepare_args(tmp_path, fake, *extra):
    return ["prepare", f"runs_dir={tmp_path / 'runs'}", "mix.general.enabled=false", "mix.test_fraction=0.3",
            "mix.val_fraction=0.2", *SMALL, *source_args(fake), *extra]


def source_args(fake):
    return ["source=brightdata_amazon", f"source.brightdata.inputs=[{','.join(TWELVE)}]",
            *bd(fake, mode="async", poll_interval=0.05)]


def run_dirs(tmp_path):
    return [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]


def test_ctrl_c_then_cancel_the_collection(fake, tmp_path):
    fake.polls_per_status = 10**6
    master, slave = pty.openpty()
    log_path = tmp_path / "cli.log"
    with open(log_path, "w") as log:
        proc = cli(fake, *prepare_args(tmp_path, fake), stdin=slave, log=log)
    os.close(slave)
    try:
        wait_until(lambda: fake.count("progress") >= 2, proc, "polling", log_path)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: "Cancel Bright Data collection" in log_path.read_text(), proc, "the question", log_path)
        os.write(master, b"y\n")
        assert proc.wait(60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    sid = fake.triggers[0]["snapshot_id"]
    assert fake.cancels == [sid]
    assert f"cancelled Bright Data collection {sid} at your request" in log_path.read_text()


def test_ctrl_c_leave_running_then_resume_is_one_collection(fake, tmp_path):
    fake.make_records = long_records
    fake.polls_per_status = 10**6
    log_path = tmp_path / "cli.log"
    with open(log_path, "w") as log:
        proc = cli(fake, *prepare_args(tmp_path, fake), log=log)        # stdin: no terminal
    wait_until(lambda: fake.count("progress") >= 2, proc, "polling", log_path)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) != 0
    out = log_path.read_text()
    assert "no terminal to ask" in out and "keeps running at Bright Data" in out and fake.cancels == []
    fake.polls_per_status = 1
    [run_dir] = run_dirs(tmp_path)
    with open(log_path, "w") as log:                                  # the whole run: 4 steps on the toy model
        assert cli(fake, "resume", str(run_dir), log=log).wait(400) == 0, log_path.read_text()[-3000:]
    assert len(fake.triggers) == 1 and fake.count("trigger") == 1
    assert len(ledger(run_dir, "amazon")) == 12 and (run_dir / "model").is_dir()


@pytest.mark.slow          # the resume trains the point (4 steps on the toy model): ~2 min on a loaded machine
def test_a_sweep_a_preview_and_a_resume_trigger_one_collection(fake, tmp_path):
    fake.make_records = long_records
    log_path = tmp_path / "cli.log"
    with open(log_path, "w") as log:
        args = prepare_args(tmp_path, fake, "mix.seed=0,1,2")
        proc = cli(fake, args[0], "-m", *args[1:], log=log)
        assert proc.wait(600) == 0, log_path.read_text()[-3000:]
    points = [p for p in (tmp_path / "runs" / "sweeps").glob("*/*") if (p / "ledger.jsonl").exists()]
    assert len(points) == 3 and len(fake.triggers) == 1
    with open(log_path, "w") as log:
        preview = cli(fake, "preview", f"runs_dir={tmp_path / 'runs'}", "mix.general.enabled=false", *TINY_MODEL,
                      *source_args(fake), "n=2", log=log)                   # no --allow-trigger: the cache
        assert preview.wait(300) == 0, log_path.read_text()[-3000:]
    assert "Steel tumbler model" in log_path.read_text()
    with open(log_path, "w") as log:                                       # another source: refused, not paid
        refused = cli(fake, "preview", f"runs_dir={tmp_path / 'runs'}", *TINY_MODEL, "source=brightdata_amazon",
                      *bd(fake), "n=1", log=log)
        assert refused.wait(300) != 0
    assert "--allow-trigger" in log_path.read_text() and fake.billing_requests() == 1
    with open(log_path, "w") as log:
        assert cli(fake, "resume", str(points[0]), log=log).wait(300) == 0, log_path.read_text()[-3000:]
    assert len(fake.triggers) == 1 and fake.count("trigger") == 1 and fake.count("scrape") == 0
