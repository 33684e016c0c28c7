"""A sweep's summary (`webtune run -m`): its runs ranked by a metric, as a table, summary.json and
summary.html; `SweepSummary` is the Hydra callback that writes it when the multirun ends."""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

from ..fileio import atomic_write_text, read_json, write_json
from . import svg
from .html import render as render_html
from .stage import dig, read_overrides


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.exists():
            sweep_summary(sweep_dir)


def run_row(run: Path, metric: str) -> dict:
    m = read_json(run / "metrics.json") or {}
    ev = m.get("eval") or {}
    return {"run": run.name, "path": str(run), "overrides": " ".join(read_overrides(run)),
            "metric": dig(m, metric), "passed": ev.get("passed"), "flags": ev.get("flags", []),
            "domain_loss": dig(ev, "tuned.domain.loss"), "domain_gain": ev.get("domain_gain"),
            "general_change": ev.get("general_change"), "chrF": dig(ev, "tuned.generation.chrF"),
            "rougeL": dig(ev, "tuned.generation.rougeL"), "judge_win_rate": dig(ev, "judge.win_rate"),
            "train_seconds": dig(m, "train.seconds"), "finished": (run / "metrics.json").exists()}


def sweep_summary(sweep_dir: Path, metric: str = "eval.tuned.domain.loss", higher_is_better: bool = False) -> list[dict]:
    """Rank a sweep's runs by a metric (default: tuned domain loss, lower is better). Runs that
    fail the eval thresholds rank after those that pass; unfinished runs come last. Prints a table
    and writes summary.json and summary.html in the sweep directory."""
    from rich.console import Console
    from rich.table import Table
    sweep_dir = Path(sweep_dir)
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and ((p / "metrics.json").exists() or (p / "config.yaml").exists()))
    rows = [run_row(r, metric) for r in runs]
    sign = -1 if higher_is_better else 1
    rows.sort(key=lambda r: (r["metric"] is None, r["passed"] is False, sign * (r["metric"] or 0), r["general_change"] or 0))
    for i, r in enumerate(rows, 1):
        r["rank"] = i if r["metric"] is not None else None
    table = Table(title=f"sweep {sweep_dir.name}: ranked by {metric} ({'higher' if higher_is_better else 'lower'} is better)")
    for col in ("rank", "run", "overrides", metric, "general change", "passed"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["rank"] or "—"), r["run"], r["overrides"], fmt(r["metric"]), fmt(r["general_change"], signed=True),
                      {True: "yes", False: "FLAGGED", None: "unfinished"}[r["passed"]])
    Console(stderr=True).print(table)
    best = rows[0] if rows and rows[0]["rank"] else None
    html = render_html(
        "sweep.html.j2", sweep=str(sweep_dir), metric=metric, higher_is_better=higher_is_better, rows=rows, best=best,
        chart=svg.bar_chart({r["run"]: r["metric"] for r in rows if r["metric"] is not None}, fmt="{:.4f}", label_w=320))
    atomic_write_text(sweep_dir / "summary.html", html)
    write_json(sweep_dir / "summary.json", rows)
    return rows


def fmt(v, signed: bool = False) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:+.4f}" if signed else f"{v:.4f}"
    return str(v)
