"""A refresh of a Bright Data source, against the fake Bright Data server on 127.0.0.1: one new
collection per refresh, diffed by url, and a refresh killed during training resumes without a second
collection."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, webtune
from tests.fakes.brightdata_server import FakeBrightData
from tests.sources.test_brightdata_runs import ENV, bd, cli, long_records, run_dirs

URLS = [f"https://www.amazon.com/dp/B0REF{i:04d}" for i in range(40)]
MODEL = [*TINY_MODEL, "model.method=lora", "model.lora.r=8", "model.train.batch_tokens=1024", "mix.max_seq_len=512",
         "mix.general.enabled=false", "mix.test_fraction=0.3", "eval.generation_examples=2", "eval.samples=2",
         "eval.max_new_tokens=8", "prepare.workers=1"]


def inputs(urls: list[str]) -> str:
    return f"source.brightdata.inputs=[{','.join(urls)}]"


def page_records(given: list[dict], changed: frozenset = frozenset()) -> list[dict]:
    """A product page per url, its text a function of the url alone (not of its place in the inputs)."""
    out = []
    for g in given:
        i = int(g["url"][-4:]) + (500 if "NEW" in g["url"] else 0)
        [rec] = long_records([g])
        rec.update(title=f"Steel tumbler model {i}", features=["steel", f"{i + 10} hours cold"],
                   description=f"Model {i} keeps drinks cold for {i + 10} hours and fits every cup holder. "
                               f"Its lid number {i} seals tight, and the steel wall never sweats."
                               + (" This year's model adds a second lid and a carry loop." if g["url"] in changed
                                  else ""))
        out.append(rec)
    return out


@pytest.mark.slow     # two trainings and an evaluation of three models on the toy model
def test_a_refresh_killed_in_training_resumes_with_one_collection(tmp_path):
    with FakeBrightData(polls_per_status=1) as fake:
        env = {ENV: fake.token}
        fake.make_records = page_records
        source = ["source=brightdata_amazon", inputs(URLS), *bd(fake, mode="async", poll_interval=0.05)]
        r = webtune("run", f"runs_dir={tmp_path / 'runs'}", *source, *MODEL, "model.train.max_steps=2",
                    cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr
        [v1] = run_dirs(tmp_path)
        registry = ["--registry", str(tmp_path / "runs/registry")]
        for args in (("register", "shop", str(v1)), ("promote", "shop", "1", "--force")):
            assert webtune("models", *args, *registry, cwd=tmp_path).returncode == 0
        assert len(fake.triggers) == 1

        # the web moved on: 2 pages gone, 8 new, 3 rewritten
        fake.make_records = lambda given: page_records(given, frozenset(URLS[2:5]))
        new_urls = URLS[2:] + [f"https://www.amazon.com/dp/B0NEW{i:04d}" for i in range(8)]
        log_path = tmp_path / "refresh.log"
        with open(log_path, "w") as log:
            proc = cli(fake, "refresh", "shop", *registry, inputs(new_urls), "model.train.max_steps=40",
                       "model.train.save_steps=1", log=log)
        deadline = time.monotonic() + 600
        while "train: running" not in log_path.read_text() or not list(tmp_path.glob("runs/*_refresh/checkpoints/*")):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the refresh never reached training"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        [run] = list(tmp_path.glob("runs/*_refresh"))
        assert len(fake.triggers) == 2                       # v1's collection and the refresh's one

        r = webtune("resume", str(run), "--verbose", cwd=tmp_path, env=env, timeout=900)
        assert r.returncode in (0, 3), r.stdout[-3000:] + r.stderr
        assert len(fake.triggers) == 2 and fake.count("trigger") == 2     # nothing collected (or paid) twice
        diff = json.loads((run / "data/refresh/diff.json").read_text())
        assert diff["key_field"] == "url"
        assert diff["counts"] == {"new": 8, "changed": 3, "same": 35, "gone": 2}
        outcome = json.loads((run / "promotion.json").read_text())
        assert outcome["candidate"] == "shop@v2" and (r.returncode == 0) == outcome["promoted"]
