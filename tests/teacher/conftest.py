"""Documentation pages, the config that asks a fake teacher about them, and the data stages in process."""
from __future__ import annotations

import copy
import functools
import random
from pathlib import Path

import orjson
import pytest
import yaml
from omegaconf import OmegaConf

from tests.fakes.teacher_server import FakeTeacher
from webtune.console import console
from webtune.hydra_setup import compose
from webtune.runner import StageContext

FIXTURE_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_model"
TOPICS = ["parser", "encoder", "scheduler", "archive", "socket", "logger", "matrix", "cursor", "thread", "buffer",
          "template", "session", "router", "cipher", "stream", "tokenizer"]
VERBS = ["reads", "writes", "checks", "returns", "opens", "closes", "keeps", "sends", "builds", "parses"]


def sentence(rng: random.Random, topic: str) -> str:
    words = rng.sample(TOPICS, 3)
    return (f"The {topic} {rng.choice(VERBS)} the {words[0]} before it {rng.choice(VERBS)} a {words[1]}, "
            f"so the {words[2]} option {rng.randint(1000, 9_999_999)} stays {rng.choice(['valid', 'cached', 'small', 'open'])}.")


def write_pages(folder: Path, pages: int = 4, sections: int = 3, seed: int = 0, extra: dict | None = None) -> Path:
    """HTML pages of `sections` sections each, every section long enough to stand alone; `extra`
    adds a sentence to a section: {(page, section): text}."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for p in range(pages):
        topic = TOPICS[p % len(TOPICS)]
        body = [f"<h1>{topic}{p} — the {topic} module</h1>", f"<p>{' '.join(sentence(rng, topic) for _ in range(3))}</p>"]
        for s in range(sections):
            body.append(f"<h2>Using the {topic}{p} {TOPICS[(p + s + 1) % len(TOPICS)]} feature {s + 1}</h2>")
            body.append(f"<p>{' '.join(sentence(rng, topic) for _ in range(4))}</p>")
            body.append(f"<p>{' '.join(sentence(rng, topic) for _ in range(3))} {(extra or {}).get((p, s), '')}</p>")
        (folder / f"{topic}{p}.html").write_text(
            f"<html><head><title>{topic}{p}</title></head><body><main>{''.join(body)}</main></body></html>")
    return folder


@pytest.fixture
def fake():
    with FakeTeacher() as server:
        yield server


@pytest.fixture
def pages(tmp_path) -> Path:
    return write_pages(tmp_path / "site")


@functools.lru_cache(maxsize=1)
def _composed():
    return compose(["source=docs_pages", "template=docs_qa_teacher", "teacher.model=fake-teacher",
                    "mix.general.enabled=false", "prepare.workers=1"])


def config(tmp_path: Path, pages: Path, base_url: str, *more: str):
    """The shipped docs_pages + docs_qa_teacher config asking the fake; `more` as `key=value` overrides
    (composed once: Hydra's compose costs seconds on a loaded machine)."""
    cfg = copy.deepcopy(_composed())
    for item in [f"source.files.paths=[{pages}/*.html]", f"teacher.base_url={base_url}",
                 f"runs_dir={tmp_path / 'runs'}", *more]:
        key, value = item.split("=", 1)
        OmegaConf.update(cfg, key, yaml.safe_load(value))
    return cfg


def prepare(cfg, run_dir: Path) -> dict:
    """The source and prepare stages (teacher step included), in this process."""
    from webtune import stages
    ctx = StageContext(cfg, Path(run_dir), console, lambda message: None)
    stages.run_source(ctx)
    return stages.run_prepare(ctx)


def examples(run_dir: Path) -> list[dict]:
    return [orjson.loads(line) for line in (Path(run_dir) / "data/examples.jsonl").read_bytes().splitlines()]


def teacher_events(run_dir: Path) -> dict[str, dict]:
    path = Path(run_dir) / "ledger/prepare/teacher.jsonl"
    return {ev["id"]: ev for ev in map(orjson.loads, path.read_bytes().splitlines())}
