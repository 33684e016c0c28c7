"""A run's tuned model against another model on the same held-out items: the paired evidence, as a
function for orchestration (a candidate against the promoted version, or any model folder or run)."""
from __future__ import annotations

from pathlib import Path

from .errors import WebtuneError
from .evaluate import evidence as ev_
from .evaluate import stage


def compare(run_dir: Path, other: str | Path, sets: dict[str, Path] | None = None, cfg=None,
            console=None) -> dict:
    """RUN/model ("candidate") against `other` ("other": a model folder, a run directory, or a registry
    NAME whose promoted version is taken, from cfg.registry.path) on held-out sets {name: JSONL of
    {"messages"}} (default: the run's domain and general test sets). Each set is sampled as evaluate
    samples it (eval.max_examples, eval.seed) and scored on held-out loss; every set but "general" also
    on its first eval.generation_examples generations (chrF, ROUGE-L, checks, grounding). Scores are
    cached as evaluate caches them, so a model evaluate scored is not scored again.

    Returns {"candidate", "other": model folders, "n": {set: items}, "n_generated", "comparisons":
    {measure: paired comparison, candidate minus other}, "worse": [measures significantly worse],
    "better": [...], "worse_items": {measure: [prompt ids]}}."""
    from .hydra_setup import load_run_config
    run_dir = Path(run_dir)
    cfg = cfg if cfg is not None else load_run_config(run_dir)
    e = cfg.eval
    sets = sets or {"domain": run_dir / "data/test.jsonl", "general": run_dir / "data/general_test.jsonl"}
    held_out = {name: ev_.sample(stage.read_test(Path(path), required=name != "general"), e.max_examples, e.seed)
                for name, path in sets.items()}
    prompts = [c for name, convs in held_out.items() if name != "general" for c in convs[:max(0, e.generation_examples)]]
    models = {"other": model_folder(cfg, other), "candidate": str(run_dir / "model")}
    results, outputs = stage.run_local(cfg, run_dir, models, held_out, prompts, console=console)
    prompts = prompts[: min(map(len, outputs.values()))]
    checks_of, ground = stage.task_checks(cfg, run_dir), stage.grounding_checker(run_dir)
    items = {label: ev_.item_scores(results[label], prompts, outputs[label], checks_of, ground) for label in results}
    comparisons = ev_.comparisons(items["other"], items["candidate"], e.seed, e.resamples, "other", "candidate",
                                  e.get("margins"))
    return {"candidate": models["candidate"], "other": models["other"],
            "n": {name: len(convs) for name, convs in held_out.items()}, "n_generated": len(prompts),
            "comparisons": comparisons,
            "worse": [m for m, c in comparisons.items() if c["significant"] == "worse"],
            "better": [m for m, c in comparisons.items() if c["significant"] == "better"],
            "worse_items": {m: c["worse_items"] for m, c in comparisons.items() if c["worse_items"]}}


def model_folder(cfg, other: str | Path) -> str:
    """A model folder from a folder, a run directory (its model/) or a registry NAME (the promoted version)."""
    path = Path(other)
    if (path / "model").is_dir():
        return str(path / "model")
    if path.is_dir():
        return str(path)
    if "/" in str(other):
        raise WebtuneError(f"compare: {other} is neither a model folder, a run directory nor a registry name")
    from .deploy.registry import promoted_model_folder
    return promoted_model_folder(cfg.registry.path, str(other), "compare")
