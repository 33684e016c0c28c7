"""The report stage: RUN/metrics.json and a self-contained RUN/report.html (inline SVG, no CDN).

It reads the run directory only, so a report can be rebuilt from it; `sweep` and `compare` read runs
through the helpers here (`dig`, `read_overrides`, `headline`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from ..fileio import atomic_write_text, read_json, read_jsonl, write_json
from . import svg
from .html import render as render_html
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


def read_rows(path: Path) -> list[dict]:
    """A JSONL file of the run's, or no rows when that stage has not written it yet."""
    return read_jsonl(path) if path.exists() else []


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
    return render_html(
        "report.html.j2", name=cfg.name, run_dir=str(run_dir),
        ev=ev or None, headline=headline(ev, cfg.eval.max_general_regression), ledger=metrics["ledger"], reasons=reasons,
        totals=totals, mix=mix, train=train, timings=metrics["timings"], overrides=read_overrides(run_dir),
        config_text=config_text, model=cfg.model.name_or_path, model_kind=cfg.model.kind, method=cfg.model.method,
        template=cfg.template.name, max_regression=cfg.eval.max_general_regression, min_gain=cfg.eval.min_domain_gain,
        samples=read_rows(run_dir / "eval/samples.jsonl"), length_stats=length_stats,
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


def dig(obj, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj
