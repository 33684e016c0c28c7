"""The report stage: RUN/metrics.json and a self-contained RUN/report.html (inline SVG, no CDN).

Also the sweep summary (`sweep_summary`, ranks a sweep's runs) and `compare` (two or more runs side
by side). Everything here reads the run directory only, so a report can be rebuilt from it.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2
import numpy as np
import orjson

from .. import __version__
from ..errors import WebtuneError
from ..fileio import atomic_write_text, read_json, write_json
from . import svg

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("webtune.evaluate", "."),
                               autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined)
TEMPLATES.filters["pct"] = lambda v, digits=0: "—" if v is None else f"{100 * v:.{digits}f}%"
TEMPLATES.filters["num"] = lambda v, digits=3: "—" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}")
TEMPLATES.filters["signed"] = lambda v, digits=3: "—" if v is None else f"{v:+.{digits}f}"
REPORT_SECTIONS = ["summary", "data", "mix", "training", "evaluation", "samples", "judge", "reproduce"]


# ---------------------------------------------------------------- one run
def collect(run_dir: Path) -> dict:
    """Every stage's stats and the evaluation, as RUN/metrics.json holds them."""
    stats = {p.stem: read_json(p) for p in sorted((run_dir / "stats").glob("*.json"))}
    ev = read_json(run_dir / "eval/metrics.json") or {}
    ledger = stats.get("ledger") or {"sources": {}, "reasons": []}
    return {"summary": " ".join(headline(ev)), "ledger": ledger, "prepare": stats.get("prepare", {}),
            "mix": stats.get("mix", {}), "train": stats.get("train", {}), "eval": ev,
            "timings": {k: seconds(v) for k, v in stats.items() if isinstance(v, dict) and seconds(v) is not None}}


def seconds(stats: dict) -> float | None:
    s = stats.get("seconds")
    if isinstance(s, dict):
        s = s.get("total")
    return float(s) if isinstance(s, (int, float)) else None


def headline(ev: dict, max_regression: float | None = None) -> list[str]:
    """The sentences a person reads first: domain gain, how general loss moved, the judge."""
    out = []
    if not ev:
        return ["Not evaluated yet."]
    b, t = ev.get("base", {}), ev.get("tuned", {})
    if ev.get("domain_gain") is not None:
        bd, td = b["domain"], t["domain"]
        verb = "beats" if ev["domain_gain"] > 0 else "does not beat"
        out.append(f"The tuned model {verb} the base on domain test loss: {bd['loss']:.3f} → {td['loss']:.3f} "
                   f"({ev['domain_gain']:+.3f} nats gain; perplexity {bd['perplexity']:,.1f} → {td['perplexity']:,.1f}).")
    elif not ev.get("loss_available", True):
        out.append("Held-out loss is not available for a model tuned through the OpenAI API (it returns no "
                   "log-probabilities of a given answer); the generation metrics and the judge compare base and tuned.")
    if ev.get("general_change") is not None:
        bg, tg, change = b["general"], t["general"], ev["general_change"]
        moved = "rose" if change > 0 else "fell" if change < 0 else "did not move"
        ppl = 100 * (tg["perplexity"] / bg["perplexity"] - 1) if bg["perplexity"] else 0.0
        limit = f", {'above' if change > max_regression else 'within'} the {max_regression} threshold" \
            if max_regression is not None else ""
        out.append(f"General test loss {moved} by {abs(change):.3f} nats ({bg['loss']:.3f} → {tg['loss']:.3f}, "
                   f"perplexity {ppl:+.0f}%){limit}.")
    gb, gt = b.get("generation") or {}, t.get("generation") or {}
    if gt:
        out.append(f"Generations: chrF {gb.get('chrF')} → {gt.get('chrF')}, ROUGE-L {gb.get('rougeL')} → {gt.get('rougeL')}.")
    if ev.get("judge"):
        j = ev["judge"]
        out.append(f"The judge preferred the tuned answer in {100 * j['win_rate']:.0f}% of {j['pairs']} pairs "
                   f"(95% CI {100 * j['ci_low']:.0f}–{100 * j['ci_high']:.0f}%).")
    return out


def run(cfg, run_dir: Path) -> dict:
    metrics = collect(run_dir)
    metrics["name"] = cfg.name
    write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "report.html", render(cfg, run_dir, metrics))
    return {"summary": metrics["summary"]}


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()] if path.exists() else []


def example_lengths(run_dir: Path) -> dict[str, list[int]]:
    """Token lengths of the training examples, domain and general apart (packed order = mix.json order)."""
    packed = run_dir / "data/packed/train.npz"
    if not packed.exists():
        return {}
    lengths = np.diff(np.load(packed)["offsets"]).tolist()
    ids = (read_json(run_dir / "data/mix.json") or {}).get("splits", {}).get("train", [])
    if len(ids) != len(lengths):
        return {"train": lengths}
    side = {}
    for line in (run_dir / "data/examples.jsonl").open("rb") if (run_dir / "data/examples.jsonl").exists() else []:
        ex = orjson.loads(line)
        side[ex["id"]] = ex.get("side", "domain")
    groups: dict[str, list[int]] = {}
    for i, n in zip(ids, lengths):   # an oversampled copy is `<example id>+<n>`
        groups.setdefault(side.get(i) or side.get(i.rsplit("+", 1)[0], "domain"), []).append(n)
    return groups


def reason_examples(run_dir: Path, limit: int = 200_000) -> dict[tuple, dict]:
    """The first rejected record per (source, stage, reason), so the report can show one."""
    found: dict[tuple, dict] = {}
    path = run_dir / "ledger.jsonl"
    if not path.exists():
        return found
    with open(path, "rb") as fh:
        for n, line in enumerate(fh):
            if n >= limit:
                break
            ev = orjson.loads(line)
            if ev.get("status") == "rejected":
                found.setdefault((ev["source"], ev["stage"], ev["reason"]), ev)
    return found


def read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra/overrides.yaml"
    if not path.exists():
        return []
    import yaml
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def render(cfg, run_dir: Path, metrics: dict) -> str:
    ev, train, mix = metrics["eval"] or {}, metrics["train"], metrics["mix"]
    curve = train.get("loss_curve", [])
    loss_chart = svg.line_chart({"train loss": [(c["step"], c["loss"]) for c in curve if "loss" in c],
                                 "validation loss": [(c["step"], c["eval_loss"]) for c in curve if "eval_loss" in c]})
    sources = metrics["ledger"].get("sources", {})
    totals = {k: sum(c[k] for c in sources.values()) for k in ("in", "kept", "rejected")}
    examples = reason_examples(run_dir)
    reasons = [{**r, "example": examples.get((r["source"], r["stage"], r["reason"]))}
               for r in metrics["ledger"].get("reasons", [])]
    lengths = example_lengths(run_dir)
    length_stats = {k: {"n": len(v), "mean": float(np.mean(v)), "median": float(np.median(v)),
                        "p95": float(np.percentile(v, 95)), "max": max(v)} for k, v in lengths.items() if v}
    config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    judge = ev.get("judge")
    return TEMPLATES.get_template("report.html.j2").render(
        name=cfg.name, run_dir=str(run_dir), created=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=__version__,
        ev=ev or None, headline=headline(ev, cfg.eval.max_general_regression), ledger=metrics["ledger"], reasons=reasons,
        totals=totals, mix=mix, train=train, timings=metrics["timings"], overrides=read_overrides(run_dir),
        config_text=config_text, model=cfg.model.name_or_path, model_kind=cfg.model.kind, method=cfg.model.method,
        template=cfg.template.name, max_regression=cfg.eval.max_general_regression, min_gain=cfg.eval.min_domain_gain,
        samples=read_jsonl(run_dir / "eval/samples.jsonl"), length_stats=length_stats,
        sources_chart=svg.stacked_bars({s: {"kept": c["kept"], "rejected": c["rejected"]} for s, c in sources.items()},
                                       {"kept": "#16a34a", "rejected": "#dc2626"}),
        reasons_chart=svg.bar_chart({f"{r['source']} · {r['reason']}": r["count"] for r in reasons}, color="#f87171"),
        mix_chart=mix_chart(mix), length_hist=svg.histogram(lengths), loss_chart=loss_chart,
        timing_chart=svg.bar_chart(metrics["timings"], fmt="{:.1f} s", color="#a78bfa"),
        loss_bars=svg.grouped_bars({f"{split} test loss": {m: dig(ev, f"{m}.{split}.loss") for m in ("base", "tuned")}
                                    for split in ("domain", "general")}, unit=" nats"),
        judge_chart=svg.interval(judge["win_rate"], judge["ci_low"], judge["ci_high"]) if judge else "",
        sections=REPORT_SECTIONS)


def mix_chart(mix: dict) -> str:
    m = mix.get("mix") or {}
    if not m:
        return ""
    return svg.stacked_bars({"target": {"domain": 1 - m["target_general_share"], "general": m["target_general_share"]},
                             "realised": {"domain": 1 - m["realised_general_share"], "general": m["realised_general_share"]}},
                            {"domain": "#2563eb", "general": "#f59e0b"})


# ---------------------------------------------------------------- many runs
def dig(obj, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


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
    html = TEMPLATES.get_template("sweep.html.j2").render(
        sweep=str(sweep_dir), metric=metric, higher_is_better=higher_is_better, rows=rows, best=best,
        created=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=__version__,
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
    samples = [read_jsonl(r / "eval/samples.jsonl") for r in runs]
    shared = []
    for i, first in enumerate(samples[0]):
        answers = [s[i]["tuned"] if i < len(s) and s[i]["prompt"] == first["prompt"] else None for s in samples]
        if all(a is not None for a in answers):
            shared.append({"prompt": first["prompt"][-1]["content"], "reference": first["reference"], "answers": answers})
    html = TEMPLATES.get_template("compare.html.j2").render(
        names=names, runs=[str(r) for r in runs], rows=rows, config_diff=config_diff, samples=shared,
        headlines=[" ".join(headline(m.get("eval") or {})) for m in metrics],
        passed=[dig(m, "eval.passed") for m in metrics], curves=svg.line_chart(curves),
        created=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=__version__)
    atomic_write_text(Path(out), html)
    return {"names": names, "rows": rows, "config_diff": config_diff, "samples": len(shared)}


def unique_names(runs: list[Path]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.parent.name}/{r.name}" for r in runs]
    return names
