"""A sweep's summary (`webtune run -m`): every point, ranked, as a table, summary.json and summary.html;
`SweepSummary` is the Hydra callback that writes it when the multirun ends, and `webtune sweep-summary
DIR --by METRIC` ranks a finished sweep again.

A point that failed (its run wrote `failed.json`, see commands.cmd_run) is listed with its error and
ranked after every finished point; a point with neither metrics nor an error is unfinished (killed, or
still running). By default the points rank by the gate (passed, then inconclusive, unverified and
flagged), then by domain loss gain, then by the smallest general loss change: the run's own verdict
first, not one loss alone. `--by` names any other measure (a column below, or a dotted path into
metrics.json); the other measures stay beside it.
"""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

from ..errors import WebtuneError
from ..fileio import atomic_write_text, read_json, write_json
from . import svg
from .html import render as render_html
from .stage import dig, read_overrides

FAILED = "failed.json"   # written into a point's run directory when its run raised
GATE_ORDER = {"passed": 0, "inconclusive": 1, "unverified": 2, "flagged": 3}
# The measures every summary shows: name -> (path in metrics.json, higher is better)
MEASURES = {
    "domain_gain": ("eval.domain_gain", True),
    "domain_loss": ("eval.tuned.domain.loss", False),
    "general_change": ("eval.general_change", False),
    "chrF": ("eval.tuned.generation.chrF", True),
    "rougeL": ("eval.tuned.generation.rougeL", True),
    "judge_win_rate": ("eval.judge.win_rate", True),
    "train_seconds": ("train.seconds", False),
}
LOWER_IS_BETTER = ("loss", "perplexity", "seconds", "change", "regression", "flag")


class SweepSummary(Callback):
    def __init__(self, rank_by: str = "gate", higher_is_better: bool | None = None) -> None:
        self.rank_by, self.higher_is_better = rank_by, higher_is_better

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.exists():
            sweep_summary(sweep_dir, self.rank_by, self.higher_is_better)


def sweep_summary_command(ns) -> int:
    """`webtune sweep-summary SWEEP_DIR [--by METRIC] [--higher-is-better | --lower-is-better]`."""
    sweep_dir = Path(ns.sweep_dir)
    if not sweep_dir.is_dir():
        raise WebtuneError(f"{sweep_dir}: no such sweep directory (runs/sweeps/<timestamp>/)")
    sweep_summary(sweep_dir, ns.by, ns.higher_is_better)
    return 0


def record_failure(run_dir: Path, exc: BaseException, stage: str | None) -> None:
    """Mark a sweep point as failed (its error in one line and the stage it stopped in), so the
    summary lists it and the sweep goes on with the next point."""
    from ..errors import one_line
    write_json(run_dir / FAILED, {"error": one_line(exc), "stage": stage, "type": type(exc).__name__})


def metric_of(rank_by: str, higher_is_better: bool | None) -> tuple[str | None, bool]:
    """(dotted path in metrics.json or None for the gate, higher is better) for a `--by` name."""
    if rank_by == "gate":
        return None, True
    path, higher = MEASURES.get(rank_by, (rank_by, None))
    if higher is None:
        higher = not any(word in rank_by.lower() for word in LOWER_IS_BETTER)
    return path, higher if higher_is_better is None else higher_is_better


def gate_of(ev: dict) -> str | None:
    """The run's gate verdict: passed | inconclusive | unverified | flagged (the gate failed)."""
    status = ev.get("status") or {True: "passed", False: "failed"}.get(ev.get("passed"))
    return "flagged" if status == "failed" else status


def run_row(run: Path, path: str | None) -> dict:
    m = read_json(run / "metrics.json") or {}
    ev = m.get("eval") or {}
    failed = read_json(run / FAILED) if failed_since_finished(run) else None
    row = {"run": run.name, "job": run.name.split("_", 1)[0], "path": str(run),
           "overrides": read_overrides(run), "settings": settings(read_overrides(run)), "gate": gate_of(ev), "flags": ev.get("flags", []),
           "finished": (run / "metrics.json").exists() and not failed,
           "error": failed.get("error") if failed else None, "failed_stage": failed.get("stage") if failed else None,
           "report": (run / "report.html").exists()}
    row.update({name: dig(m, p) for name, (p, _) in MEASURES.items()})
    row["metric"] = dig(m, path) if path else None
    row["status"] = "failed" if failed else row["gate"] if row["finished"] else "unfinished"
    return row


def failed_since_finished(run: Path) -> bool:
    """A failure marker counts unless `webtune resume` finished the point after it."""
    marker, metrics = run / FAILED, run / "metrics.json"
    return marker.exists() and (not metrics.exists() or marker.stat().st_mtime_ns > metrics.stat().st_mtime_ns)


def rank(rows: list[dict], path: str | None, higher: bool) -> None:
    """Sort in place and number the ranked rows; failed and unfinished points are listed last, unranked."""
    def key(r):
        done = r["finished"] and (path is None or r["metric"] is not None)
        if path is None:
            gain, change = r["domain_gain"], r["general_change"]
            order = (GATE_ORDER.get(r["gate"], 4), -gain if gain is not None else float("inf"),
                     change if change is not None else float("inf"))
        else:
            order = ((-1 if higher else 1) * r["metric"] if r["metric"] is not None else 0,
                     GATE_ORDER.get(r["gate"], 4))
        return (not done, r["status"] == "failed", order if done else (), r["job"].zfill(6))
    rows.sort(key=key)
    n = 0
    for r in rows:
        ranked = r["finished"] and (path is None or r["metric"] is not None)
        n += ranked
        r["rank"] = n if ranked else None


def sweep_summary(sweep_dir: Path, rank_by: str = "gate", higher_is_better: bool | None = None) -> list[dict]:
    """Rank a sweep's points (see the module docstring), print the table and write summary.json and
    summary.html in the sweep directory."""
    sweep_dir = Path(sweep_dir)
    path, higher = metric_of(rank_by, higher_is_better)
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and any(
        (p / f).exists() for f in ("metrics.json", "config.yaml", FAILED, ".hydra")))
    rows = [run_row(r, path) for r in runs]
    rank(rows, path, higher)
    by = "the gate, then domain gain" if path is None else f"{rank_by} ({'higher' if higher else 'lower'} is better)"
    print_table(sweep_dir, rows, by, rank_by if path and rank_by not in MEASURES else None)
    best = rows[0] if rows and rows[0]["rank"] else None
    chart_metric = "domain_gain" if path is None else "metric"
    html = render_html(
        "sweep.html.j2", sweep=str(sweep_dir), rank_by=rank_by, by=by, rows=rows, best=best, keys=swept_keys(rows),
        extra=rank_by if path and rank_by not in MEASURES else None,
        failed=[r for r in rows if r["status"] == "failed"],
        chart=svg.bar_chart({f"#{r['job']}": r[chart_metric] for r in rows if r[chart_metric] is not None},
                            fmt="{:.4f}", label_w=60))
    atomic_write_text(sweep_dir / "summary.html", html)
    write_json(sweep_dir / "summary.json", rows)
    return rows


def swept_keys(rows: list[dict]) -> list[str]:
    """The keys the points set (`model.train.learning_rate`), in the order first seen: one column
    each, so a long key is a header once and each cell holds only its value."""
    keys = []
    for r in rows:
        for key in r["settings"]:
            if key not in keys:
                keys.append(key)
    return keys


def settings(overrides: list[str]) -> dict[str, str]:
    """`key=value` overrides as a dict (Hydra's `+key=v`, `~key` keep their sign in the key)."""
    return dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)


def print_table(sweep_dir: Path, rows: list[dict], by: str, extra: str | None) -> None:
    """The terminal table: a column per swept key, folded (never cut) whatever the width."""
    from rich.console import Console
    from rich.table import Table
    keys = swept_keys(rows)
    table = Table(title=f"sweep {sweep_dir.name}: {len(rows)} points, ranked by {by}", show_lines=True)
    table.add_column("rank", justify="right")
    table.add_column("#", justify="right")
    for key in keys:
        table.add_column(key, overflow="fold")
    table.add_column("status", overflow="fold", min_width=10)
    for col in ([extra] if extra else []) + ["domain gain", "general change", "chrF"]:
        table.add_column(col, justify="right", overflow="fold")
    for r in rows:
        status = r["status"] + (f" in {r['failed_stage']}: {r['error']}" if r["error"] else "")
        values = ([fmt(r["metric"])] if extra else []) + [fmt(r["domain_gain"], signed=True),
                                                          fmt(r["general_change"], signed=True), fmt(r["chrF"])]
        table.add_row(str(r["rank"] or "—"), r["job"], *(r["settings"].get(k, "—") for k in keys), status, *values)
    Console(stderr=True).print(table)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        Console(stderr=True).print(f"[red]{len(failed)} of {len(rows)} points failed[/red]: "
                                   + "; ".join(f"#{r['job']} in {r['path']}/run.log" for r in failed), soft_wrap=True)


def fmt(v, signed: bool = False) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:+.4f}" if signed else f"{v:.4f}"
    return str(v)
