"""`webtune compare RUN RUN...`: runs side by side in one HTML page: metrics with the better value
marked, the config keys that differ, loss curves overlaid, the same test prompts answered by each."""
from __future__ import annotations

from pathlib import Path

from ..errors import WebtuneError
from ..fileio import atomic_write_text, read_json
from . import svg
from .html import render as render_html
from .stage import dig, headline, read_rows


def flat_config(run: Path) -> dict[str, str]:
    import yaml
    path = run / "config.yaml"
    out: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = repr(node) if isinstance(node, str) else str(node)
    config = yaml.safe_load(path.read_text()) or {} if path.exists() else {}
    ran_with = (read_json(run / "eval/metrics.json") or {}).get("settings")
    if ran_with:   # `webtune eval RUN k=v` evaluates with settings config.yaml does not hold
        config["eval"] = ran_with
    walk(config, "")
    return out


COMPARED = [  # (label, path in metrics.json, lower is better)
    ("domain loss (tuned)", "eval.tuned.domain.loss", True), ("domain perplexity (tuned)", "eval.tuned.domain.perplexity", True),
    ("domain gain over base", "eval.domain_gain", False), ("general loss (tuned)", "eval.tuned.general.loss", True),
    ("general change vs base", "eval.general_change", True), ("ROUGE-L", "eval.tuned.generation.rougeL", False),
    ("chrF", "eval.tuned.generation.chrF", False), ("BLEU", "eval.tuned.generation.BLEU", False),
    ("mean words", "eval.tuned.generation.mean_words", None), ("judge win rate", "eval.judge.win_rate", False),
    ("training examples", "mix.examples.train", None), ("realised general share", "mix.mix.realised_general_share", None),
    ("packing efficiency", "mix.packing.train.efficiency", False), ("training steps", "train.steps", None),
    ("final train loss", "train.train_loss", True), ("final validation loss", "train.eval_loss", True),
]


def compare(runs: list[Path], out: Path) -> dict:
    """Two or more runs side by side: metrics with the better value marked, the config keys that
    differ, loss curves overlaid, and the same test prompts answered by each tuned model."""
    runs = [Path(r) for r in runs]
    metrics = []
    for run in runs:
        m = read_json(run / "metrics.json")
        if m is None:
            raise WebtuneError(f"{run}/metrics.json not found: is {run} a finished webtune run? "
                               f"(finish it with `webtune resume {run}`)")
        metrics.append(m)
    names = unique_names(runs)
    rows = []
    for label, path, lower in COMPARED:
        values = [dig(m, path) for m in metrics]
        if all(v is None for v in values):
            continue
        numeric = [v for v in values if isinstance(v, (int, float))]
        best = None
        if lower is not None and len(numeric) == len(values) and len(set(numeric)) > 1:
            best = values.index(min(numeric) if lower else max(numeric))
        rows.append({"label": label, "values": values, "best": best,
                     "delta": values[-1] - values[0] if len(numeric) == len(values) == 2 else None})
    configs = [flat_config(r) for r in runs]
    keys = sorted(k for k in set().union(*configs) if len({c.get(k) for c in configs}) > 1
                  and not k.startswith(("runs_dir", "hydra.")))
    config_diff = [{"key": k, "values": [c.get(k, "—") for c in configs]} for k in keys]
    curves = {}
    for n, m in zip(names, metrics):
        pts = dig(m, "train.loss_curve") or []
        curves[f"{n} train"] = [(c["step"], c["loss"]) for c in pts if "loss" in c]
        curves[f"{n} val"] = [(c["step"], c["eval_loss"]) for c in pts if "eval_loss" in c]
    samples = [read_rows(r / "eval/samples.jsonl") for r in runs]
    shared = []
    for i, first in enumerate(samples[0]):
        answers = [s[i]["tuned"] if i < len(s) and s[i]["prompt"] == first["prompt"] else None for s in samples]
        if all(a is not None for a in answers):
            shared.append({"prompt": first["prompt"][-1]["content"], "reference": first["reference"], "answers": answers})
    html = render_html(
        "compare.html.j2", names=names, runs=[str(r) for r in runs], rows=rows, config_diff=config_diff, samples=shared,
        headlines=[" ".join(headline(m.get("eval") or {})) for m in metrics],
        passed=[dig(m, "eval.passed") for m in metrics], curves=svg.line_chart(curves))
    atomic_write_text(Path(out), html)
    return {"names": names, "rows": rows, "config_diff": config_diff, "samples": len(shared)}


def unique_names(runs: list[Path]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.parent.name}/{r.name}" for r in runs]
    return names
