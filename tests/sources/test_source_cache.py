"""Content-addressed source snapshots (issue 16): a source is acquired, and paid for, once.

Real sources against our own fakes on 127.0.0.1 (a small website, Bright Data), the real source
stage through the real Runner, the real CLI for the sweep; the fakes count what was asked of them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from tests.conftest import REPO, TINY_MODEL, webtune
from tests.fakes.web_server import FakeWeb
from webtune.hydra_setup import validate_overrides
from webtune.errors import WebtuneError
from webtune.rundir import new_run_dir
from webtune.fileio import read_json
from webtune.runner import Runner
from webtune.sources import cache, iter_records, reading_config
from webtune.stages import build_stages, raw_inputs

PAGES = ["a.html", "b.html", "c.html"]


def page(title: str) -> bytes:
    body = " ".join(f"{title} sentence number {i} says something useful about the topic." for i in range(30))
    return f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1><p>{body}</p></main></body></html>".encode()


@pytest.fixture
def web():
    with FakeWeb(crawl_delay=0.05) as server:
        for name in PAGES:
            server.pages[name] = page(name.split(".")[0].upper())
        yield server


def compose(runs: Path, *over: str):
    return validate_overrides([f"runs_dir={runs}", *TINY_MODEL, "prepare.workers=1", *over])


def urls_overrides(web, tmp_path) -> list[str]:
    urls = ",".join(web.url(f"/pages/{p}") for p in PAGES)
    return ["source=urls", f"source.urls.urls=[{urls}]", "source.urls.urls_file=null", "source.urls.delay=0",
            f"source.urls.cache_dir={tmp_path / 'http'}", "mix.general.enabled=false", "template=docs_qa"]


def source_stage(cfg, run_dir: Path) -> dict:
    Runner(cfg, run_dir, build_stages(), Console(quiet=True), log=lambda m: None).run(only={"source"})
    return read_json(run_dir / "data/raw/sources.json")


# ---------------------------------------------------------------- reuse
def test_sweep_points_over_a_urls_source_fetch_each_url_once(web, tmp_path):
    runs = tmp_path / "runs"
    found = []
    for lr in ("1e-3", "3e-4", "1e-4"):
        cfg = compose(runs, *urls_overrides(web, tmp_path), f"model.train.learning_rate={lr}")
        found.append(source_stage(cfg, new_run_dir(runs, f"lr{lr}")))
    assert web.requests_per_page() == {f"/pages/{p}": 1 for p in PAGES}
    assert found[0] == found[1] == found[2]           # relative paths, same hashes: the same prepare key
    assert all(not Path(p).is_absolute() for p in found[0]["domain"]["paths"])
    assert len([p for p in (runs / ".cache/source").iterdir() if p.is_dir()]) == 1


def test_parallel_launchers_acquire_once(web, tmp_path):
    """Three processes start the same source at once: the lock lets one fetch, the others link."""
    runs = tmp_path / "runs"
    cfg = compose(runs, *urls_overrides(web, tmp_path), "source.urls.delay=0.3")
    (tmp_path / "src.yaml").write_text(OmegaConf.to_yaml(cfg.source))
    code = ("import sys; from omegaconf import OmegaConf; from webtune.sources.cache import acquire_cached\n"
            "snap = acquire_cached(OmegaConf.load(sys.argv[1]), sys.argv[2])\nprint(snap.key)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "src.yaml"), str(runs)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1
    assert web.requests_per_page() == {f"/pages/{p}": 1 for p in PAGES}


def test_ids_stay_relative_to_the_original_source_root(tmp_path):
    root = tmp_path / "corpus"
    (root / "en" / "deep").mkdir(parents=True)
    (root / "en" / "deep" / "a.jsonl").write_text('{"title": "x"}\n')
    (root / "b.jsonl").write_text('{"title": "y"}\n{"title": "z"}\n')
    over = ["source=files", f"source.files.paths=[{root / 'en'}]", f"source.files.root={root}",
            "source.files.format=jsonl", "source.name=c"]
    cfg = compose(tmp_path / "runs", *over)
    run_dir = new_run_dir(tmp_path / "runs", "ids")
    source_stage(cfg, run_dir)
    [(side, src, paths)] = [x for x in raw_inputs(cfg, run_dir) if x[0] == "domain"]
    assert [r.id for r in iter_records(src, paths)] == ["c:en/deep/a.jsonl#1"]
    assert all(run_dir in p.parents for p in paths)     # read from the run's own copy


def test_an_edited_input_file_is_a_new_snapshot_and_the_old_run_keeps_its_copy(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"title": "one"}\n')
    over = ["source=files", f"source.files.paths=[{data}]", "source.files.format=jsonl", "source.name=d"]
    runs = tmp_path / "runs"
    first = new_run_dir(runs, "first")
    a = source_stage(compose(runs, *over), first)
    data.write_text('{"title": "two"}\n')               # the user edits the original in place
    b = source_stage(compose(runs, *over), new_run_dir(runs, "second"))
    assert a["domain"]["snapshot"] != b["domain"]["snapshot"]
    assert (first / a["domain"]["paths"][0]).read_text() == '{"title": "one"}\n'


# ---------------------------------------------------------------- damage
def test_a_missing_raw_file_is_acquired_again_not_looped(web, tmp_path):
    runs = tmp_path / "runs"
    cfg = compose(runs, *urls_overrides(web, tmp_path))
    run_dir = new_run_dir(runs, "damaged")
    found = source_stage(cfg, run_dir)
    raw = run_dir / found["domain"]["paths"][1]
    entry_file = cache.cached_copy(raw)
    assert entry_file is not None and runs / ".cache/source" in entry_file.parents
    raw.unlink()
    entry_file.unlink()                                  # gone from the run and from the cache
    again = source_stage(cfg, run_dir)                   # resume: the source stage's output is damaged
    assert again["domain"]["paths"] == found["domain"]["paths"] and raw.exists()
    assert again["domain"]["sha256"][found["domain"]["paths"][1]] == found["domain"]["sha256"][found["domain"]["paths"][1]]
    assert web.requests_per_page()["/pages/a.html"] == 2  # fetched again, once (the HTTP cache answers 304)


# ---------------------------------------------------------------- `webtune sources`
def test_sources_list_show_and_forget(tmp_path, capsys):
    runs = tmp_path / "runs"
    source_stage(compose(runs, "mix.general.enabled=false"), new_run_dir(runs, "x"))
    [entry] = [p for p in (runs / ".cache/source").iterdir() if p.is_dir()]
    ns = lambda action, key=None: argparse.Namespace(action=action, key=key, runs_dir=str(runs))  # noqa: E731
    assert cache.command(ns("list")) == 0
    assert cache.command(ns("show", entry.name[:8])) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["identity"]["kind"] == "files" and "products.json" in shown["files"]
    with pytest.raises(WebtuneError, match="start with 'nope'"):
        cache.command(ns("forget", "nope"))
    assert cache.command(ns("forget", entry.name[:8])) == 0
    assert not entry.exists()
    rows = cache.entries(runs / ".cache/source")
    assert rows == []


def test_sources_list_shows_age_and_size_through_the_cli(tmp_path):
    runs = tmp_path / "runs"
    source_stage(compose(runs, "mix.general.enabled=false"), new_run_dir(runs, "x"))
    r = webtune("sources", "list", "--runs-dir", str(runs))
    assert r.returncode == 0, r.stderr[-1500:]
    out = r.stdout + r.stderr
    assert "example" in out and "KB" in out and "complete" in out


# ---------------------------------------------------------------- Bright Data: one collection in all
def resume_source_stage(run_dir: Path) -> None:
    """`webtune resume`'s first step, in this process: the run's own config, its manifest."""
    from webtune.hydra_setup import load_run_config
    source_stage(load_run_config(run_dir), run_dir)


def test_a_sweep_a_preview_and_a_resume_trigger_one_collection(tmp_path, monkeypatch):
    from tests.fakes.brightdata_server import FakeBrightData
    runs = tmp_path / "runs"
    with FakeBrightData() as fake:
        fake.fail("trigger", status=429, body={"error": "You have too many running jobs for this dataset."})
        env = {"WEBTUNE_TEST_BD_TOKEN": fake.token}
        monkeypatch.setenv("WEBTUNE_TEST_BD_TOKEN", fake.token)
        over = [f"runs_dir={runs}", *TINY_MODEL, "prepare.workers=1", "source=brightdata_amazon",
                "mix.general.enabled=false", f"source.brightdata.base_url={fake.base_url}",
                "source.brightdata.api_key_env=WEBTUNE_TEST_BD_TOKEN", "source.brightdata.poll_interval=0.01",
                "source.brightdata.mode=async", "source.brightdata.rate_limit_wait=0.01",
                "source.brightdata.retry_backoff=0.01"]
        refused = webtune("preview", "n=1", *over, env=env)
        assert refused.returncode != 0 and "--allow-trigger" in refused.stderr.strip().splitlines()[-1]
        assert fake.triggers == []                                      # preview never bills by itself
        sweep = webtune("prepare", "-m", "model.train.learning_rate=1e-3,3e-4,1e-4", *over, env=env)
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        shown = webtune("preview", "n=1", *over, env=env)
        assert shown.returncode == 0 and "amazon:" in shown.stdout, shown.stdout[-2000:] + shown.stderr[-2000:]
        point = next((runs / "sweeps").glob("*/0_*"))
        for raw in (point / "data/raw/amazon").glob("*.jsonl.gz"):
            raw.unlink()                                    # damaged: the resume re-links it, no trigger
        resume_source_stage(point)
        assert list((point / "data/raw/amazon").glob("*.jsonl.gz"))
        assert len(fake.triggers) == 1                                  # the 429 was waited out, then once
        assert sum(1 for r in fake.requests if r["endpoint"] == "trigger") == 2
        snapshots = {json.loads((p / "data/raw/sources.json").read_text())["domain"]["snapshot"]
                     for p in (runs / "sweeps").glob("*/*_*") if (p / "data/raw/sources.json").exists()}
        assert len(snapshots) == 1
