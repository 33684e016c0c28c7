"""The pipeline: which stages run, in what order, what each reads and writes.

Each stage's work lives in its own package; this file only wires paths and config sections
so the runner can skip, cache and resume.
"""
from __future__ import annotations

from pathlib import Path

from .runner import Stage, StageContext
from .rundir import hash_path, read_json, write_json

SOURCES_JSON = "data/raw/sources.json"
SPLITS = ["data/train.jsonl", "data/val.jsonl", "data/test.jsonl", "data/general_test.jsonl"]
LEDGER_STAGES = ["prepare", "mix"]


def source_inputs(cfg) -> list[tuple[str, object]]:
    """(side, source config) for the domain source and, when mixed in, the general one."""
    out = [("domain", cfg.source)]
    if cfg.mix.general.enabled:
        out.append(("general", cfg.mix.general.source))
    return out


def run_source(ctx: StageContext) -> dict:
    from . import sources
    found = {}
    for side, src in source_inputs(ctx.cfg):
        raw_dir = ctx.run_dir / "data" / "raw" / src.name
        paths = sources.acquire(src, raw_dir, console=ctx.console)
        found[side] = {"name": src.name, "kind": src.kind,
                       "paths": [str(p) for p in paths],
                       "sha256": {str(p): hash_path(p) for p in paths}}
        ctx.log(f"  {side} source {src.name!r} ({src.kind}): {len(paths)} file(s)")
    write_json(ctx.run_dir / SOURCES_JSON, found)
    return {"sources": {v["name"]: len(v["paths"]) for v in found.values()}}


def run_prepare(ctx: StageContext) -> dict:
    from . import prepare
    found = read_json(ctx.run_dir / SOURCES_JSON)
    templates = {"domain": ctx.cfg.template, "general": ctx.cfg.mix.general.template}
    inputs = [prepare.PrepareInput(side=side, source=src, template=templates[side],
                                   paths=[Path(p) for p in found[side]["paths"]])
              for side, src in source_inputs(ctx.cfg)]
    return prepare.run(ctx.cfg, ctx.run_dir, inputs, console=ctx.console)


def template_files(cfg) -> list[Path]:
    from . import prepare
    files = prepare.template_files(cfg.template)
    if cfg.mix.general.enabled:
        files += prepare.template_files(cfg.mix.general.template)
    return files


def run_mix(ctx: StageContext) -> dict:
    from .mix import mix
    return mix.run(ctx.cfg, ctx.run_dir, console=ctx.console)


def tokenizer_files(cfg) -> list[Path]:
    files = [Path(p) for p in cfg.mix.general.test_files] if cfg.mix.general.enabled else []
    if cfg.model.kind == "hf":
        path = Path(cfg.model.tokenizer or cfg.model.name_or_path)
        if path.is_dir():
            files.append(path)
        if cfg.model.chat_template:
            files.append(Path(cfg.model.chat_template))
    return files


def run_ledger(ctx: StageContext) -> dict:
    from . import ledger
    counts = ledger.fold(ctx.run_dir, LEDGER_STAGES)
    for name, c in counts["sources"].items():
        ctx.log(f"  ledger {name}: {c['in']} in = {c['kept']} kept + {c['rejected']} rejected")
    return counts


def run_train(ctx: StageContext) -> dict:
    if ctx.cfg.model.kind == "openai":
        from .backends import openai_ft
        return openai_ft.train(ctx.cfg, ctx.run_dir, console=ctx.console)
    from .backends import hf
    return hf.train(ctx.cfg, ctx.run_dir, console=ctx.console)


def model_files(cfg) -> list[Path]:
    path = Path(cfg.model.name_or_path)
    return [path] if cfg.model.kind == "hf" and path.is_dir() else []


def run_evaluate(ctx: StageContext) -> dict:
    from .evaluate import metrics
    return metrics.run(ctx.cfg, ctx.run_dir, console=ctx.console)


def run_report(ctx: StageContext) -> dict:
    from .evaluate import report
    return report.run(ctx.cfg, ctx.run_dir)


def run_register(ctx: StageContext) -> dict:
    from .deploy import registry
    name = ctx.cfg.registry.name or ctx.cfg.name
    version = registry.register(Path(ctx.cfg.registry.path), name, ctx.run_dir)
    ctx.log(f"  registered as {name}@v{version}")
    write_json(ctx.run_dir / "registered.json", {"name": name, "version": version})
    return {"name": name, "version": version}


def build_stages() -> list[Stage]:
    return [
        Stage("source", run_source, config=["source", "mix.general.enabled", "mix.general.source"],
              outputs=[SOURCES_JSON], cacheable=False),
        Stage("prepare", run_prepare,
              config=["source", "template", "prepare", "mix.general.enabled", "mix.general.source",
                      "mix.general.template"],
              inputs=[SOURCES_JSON], outputs=["data/examples.jsonl", "ledger/prepare"],
              external=template_files),
        Stage("mix", run_mix,
              config=["mix", "model.kind", "model.name_or_path", "model.tokenizer", "model.chat_template"],
              inputs=["data/examples.jsonl"], outputs=SPLITS + ["data/mix.json", "data/packed", "ledger/mix"],
              external=tokenizer_files),
        Stage("ledger", run_ledger, config=[], inputs=["ledger/prepare", "ledger/mix"],
              outputs=["ledger.jsonl"]),
        Stage("train", run_train, config=["model"],
              inputs=["data/packed", "data/train.jsonl", "data/val.jsonl"], outputs=["model"],
              external=model_files, keep=["model/openai_job.json"], scratch=["checkpoints"]),
        Stage("evaluate", run_evaluate, config=["eval", "model", "template"],
              inputs=["model"] + SPLITS, outputs=["eval"], external=model_files),
        Stage("report", run_report, config=["name"],
              inputs=["stats", "eval", "ledger.jsonl", "data/mix.json"],
              outputs=["report.html", "metrics.json"], cacheable=False),
        Stage("register", run_register, config=["registry"], inputs=["model", "metrics.json"],
              outputs=["registered.json"], enabled=lambda cfg: cfg.registry.auto_register, cacheable=False),
    ]
