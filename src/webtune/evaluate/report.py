"""The report stage: metrics.json and a self-contained report.html (inline SVG, no CDN)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2
import numpy as np

from .. import __version__
from ..rundir import atomic_write_text, read_json, write_json
from .svg import histogram, line_chart

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("webtune.evaluate", "."),
                               autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined)


def collect(run_dir: Path) -> dict:
    stats = {p.stem: read_json(p) for p in sorted((run_dir / "stats").glob("*.json"))}
    ev = read_json(run_dir / "eval/metrics.json")
    ledger = stats.get("ledger") or {"sources": {}, "reasons": []}
    summary = ""
    if ev and "base" in ev:
        summary = (f"domain loss {ev['base']['domain']['loss']:.3f} -> {ev['tuned']['domain']['loss']:.3f}, "
                   f"general loss {ev['base']['general']['loss']:.3f} -> {ev['tuned']['general']['loss']:.3f}")
    return {"summary": summary, "ledger": ledger, "prepare": stats.get("prepare", {}), "mix": stats.get("mix", {}),
            "train": stats.get("train", {}), "eval": ev or {},
            "timings": {k: v.get("seconds", 0) for k, v in stats.items() if isinstance(v, dict)}}


def run(cfg, run_dir: Path) -> dict:
    metrics = collect(run_dir)
    metrics["name"] = cfg.name
    write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "report.html", render(cfg, run_dir, metrics))
    return {"summary": metrics["summary"]}


def render(cfg, run_dir: Path, metrics: dict) -> str:
    train = metrics["train"]
    curve = train.get("loss_curve", [])
    chart = line_chart({"train loss": [(c["step"], c["loss"]) for c in curve if "loss" in c],
                        "validation loss": [(c["step"], c["eval_loss"]) for c in curve if "eval_loss" in c]})
    lengths = []
    packed = run_dir / "data/packed/train.npz"
    if packed.exists():
        lengths = np.diff(np.load(packed)["offsets"]).tolist()
    samples = []
    if (run_dir / "eval/samples.jsonl").exists():
        import orjson
        samples = [orjson.loads(line) for line in (run_dir / "eval/samples.jsonl").read_bytes().splitlines()]
    totals = {k: sum(c[k] for c in metrics["ledger"]["sources"].values()) for k in ("in", "kept", "rejected")}
    hydra_overrides = run_dir / ".hydra/overrides.yaml"
    overrides = []
    if hydra_overrides.exists():
        import yaml
        overrides = yaml.safe_load(hydra_overrides.read_text()) or []
    return TEMPLATES.get_template("report.html.j2").render(
        name=cfg.name, run_dir=str(run_dir), created=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=__version__,
        ev=metrics["eval"] or None, ledger=metrics["ledger"], mix=metrics["mix"], train=train, totals=totals,
        loss_chart=chart, length_hist=histogram(lengths), samples=samples, overrides=overrides,
        model=cfg.model.name_or_path, template=cfg.template.name, timings=metrics["timings"],
        max_regression=cfg.eval.max_general_regression)


def sweep_summary(sweep_dir: Path, metric: str = "eval.tuned.domain.loss") -> list[dict]:
    """Rank a sweep's runs by a metric (lower is better); print a table and write summary.html."""
    from rich.console import Console
    from rich.table import Table
    rows = []
    for run in sorted(p for p in sweep_dir.iterdir() if (p / "metrics.json").exists()):
        m = read_json(run / "metrics.json")
        value = m
        for part in metric.split("."):
            value = value.get(part, {}) if isinstance(value, dict) else {}
        overrides = []
        if (run / ".hydra/overrides.yaml").exists():
            import yaml
            overrides = yaml.safe_load((run / ".hydra/overrides.yaml").read_text()) or []
        rows.append({"run": run.name, "overrides": " ".join(overrides), metric: value if value != {} else None,
                     "general_change": m.get("eval", {}).get("general_change")})
    rows.sort(key=lambda r: (r[metric] is None, r[metric]))
    table = Table(title=f"sweep {sweep_dir} ranked by {metric}")
    for col in ("rank", "run", "overrides", metric, "general_change"):
        table.add_column(col)
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), r["run"], r["overrides"], str(r[metric]), str(r["general_change"]))
    Console(stderr=True).print(table)
    html = ["<!doctype html><meta charset='utf-8'><title>sweep summary</title><h1>Sweep ", str(sweep_dir),
            "</h1><table border='1' cellpadding='4'><tr><th>rank</th><th>run</th><th>overrides</th>",
            f"<th>{metric}</th><th>general change</th></tr>"]
    for i, r in enumerate(rows, 1):
        html.append(f"<tr><td>{i}</td><td><a href='{r['run']}/report.html'>{r['run']}</a></td><td>{r['overrides']}</td>"
                    f"<td>{r[metric]}</td><td>{r['general_change']}</td></tr>")
    html.append("</table>")
    atomic_write_text(sweep_dir / "summary.html", "".join(html))
    write_json(sweep_dir / "summary.json", rows)
    return rows


def compare(runs: list[Path], out: Path) -> None:
    """A side-by-side comparison of runs' metrics."""
    rows = []
    for run in runs:
        m = read_json(run / "metrics.json")
        if m is None:
            from ..errors import WebtuneError
            raise WebtuneError(f"{run}/metrics.json not found: is {run} a finished run?")
        ev = m.get("eval", {})
        rows.append((run, ev))
    keys = [("domain loss", lambda e: e["tuned"]["domain"]["loss"]), ("general loss", lambda e: e["tuned"]["general"]["loss"]),
            ("domain gain", lambda e: e["domain_gain"]), ("general change", lambda e: e["general_change"]),
            ("ROUGE-L", lambda e: e["tuned"]["generation"].get("rougeL")), ("chrF", lambda e: e["tuned"]["generation"].get("chrF"))]
    html = ["<!doctype html><meta charset='utf-8'><title>webtune compare</title><h1>Comparison</h1><table border='1' cellpadding='4'><tr><th>metric</th>"]
    html += [f"<th>{r.name}</th>" for r, _ in rows] + ["</tr>"]
    for name, get in keys:
        html.append(f"<tr><td>{name}</td>")
        for _, ev in rows:
            try:
                html.append(f"<td>{get(ev)}</td>")
            except (KeyError, TypeError):
                html.append("<td>—</td>")
        html.append("</tr>")
    atomic_write_text(out, "".join(html) + "</table>")
