"""Helpers for the prepare tests: real JSONL files, real templates, the structured configs."""
from __future__ import annotations

import json
import random
from pathlib import Path

import orjson
import pytest
from omegaconf import OmegaConf

from webtune.config import FilesConfig, PrepareConfig, SourceConfig, TaskConfig, TemplateConfig, TurnConfig
from webtune.prepare import PrepareInput
from webtune.sources import iter_records

_rng = random.Random(1234)
VOCAB = sorted({"".join(_rng.choice("bcdfghjklmnprstvz") + _rng.choice("aeiou") for _ in range(3))
                for _ in range(6000)})


def words(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def product(seed: int, **over) -> dict:
    rec = {"title": f"Chair {seed} " + words(seed + 10_000, 4), "brand": f"Brand{seed % 7}",
           "description": words(seed, 60).capitalize() + ".", "features": [words(seed + 20_000, 6)],
           "final_price": 10.5 + seed, "rating": 4.0}
    rec.update(over)
    return rec


def write_jsonl(path: Path, items: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for item in items:
            fh.write((item if isinstance(item, bytes) else orjson.dumps(item)) + b"\n")
    return path


def prepare_cfg(workers: int = 1, **filters):
    cfg = OmegaConf.create({"prepare": OmegaConf.structured(PrepareConfig(workers=workers))})
    for key, value in filters.items():
        OmegaConf.update(cfg, f"prepare.filters.{key}", value)
    return cfg


def source(name: str, path: Path, **kw):
    return OmegaConf.structured(SourceConfig(name=name, files=FilesConfig(paths=[str(path)], format="jsonl",
                                                                          root=str(path.parent)), **kw))


@pytest.fixture
def templates(tmp_path) -> Path:
    """A product_description task's files, as a user would write them."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "user.j2").write_text("Write a description.\nTitle: {{ title }}\nBrand: {{ brand }}\n"
                                    "{% if features %}{% for f in features %}- {{ f }}\n{% endfor %}{% endif %}")
    (folder / "assistant.j2").write_text("{{ description }}\n")
    (folder / "input.schema.json").write_text(json.dumps({
        "type": "object", "required": ["title", "brand", "description"],
        "properties": {"title": {"type": "string"}, "brand": {"type": "string"},
                       "description": {"type": "string", "minLength": 10},
                       "features": {"type": ["array", "null"], "items": {"type": "string"}},
                       "final_price": {"type": ["number", "null"]}, "rating": {"type": ["number", "null"]}}}))
    return folder


def product_template(folder: Path, name: str = "product_description", **over):
    task = dict(name=name, system="You write product copy for {{ brand }}.", user=str(folder / "user.j2"),
                assistant=str(folder / "assistant.j2"), input_schema=str(folder / "input.schema.json"),
                fields=["title", "brand", "description"])
    task.update(over)
    return OmegaConf.structured(TemplateConfig(name="products", tasks=[TaskConfig(**task)]))


def general_template():
    return OmegaConf.structured(TemplateConfig(name="general_chat", tasks=[TaskConfig(
        name="general_chat", turns=[TurnConfig(role="user", text="{{ messages[0].content }}"),
                                    TurnConfig(role="assistant", text="{{ messages[1].content }}")])]))


def domain_input(path: Path, folder: Path, name: str = "shop", **kw) -> PrepareInput:
    return PrepareInput("domain", source(name, path), product_template(folder, **kw), [path], iter_records)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh]


def events(run_dir: Path) -> list[dict]:
    out = []
    for part in sorted((run_dir / "ledger" / "prepare").glob("*.jsonl")):
        out += read_jsonl(part)
    return out


def finals(run_dir: Path) -> dict[str, dict]:
    """Each record's final (kept/rejected) event; asserts there is exactly one."""
    out: dict[str, dict] = {}
    for ev in events(run_dir):
        if ev["status"] != "repaired":
            assert ev["id"] not in out, f"two final events for {ev['id']}"
            out[ev["id"]] = ev
    return out
