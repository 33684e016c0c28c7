"""The pipeline: which stages run, in what order, what each reads and writes.

Each stage's work lives in its own package; this file only wires paths and config sections
so the runner can skip, cache and resume.
"""
from __future__ import annotations

from pathlib import Path

from .runner import Stage, StageContext
from .rundir import hub_revision
from .fileio import hash_path, read_json, write_json

SOURCES_JSON = "data/raw/sources.json"
TEACHER_REPLIES = "data/teacher_replies.jsonl"   # the teacher's replies a run used: reproduce asks nothing
SPLITS = ["data/train.jsonl", "data/val.jsonl", "data/test.jsonl", "data/general_test.jsonl"]
REFRESH_DIFF = "data/refresh/diff.jsonl"   # a refresh run's record diff (refresh/diff.py)
OLD_TEST = "data/test_old.jsonl"           # a refresh run's frozen test set of the promoted version
LEDGER_STAGES = ["prepare", "mix"]


def source_inputs(cfg) -> list[tuple[str, object]]:
    """(side, source config) for the domain source and, when mixed in, the general one."""
    out = [("domain", cfg.source)]
    if cfg.mix.general.enabled:
        out.append(("general", cfg.mix.general.source))
    return out


def requested_sources(cfg) -> list[tuple[str, object]]:
    """(side, source config as acquired): with the fields its template reads, where a source asks."""
    from . import sources
    from .prepare.fields import fields_read
    templates = {"domain": cfg.template, "general": cfg.mix.general.template}
    return [(side, sources.as_requested(src, fields_read(templates[side], cfg.prepare)))
            for side, src in source_inputs(cfg)]


def run_source(ctx: StageContext, allow_paid: bool = True) -> dict:
    """Link each source's cached snapshot (acquired once per content key) into data/raw/<name>/ and
    describe it in sources.json: paths relative to the run directory, content hashes, counts."""
    from . import sources
    from .sources import cache
    found = {}
    for side, src in requested_sources(ctx.cfg):
        snap = cache.acquire_cached(src, ctx.cfg.runs_dir, allow_paid=allow_paid, console=ctx.console)
        paths, root = cache.link_into(snap, ctx.run_dir / "data" / "raw" / src.name)
        rel = [p.relative_to(ctx.run_dir).as_posix() for p in paths]
        found[side] = {"name": src.name, "kind": src.kind, "snapshot": snap.key,
                       "root": root.relative_to(ctx.run_dir).as_posix() if root is not None else None,
                       "paths": rel, "sha256": {r: hash_path(p) for r, p in zip(rel, paths)},
                       "counts": sources.count(sources.reading_config(src, root), paths)}
        ctx.log(f"  {side} source {src.name!r} ({src.kind}): {len(paths)} file(s), snapshot {snap.key[:12]}")
    write_json(ctx.run_dir / SOURCES_JSON, found)
    return {"sources": {v["name"]: len(v["paths"]) for v in found.values()}}


def raw_inputs(cfg, run_dir: Path) -> list[tuple[str, object, list[Path]]]:
    """(side, source config to read with, raw paths) of each source, as sources.json records them."""
    from . import sources
    found = read_json(Path(run_dir) / SOURCES_JSON)
    out = []
    for side, src in source_inputs(cfg):
        info = found[side]
        root = Path(run_dir) / info["root"] if info.get("root") else None
        out.append((side, sources.reading_config(src, root), [Path(run_dir) / p for p in info["paths"]]))
    return out


def run_refresh(ctx: StageContext) -> dict:
    from .refresh import diff
    summary = diff.run(ctx.cfg, ctx.run_dir, raw_inputs)
    ctx.log("  refresh against {against}: {c[new]} new, {c[changed]} changed, {c[same]} same, {c[gone]} gone"
            .format(against=summary["against"], c=summary["counts"]))
    return summary


def run_prepare(ctx: StageContext) -> dict:
    from . import prepare, sources
    templates = {"domain": ctx.cfg.template, "general": ctx.cfg.mix.general.template}
    inputs = [prepare.PrepareInput(side=side, source=src, template=templates[side], paths=paths,
                                   read=sources.iter_records)
              for side, src, paths in raw_inputs(ctx.cfg, ctx.run_dir)]
    stats = prepare.run(ctx.cfg, ctx.run_dir, inputs, console=ctx.console)
    from . import teacher   # template tasks whose requests a teacher model writes (none: nothing happens)
    asked = teacher.run(ctx.cfg, ctx.run_dir, inputs, stats, ctx.run_dir / TEACHER_REPLIES, console=ctx.console)
    return {**stats, "teacher": asked} if asked else stats


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
        path = Path(cfg.model.tokenizer) if cfg.model.tokenizer else model_path(cfg)
        if path.exists():
            files.append(path)
        if cfg.model.chat_template:
            files.append(Path(cfg.model.chat_template))
    return files


def mix_files(cfg) -> list[Path]:
    """The tokenizer's files and the eval.benchmarks files mix decontaminates against."""
    from .paths import locate
    return tokenizer_files(cfg) + [locate(p) for p in cfg.eval.get("benchmarks") or []]


def run_ledger(ctx: StageContext) -> dict:
    from . import ledger
    found = read_json(ctx.run_dir / SOURCES_JSON, {}) or {}
    counts = ledger.fold(ctx.run_dir, LEDGER_STAGES,
                         read={k: n for side in found.values() for k, n in (side.get("counts") or {}).items()})
    for name, c in counts["sources"].items():
        ctx.log(f"  ledger {name}: {c['in']} in = {c['kept']} kept + {c['rejected']} rejected")
    files = counts.get("files", {})
    if files:
        ctx.log(f"  ledger matches what the sources read: {len(files)} file(s), "
                f"{sum(f['read'] for f in files.values()):,} records counted in the raw bytes")
    return counts


def run_train(ctx: StageContext) -> dict:
    if ctx.cfg.model.kind == "openai":
        from .train import openai_ft
        return openai_ft.train(ctx.cfg, ctx.run_dir, console=ctx.console)
    from .train import hf
    return hf.train(ctx.cfg, ctx.run_dir, console=ctx.console)


def hub_revisions(cfg) -> dict:
    """The commits the model and tokenizer hub ids resolve to (local folders are hashed instead)."""
    if cfg.model.kind != "hf":
        return {}
    names = {cfg.model.name_or_path, cfg.model.tokenizer or cfg.model.name_or_path}
    return {n: hub_revision(n) for n in sorted(names) if not Path(n).is_dir()}


# distributions whose version changes a stage's output bytes
PREPARE_LIBS = ["trafilatura", "ftfy", "rensa", "datasketch", "py3langid", "jinja2", "jsonschema", "ijson",
                "orjson", "webvtt-py", "lxml", "justext", "protego", "datasets"]
MODEL_LIBS = ["transformers", "tokenizers", "jinja2"]
TRAIN_LIBS = MODEL_LIBS + ["torch", "peft", "accelerate", "safetensors", "openai"]
EVAL_LIBS = TRAIN_LIBS + ["sacrebleu", "rouge-score"]
GENERAL = ["mix.general.enabled", "mix.general.source", "mix.general.template"]
MIX_MODEL = ["model.kind", "model.name_or_path", "model.gguf_file", "model.tokenizer", "model.chat_template",
             "model.eos_token"]


def model_path(cfg) -> Path:
    """What a model config loads: its GGUF file (`model.gguf_file`, in name_or_path or a path), else the
    folder (or hub id) name_or_path."""
    from .base_model import gguf_path
    gguf = cfg.model.get("gguf_file")
    return gguf_path(cfg.model.name_or_path, gguf) if gguf else Path(cfg.model.name_or_path)


def model_files(cfg) -> list[Path]:
    path = model_path(cfg)
    return [path] if cfg.model.kind == "hf" and path.exists() else []


def evaluate_files(cfg) -> list[Path]:
    """The base model, and with eval.compare_to the registry's serving pointer (a promotion re-evaluates)."""
    name = cfg.eval.get("compare_to")
    pointer = Path(cfg.registry.path) / name / "current.json" if name else None
    return model_files(cfg) + ([pointer] if pointer is not None and pointer.exists() else [])


def run_evaluate(ctx: StageContext) -> dict:
    from .deploy.registry import promoted_model_folder
    from .evaluate import stage
    name = ctx.cfg.eval.get("compare_to")
    promoted = promoted_model_folder(ctx.cfg.registry.path, name) if name and ctx.cfg.model.kind == "hf" else None
    return stage.run(ctx.cfg, ctx.run_dir, console=ctx.console, promoted=promoted)


def run_decide(ctx: StageContext) -> dict:
    from .refresh import decide
    evidence = (read_json(ctx.run_dir / "eval/metrics.json", {}) or {}).get("evidence", {})
    return decide.run(ctx.cfg, ctx.run_dir, evidence.get("tuned_vs_promoted", {}))


def run_promote(ctx: StageContext) -> dict:
    from .refresh import decide
    return decide.act(ctx.cfg, ctx.run_dir)


def run_report(ctx: StageContext) -> dict:
    from .report import stage
    return stage.run(ctx.cfg, ctx.run_dir)


def run_register(ctx: StageContext) -> dict:
    from .deploy import registry
    name = ctx.cfg.registry.name or ctx.cfg.name
    version = registry.register(Path(ctx.cfg.registry.path), name, ctx.run_dir)
    ctx.log(f"  registered as {name}@v{version}")
    write_json(ctx.run_dir / "registered.json", {"name": name, "version": version})
    return {"name": name, "version": version}


def is_refresh(cfg) -> bool:
    return bool(cfg.refresh.model)


def build_stages() -> list[Stage]:
    return [
        Stage("source", run_source, config=["source", "template", "prepare"] + GENERAL,
              context=["runs_dir"], outputs=["data/raw"], cacheable=False),
        Stage("prepare", run_prepare, config=["source", "template", "prepare", "teacher"] + GENERAL,
              context=["runs_dir"], inputs=[SOURCES_JSON],
              outputs=["data/examples.jsonl", "ledger/prepare", "data/grounding_vocab.json", TEACHER_REPLIES],
              external=template_files, libraries=PREPARE_LIBS),
        Stage("refresh", run_refresh, config=["source", "refresh"], whole_config=True, inputs=[SOURCES_JSON],
              outputs=["data/refresh"], enabled=is_refresh, cacheable=False),
        Stage("mix", run_mix, config=["mix", "refresh", "eval.benchmarks", "prepare.dedupe"] + MIX_MODEL, context=["runs_dir"],
              inputs=["data/examples.jsonl", REFRESH_DIFF],
              outputs=SPLITS + [OLD_TEST, "data/mix.json", "data/packed", "ledger/mix"],
              external=mix_files, libraries=MODEL_LIBS, revisions=hub_revisions),
        Stage("ledger", run_ledger, config=[], inputs=[SOURCES_JSON, "ledger/prepare", "ledger/mix"],
              outputs=["ledger.jsonl"]),
        Stage("train", run_train, config=["model", "mix.max_seq_len", "mix.seed", "eval.max_examples"], context=["runs_dir"],
              inputs=["data/packed", "data/train.jsonl", "data/val.jsonl"], outputs=["model"],
              external=model_files, keep=["model/openai_job.json"], scratch=["checkpoints"],
              libraries=TRAIN_LIBS, revisions=hub_revisions),
        Stage("evaluate", run_evaluate, config=["eval", "model", "template", "mix.max_seq_len", "mix.packing"],
              context=["runs_dir", "registry.path"], inputs=["model"] + SPLITS + [OLD_TEST], outputs=["eval"],
              external=evaluate_files,
              libraries=EVAL_LIBS, revisions=hub_revisions),
        Stage("decide", run_decide, config=["refresh"], inputs=["eval", REFRESH_DIFF],
              outputs=["decision.json"], enabled=is_refresh, cacheable=False),
        Stage("report", run_report, config=["name"], whole_config=True,
              inputs=["stats", "eval", "ledger.jsonl", "data/mix.json", "decision.json"],
              outputs=["report.html", "metrics.json"], cacheable=False),
        Stage("register", run_register, config=["registry", "name"], inputs=["model", "metrics.json"],
              outputs=["registered.json"], enabled=lambda cfg: cfg.registry.auto_register, cacheable=False),
        Stage("promote", run_promote, config=["refresh", "registry"], inputs=["model", "metrics.json", "decision.json"],
              outputs=["promotion.json"], enabled=is_refresh, cacheable=False),
    ]
